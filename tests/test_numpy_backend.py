"""The bundled NumPy backend: TensorFlow's signature, TensorFlow's results, the contract's errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from conformance.impls.numpy_backend import separable_conv2d

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
    tf = pytest.importorskip("tensorflow")
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
    ({"strides": [1, 0, 1, 1]}, "strides and dilations must be >= 1"),
    ({"strides": [1, 1, -2, 1]}, "strides and dilations must be >= 1"),
    ({"strides": [1, 0, 1, 1], "data_format": "NCHW"}, "batch and channel dimensions must be 1"),
    ({"strides": [0, 1, 1, 1]}, "batch and channel dimensions must be 1"),
    ({"dilations": [0, 1]}, "strides and dilations must be >= 1"),
    ({"dilations": [1, -1]}, "strides and dilations must be >= 1"),
    ({"padding": [[1, 0], [1, 1], [1, 1], [0, 0]]}, "explicit padding of the batch and channel dimensions must be 0"),
    ({"padding": [[0, 0], [1, 1], [1, 1], [0, 1]]}, "explicit padding of the batch and channel dimensions must be 0"),
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


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_padding_of_the_batch_or_channel_dimension_raises_in_either_layout(layout):
    x, dw, pw = tensors(shape=(2, 3, 7, 8) if layout == "NCHW" else (2, 7, 8, 3), nchw=layout == "NCHW")
    batch = [[0, 1], [0, 0], [1, 1], [1, 1]] if layout == "NCHW" else [[0, 1], [1, 1], [1, 1], [0, 0]]
    channel = [[0, 0], [2, 0], [1, 1], [1, 1]] if layout == "NCHW" else [[0, 0], [1, 1], [1, 1], [2, 0]]
    for padding in (batch, channel):
        with pytest.raises(ValueError, match="explicit padding of the batch and channel dimensions must be 0"):
            separable_conv2d(x, dw, pw, [1, 1, 1, 1], padding, data_format=layout)


@pytest.mark.parametrize("k, m, o", [((0, 2), 2, 5), ((3, 0), 2, 5), ((3, 2), 0, 5), ((3, 2), 2, 0)])
def test_empty_filters_raise_value_error(k, m, o):
    x, dw, pw = tensors(k=k, m=m, o=o)
    with pytest.raises(ValueError, match=r"filters must not be empty, got shapes \["):
        separable_conv2d(x, dw, pw, [1, 1, 1, 1], "SAME")


@pytest.mark.parametrize("shape", [(7, 8, 3), (2, 7, 8, 3, 1), (3,)])
def test_an_input_of_another_rank_raises_value_error(shape):
    _, dw, pw = tensors()
    with pytest.raises(ValueError, match=re.escape(f"input must have rank 4, got shape {list(shape)}")):
        separable_conv2d(rng.standard_normal(shape).astype(np.float32), dw, pw, [1, 1, 1, 1], "SAME")


def test_an_input_dtype_other_than_the_filters_raises_value_error():
    x, dw, pw = tensors()
    with pytest.raises(ValueError, match="all tensors must share one dtype, got float64, float32, float32"):
        separable_conv2d(x.astype(np.float64), dw, pw, [1, 1, 1, 1], "SAME")
