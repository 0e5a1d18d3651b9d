"""The bundled NumPy backend: TensorFlow's signature, TensorFlow's results, the contract's errors."""

from __future__ import annotations

import numpy as np
import pytest

from impls.numpy_backend import separable_conv2d

tf = pytest.importorskip("tensorflow")
rng = np.random.default_rng(7)


def tensors(shape=(2, 7, 8, 3), m=2, o=5, k=(3, 2), nchw=False, dtype=np.float32):
    x = rng.standard_normal(shape).astype(dtype)
    c = shape[1] if nchw else shape[3]
    return x, rng.standard_normal((*k, c, m)).astype(dtype), rng.standard_normal((1, 1, c * m, o)).astype(dtype)


@pytest.mark.parametrize("strides, padding, dilations", [
    ([1, 1, 1, 1], "SAME", [1, 1]), ([1, 2, 3, 1], "VALID", [1, 1]), ([1, 1, 1, 1], "SAME", [2, 3]),
    ([1, 2, 2, 1], [[0, 0], [2, 0], [0, 1], [0, 0]], [1, 1]),
])
def test_matches_tensorflow_called_directly(strides, padding, dilations):
    x, dw, pw = tensors()
    expected = tf.nn.separable_conv2d(x, dw, pw, strides, padding, dilations=dilations).numpy()
    got = separable_conv2d(x, dw, pw, strides, padding, dilations=dilations)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_nchw_matches_nhwc_transposed():
    x, dw, pw = tensors()
    nhwc = separable_conv2d(x, dw, pw, [1, 2, 1, 1], "SAME")
    nchw = separable_conv2d(x.transpose(0, 3, 1, 2), dw, pw, [1, 1, 2, 1], "SAME", data_format="NCHW")
    np.testing.assert_array_equal(nchw, nhwc.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("kwargs, message", [
    ({"strides": [1, 2, 2, 1], "dilations": [2, 1]}, "all strides must be 1"),
    ({"strides": [2, 1, 1, 1]}, "batch and channel dimensions must be 1"),
    ({"strides": [1, 1, 1, 2]}, "batch and channel dimensions must be 1"),
    ({"padding": [[0, 0], [-1, 0], [0, 0], [0, 0]]}, "must be >= 0"),
    ({"padding": "FULL"}, "padding must be"),
    ({"data_format": "NWHC"}, "data_format must be"),
    ({"strides": [1, 1, 1]}, "strides must have 4 values"),
])
def test_contract_violations_raise_value_error(kwargs, message):
    x, dw, pw = tensors()
    args = {"strides": [1, 1, 1, 1], "padding": "SAME", "data_format": "NHWC", "dilations": [1, 1]} | kwargs
    with pytest.raises(ValueError, match=message):
        separable_conv2d(x, dw, pw, **args)


def test_malformed_filters_raise_value_error():
    x, dw, pw = tensors()
    with pytest.raises(ValueError, match="rank 4"):
        separable_conv2d(x, dw[0], pw, [1, 1, 1, 1], "SAME")
    with pytest.raises(ValueError, match="input channels"):
        separable_conv2d(x[..., :2], dw, pw, [1, 1, 1, 1], "SAME")
    with pytest.raises(ValueError, match="pointwise_filter must have shape"):
        separable_conv2d(x, dw, pw[:, :, :4], [1, 1, 1, 1], "SAME")
    with pytest.raises(ValueError, match="does not fit"):
        separable_conv2d(x[:, :2, :2], dw, pw, [1, 1, 1, 1], "VALID")
