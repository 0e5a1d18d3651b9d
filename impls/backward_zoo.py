"""The backward pass's zoo for the selftest: mutants, each with one bug of the kind found in real training
kernels, and correct implementations that compute the gradients another way.

Each entry is a backend whose forward function is the NumPy backend's and whose `backprop` attribute is
the implementation under test; SUPPORTS limits them to backward cases (the forward pass is not theirs to
prove). The arithmetic follows the NumPy backend's separable_conv2d_backprop (compute dtype float32 for
float16/bfloat16, intermediates rounded to the dtype as in TensorFlow's graph, each gradient rounded once)
unless a bug or an alternative says otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from conformance.impls.numpy_backend import _COMPUTE_DTYPE, _check, _padding_and_output, separable_conv2d

SUPPORTS = {"modes": ["backward"]}

BUGS = {
    "remainder_rows_misaligned": "the input gradient, computed for the rows the windows cover, is aligned to the "
                                 "bottom of the input instead of the top when (H + padding - k_eff) % stride != 0",
    "filter_gradient_ignores_dilation": "the depthwise filter gradient reads the input at rate 1 (dilation ignored)",
    "same_split_before": "SAME's odd pixel of padding placed before (top/left) instead of after",
    "no_batch_sum": "the filter gradients sum over the first batch element only",
    "filter_gradient_in_dtype": "float16/bfloat16 filter gradients accumulated in the dtype, one rounded addition "
                                "per output position (N*Ho*Wo of them)",
    "input_gradient_kernel_rotated": "the input gradient uses the depthwise kernel rotated by 180 degrees (a "
                                     "transposed convolution that flips the kernel twice)",
    "overlap_overwritten": "overlapping windows overwrite the input gradient instead of adding to it",
    "padding_ignored_in_input_gradient": "the input gradient is cropped from the padded gradient at (0, 0), not "
                                         "at (top, left)",
    "multiplier_order": "the gradient reaching the intermediate is split into channels as (m, c), not (c, m)",
    "nchw_input_gradient_as_nhwc": "an NCHW input gradient returned as the NHWC buffer, reinterpreted",
    "pointwise_gradient_reshaped": "the pointwise filter gradient formed as [O, C*M] and reshaped, not transposed",
}
ALTERNATIVES = {
    "fp64_then_cast": "every stage in float64, each gradient rounded once (no intermediate rounding)",
    "im2col": "patches gathered into a matrix per tap, gradients as matrix products, scattered back",
    "transposed_conv": "the input gradient as a transposed convolution: the output gradient dilated by the "
                       "stride, padded by k_eff - 1, correlated with the kernel rotated by 180 degrees",
}


def _backprop(input: Any, depthwise_filter: Any, pointwise_filter: Any, output_gradient: Any, strides: Sequence[int],
              padding: Any, data_format: str | None = None, dilations: Sequence[int] | None = None, *,
              variant: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, dw, pw, grad = (np.asarray(a) for a in (input, depthwise_filter, pointwise_filter, output_gradient))
    data_format = data_format or "NHWC"
    dilations = [1, 1] if dilations is None else list(dilations)
    sh, sw, rh, rw = _check(x, dw, pw, list(strides), data_format, dilations)
    dtype, nchw = x.dtype, data_format == "NCHW"
    compute = np.dtype(np.float64 if variant == "fp64_then_cast" else _COMPUTE_DTYPE[dtype.name])
    nhwc = (x.transpose(0, 2, 3, 1) if nchw else x).astype(compute)
    n, h, w, c = nhwc.shape
    kh, kw, _, m = dw.shape
    o = pw.shape[3]
    top, bottom, left, right, out_h, out_w = _padding_and_output(h, w, kh, kw, sh, sw, rh, rw, padding, data_format)
    if variant == "same_split_before" and padding == "SAME":
        top, bottom, left, right = bottom, top, right, left
    g = (np.asarray(grad).transpose(0, 2, 3, 1) if nchw else grad).astype(compute)
    weights, pointwise = dw.astype(compute), pw[0, 0].astype(compute)
    padded = np.pad(nhwc, ((0, 0), (top, bottom), (left, right), (0, 0)))

    def taps(rate_h: int, rate_w: int) -> list[tuple[int, int, slice, slice]]:
        return [(a, b, slice(a * rate_h, a * rate_h + (out_h - 1) * sh + 1, sh),
                 slice(b * rate_w, b * rate_w + (out_w - 1) * sw + 1, sw)) for a in range(kh) for b in range(kw)]

    def rounded(values: np.ndarray) -> np.ndarray:
        return values if variant == "fp64_then_cast" or dtype == compute else values.astype(dtype).astype(compute)

    with np.errstate(invalid="ignore", over="ignore"):
        z = np.zeros((n, out_h, out_w, c, m), dtype=compute)
        for a, b, rows, columns in taps(rh, rw):
            z += padded[:, rows, columns, :, None] * weights[a, b]
        z = rounded(z)
        to_z = rounded(g.reshape(-1, o) @ pointwise.T)
        dz = (to_z.reshape(n, out_h, out_w, m, c).swapaxes(3, 4) if variant == "multiplier_order"
              else to_z.reshape(n, out_h, out_w, c, m))
        batch = slice(0, 1) if variant == "no_batch_sum" else slice(None)
        in_dtype = variant == "filter_gradient_in_dtype" and dtype != compute
        pointwise_gradient = _filter_sum(z[batch].reshape(-1, c * m, 1) * g[batch].reshape(-1, 1, o), dtype, in_dtype)
        if variant == "pointwise_gradient_reshaped":
            pointwise_gradient = pointwise_gradient.T.reshape(c * m, o)
        depthwise_gradient = np.empty(dw.shape, dtype=compute)
        read = (1, 1) if variant == "filter_gradient_ignores_dilation" else (rh, rw)
        for a, b, read_rows, read_columns in taps(*read):  # the taps' windows, as read (the bug: at rate 1)
            window = padded[batch, read_rows, read_columns, :]
            depthwise_gradient[a, b] = _filter_sum(window[..., None] * dz[batch], dtype, in_dtype,
                                                   axes=(0, 1, 2)).reshape(c, m)
        if variant == "transposed_conv":
            padded_gradient = _transposed_conv(dz, weights, padded.shape, (sh, sw), (rh, rw))
        elif variant == "im2col":
            padded_gradient = _col2im(dz, weights, padded.shape, taps(rh, rw))
        else:
            kernel = weights[::-1, ::-1] if variant == "input_gradient_kernel_rotated" else weights
            padded_gradient = np.zeros(padded.shape, dtype=compute)
            for a, b, rows, columns in taps(rh, rw):
                contribution = np.einsum("nijcm,cm->nijc", dz, kernel[a, b])
                if variant == "overlap_overwritten":
                    padded_gradient[:, rows, columns, :] = contribution
                else:
                    padded_gradient[:, rows, columns, :] += contribution
    row, column = (0, 0) if variant == "padding_ignored_in_input_gradient" else (top, left)
    input_gradient = padded_gradient[:, row:row + h, column:column + w, :]
    remainder = (h + top + bottom - ((kh - 1) * rh + 1)) % sh
    if variant == "remainder_rows_misaligned" and remainder:
        input_gradient = np.concatenate([np.zeros_like(input_gradient[:, :remainder]), input_gradient[:, :-remainder]],
                                        axis=1)
    if nchw:
        input_gradient = (np.ascontiguousarray(input_gradient).reshape(n, c, h, w)
                          if variant == "nchw_input_gradient_as_nhwc" else input_gradient.transpose(0, 3, 1, 2))
    return (np.ascontiguousarray(input_gradient).astype(dtype), depthwise_gradient.astype(dtype),
            pointwise_gradient.reshape(1, 1, c * m, o).astype(dtype))


def _filter_sum(products: np.ndarray, dtype: np.dtype, in_dtype: bool, axes: tuple[int, ...] = (0,)) -> np.ndarray:
    """The sum over the output positions (N*Ho*Wo) of a filter gradient's products: in the compute dtype, or
    (the bug) in the operator's dtype, one rounded addition per position in order."""
    if not in_dtype:
        return products.sum(axis=axes)
    flat = products.reshape(-1, *products.shape[len(axes):]).astype(dtype)
    return np.add.accumulate(flat, axis=0, dtype=dtype)[-1].astype(products.dtype)


def _col2im(dz: np.ndarray, weights: np.ndarray, padded_shape: tuple[int, ...],
            taps: list[tuple[int, int, slice, slice]]) -> np.ndarray:
    """im2col's input gradient: the patch matrix's gradient [N*Ho*Wo, taps, C] as one product, then each tap's
    column scattered back into the padded input."""
    n, out_h, out_w, c, m = dz.shape
    kernel = weights.reshape(-1, c, m)  # [taps, C, M]
    columns = np.einsum("pcm,tcm->ptc", dz.reshape(-1, c, m), kernel).reshape(n, out_h, out_w, len(taps), c)
    padded_gradient = np.zeros(padded_shape, dtype=dz.dtype)
    for index, (_, _, rows, cols) in enumerate(taps):
        padded_gradient[:, rows, cols, :] += columns[:, :, :, index]
    return padded_gradient


def _transposed_conv(dz: np.ndarray, weights: np.ndarray, padded_shape: tuple[int, ...], strides: tuple[int, int],
                     rates: tuple[int, int]) -> np.ndarray:
    """The gradient of the padded input as a transposed convolution: dz dilated by the strides, padded by
    k_eff - 1 on every side, correlated with the kernel rotated by 180 degrees (at the dilation rates)."""
    n, out_h, out_w, c, m = dz.shape
    kh, kw = weights.shape[:2]
    (sh, sw), (rh, rw) = strides, rates
    eff_h, eff_w = (kh - 1) * rh + 1, (kw - 1) * rw + 1
    spread = np.zeros((n, (out_h - 1) * sh + 1, (out_w - 1) * sw + 1, c, m), dtype=dz.dtype)
    spread[:, ::sh, ::sw] = dz
    full = np.pad(spread, ((0, 0), (eff_h - 1, eff_h - 1), (eff_w - 1, eff_w - 1), (0, 0), (0, 0)))
    rows, columns = spread.shape[1] + eff_h - 1, spread.shape[2] + eff_w - 1  # the padded rows the windows read
    rotated = weights[::-1, ::-1]
    covered = np.zeros((n, rows, columns, c), dtype=dz.dtype)
    for a in range(kh):
        for b in range(kw):
            window = full[:, a * rh:a * rh + rows, b * rw:b * rw + columns]
            covered += np.einsum("nijcm,cm->nijc", window, rotated[a, b])
    padded_gradient = np.zeros(padded_shape, dtype=dz.dtype)
    padded_gradient[:, :rows, :columns] = covered
    return padded_gradient


def _member(variant: str, doc: str) -> Callable[..., np.ndarray]:
    def forward(*args: Any, **kwargs: Any) -> np.ndarray:
        return separable_conv2d(*args, **kwargs)
    forward.__name__ = variant
    forward.__doc__ = doc
    forward.backprop = functools.partial(_backprop, variant=variant)  # type: ignore[attr-defined]
    return forward


MUTANTS = {name: _member(name, doc) for name, doc in BUGS.items()}
CORRECT = {name: _member(name, doc) for name, doc in ALTERNATIVES.items()}
globals().update(MUTANTS)
globals().update(CORRECT)
