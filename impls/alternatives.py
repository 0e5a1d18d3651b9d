"""Correct implementations of tf.nn.separable_conv2d that round differently from conformance.impls.numpy_backend.

The zoo's "no false failures" half: each function here computes the contract's formula exactly as well
as IEEE arithmetic allows, but with another accumulation order, accumulator precision, intermediate
rounding or algorithm (a fused full convolution), the way a real hardware backend might. The tolerance
model must accept every one of them on every case of the bank. Their docstrings say how they round.

All of them share one front end, `_prepare`, which validates the arguments and resolves the geometry
with conformance.impls.zoo_core (so every contract violation raises a ValueError), independently of the backend
under test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from conformance.impls import zoo_core

__version__ = "1.0"
_BLOCK_ELEMENTS = 1 << 24  # cap on the (rows, C*M, O) product tensors of the pairwise summation


@dataclass(frozen=True)
class _Call:
    """One validated call: the input in NHWC (case dtype), the filters, and the resolved geometry."""

    x: np.ndarray
    dw: np.ndarray
    pw: np.ndarray
    data_format: str
    strides: tuple[int, int]
    rates: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, bottom, left, right
    out_h: int
    out_w: int

    @property
    def dtype(self) -> np.dtype:
        return self.x.dtype

    @property
    def compute(self) -> type:
        return zoo_core.COMPUTE_DTYPE[self.dtype.name]

    def padded(self, dtype: Any) -> np.ndarray:
        """The input converted to `dtype`, zero-padded."""
        n, h, w, c = self.x.shape
        top, bottom, left, right = self.pads
        padded = np.zeros((n, h + top + bottom, w + left + right, c), dtype=dtype)
        padded[:, top:top + h, left:left + w, :] = self.x
        return padded

    def window(self, padded: np.ndarray, i: int, j: int) -> np.ndarray:
        """The strided input pixels that meet tap (i, j): shape (N, out_h, out_w, C)."""
        (sh, sw), (rh, rw) = self.strides, self.rates
        return padded[:, i * rh:i * rh + (self.out_h - 1) * sh + 1:sh,
                      j * rw:j * rw + (self.out_w - 1) * sw + 1:sw, :]

    def patches(self, padded: np.ndarray) -> np.ndarray:
        """im2col view: shape (N, out_h, out_w, C, kh, kw), no copy."""
        (sh, sw), (rh, rw) = self.strides, self.rates
        kh, kw = self.dw.shape[:2]
        eff_h, eff_w = (kh - 1) * rh + 1, (kw - 1) * rw + 1
        view = sliding_window_view(padded, (eff_h, eff_w), axis=(1, 2))
        return view[:, :(self.out_h - 1) * sh + 1:sh, :(self.out_w - 1) * sw + 1:sw, :, ::rh, ::rw]

    def finish(self, rows: np.ndarray) -> np.ndarray:
        """(N*out_h*out_w, O) rows in any precision -> the result in the case's dtype and layout."""
        n = self.x.shape[0]
        result = np.asarray(rows).reshape(n, self.out_h, self.out_w, -1).astype(self.dtype)
        return result if self.data_format == "NHWC" else np.ascontiguousarray(result.transpose(0, 3, 1, 2))


def _prepare(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
             data_format: str | None, dilations: Sequence[int] | None) -> _Call:
    """Validate (ValueError for whatever the contract forbids) and resolve the geometry."""
    x, dw, pw = np.asarray(input), np.asarray(depthwise_filter), np.asarray(pointwise_filter)
    data_format = data_format or "NHWC"
    dilations = [1, 1] if dilations is None else list(dilations)
    sh, sw, rh, rw = zoo_core.check(x, dw, pw, list(strides), data_format, dilations)
    nhwc = x if data_format == "NHWC" else x.transpose(0, 2, 3, 1)
    _, h, w, _ = nhwc.shape
    kh, kw = dw.shape[:2]
    top, bottom, left, right, out_h, out_w = zoo_core.padding_and_output(h, w, kh, kw, sh, sw, rh, rw, padding,
                                                                         data_format)
    return _Call(nhwc, dw, pw, data_format, (sh, sw), (rh, rw), (top, bottom, left, right), out_h, out_w)


def _depthwise(call: _Call, dtype: Any, reverse: bool = False) -> np.ndarray:
    """Depthwise stage with every product and sum rounded to `dtype` (taps in order (i, j), or reversed):
    shape (N*out_h*out_w, C*M), intermediate channel q*M + r."""
    kh, kw, c, m = call.dw.shape
    padded, weights = call.padded(dtype), call.dw.astype(dtype)
    taps = [(i, j) for i in range(kh) for j in range(kw)]
    acc = None
    for i, j in (reversed(taps) if reverse else taps):
        product = call.window(padded, i, j)[..., None] * weights[i, j]
        acc = product if acc is None else acc + product
    assert acc is not None
    return acc.reshape(-1, c * m)


def _kahan_sum(terms: Callable[[int], np.ndarray], count: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Compensated (Kahan) summation of terms(0) ... terms(count - 1), all in `dtype`. Kahan's
    compensation (t - s) - y would turn an Inf partial sum into NaN (Inf - Inf), so it is dropped where the
    sum is not finite and IEEE arithmetic carries the non-finite value on."""
    total = np.zeros(shape, dtype=dtype)
    compensation = np.zeros(shape, dtype=dtype)
    for k in range(count):
        y = terms(k) - compensation
        t = total + y
        compensation = np.where(np.isfinite(t), (t - total) - y, 0).astype(dtype)
        total = t
    return total


def _pairwise_sum(terms: np.ndarray, axis: int) -> np.ndarray:
    """Pairwise (tree) summation along `axis`, in the array's own dtype: adjacent pairs are added level by
    level; an odd last element is carried to the next level."""
    terms = np.moveaxis(terms, axis, 0)
    while terms.shape[0] > 1:
        half = terms.shape[0] // 2
        summed = terms[0:2 * half:2] + terms[1:2 * half:2]
        terms = np.concatenate([summed, terms[2 * half:]]) if terms.shape[0] % 2 else summed
    return terms[0]


# --- the alternatives -------------------------------------------------------------------------------
def fp64_then_cast(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
                   padding: Any, data_format: str | None = None,
                   dilations: Sequence[int] | None = None) -> np.ndarray:
    """Everything in float64, one rounding at the end.

    The inputs are widened to float64 (exact), the depthwise taps accumulate in float64 in order (i, j),
    the intermediate stays in float64 (it is NOT rounded to the dtype, unlike TensorFlow's two-op graph),
    the pointwise stage is a float64 BLAS matmul, and the result is rounded once to the case's dtype. For
    float16/bfloat16/float32 this is nearly the correctly rounded result; for float64 it is an ordinary
    float64 computation without the intermediate's rounding step.
    """
    call = _prepare(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    with np.errstate(invalid="ignore", over="ignore"):
        intermediate = _depthwise(call, np.float64)
        out = intermediate @ call.pw[0, 0].astype(np.float64)
    return call.finish(out)


def fused_full_conv(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
                    padding: Any, data_format: str | None = None,
                    dilations: Sequence[int] | None = None) -> np.ndarray:
    """One full convolution with pre-multiplied weights, via im2col + one matmul.

    Rounding: the equivalent full-convolution weight W[i, j, q, o] = sum_r dw[i, j, q, r] *
    pw[0, 0, q*M + r, o] is formed in the compute precision (float32 for float16/bfloat16/float32,
    float64 for float64), so the products of weights are rounded there, and there is no intermediate
    tensor at all (nothing is rounded to the dtype between the stages). The output is then one dot
    product of length kh*kw*C per element (im2col rows (q, i, j) times W), a BLAS matmul in the compute
    precision, rounded once to the dtype. This regroups the sum, so a finite result differs from the
    two-stage one by rounding only.

    Non-finite inputs: the regrouping is not valid for Inf (sum_r pw*(Inf*dw) can be NaN where
    Inf*sum_r(dw*pw) is not), so output pixels whose receptive field holds a NaN or Inf are recomputed
    with the unfused two-stage formula in the compute precision (intermediate likewise not rounded),
    which propagates them exactly as IEEE arithmetic does in the contract's formula.
    """
    call = _prepare(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    compute = call.compute
    kh, kw, c, m = call.dw.shape
    o = call.pw.shape[3]
    dw: np.ndarray = call.dw.astype(compute)
    pw: np.ndarray = call.pw[0, 0].astype(compute).reshape(c, m, o)
    fused = np.einsum("ijqr,qro->qijo", dw, pw).reshape(c * kh * kw, o)
    padded = call.padded(compute)
    columns = call.patches(padded).reshape(-1, c * kh * kw)  # row order (q, i, j), a copy
    with np.errstate(invalid="ignore", over="ignore"):
        out = columns @ fused
        if not np.isfinite(call.x).all():
            bad = (~np.isfinite(call.patches(padded))).reshape(out.shape[0], -1).any(axis=1)
            unfused = _depthwise(call, compute) @ call.pw[0, 0].astype(compute)
            out[bad] = unfused[bad]
    return call.finish(out)


def reversed_order(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
                   padding: Any, data_format: str | None = None,
                   dilations: Sequence[int] | None = None) -> np.ndarray:
    """Reversed accumulation orders, pairwise pointwise sum, every operation in the dtype itself.

    Rounding: all arithmetic happens in the case's dtype (float16 in NumPy's float16, bfloat16 in
    ml_dtypes' bfloat16, which round every product and every sum to the dtype). The depthwise taps
    accumulate sequentially from the last tap (kh-1, kw-1) back to (0, 0); the intermediate therefore is
    in the dtype. The pointwise stage forms every product z_k * pw_k in the dtype and adds them with a
    pairwise (tree) summation over the channels taken in reverse order (k = C*M-1 first), blocked over
    output pixels to bound memory. The result is already in the dtype.
    """
    call = _prepare(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    dtype = call.dtype
    with np.errstate(invalid="ignore", over="ignore"):
        intermediate = _depthwise(call, dtype, reverse=True)
        pw = call.pw[0, 0][::-1]
        rows, k = intermediate.shape
        o = pw.shape[1]
        out = np.empty((rows, o), dtype=dtype)
        block = max(1, _BLOCK_ELEMENTS // max(1, k * o))
        for start in range(0, rows, block):
            z = intermediate[start:start + block, ::-1]
            out[start:start + block] = _pairwise_sum(z[:, :, None] * pw[None, :, :], axis=1)
    return call.finish(out)


def fp32_accumulate_low_precision(input: Any, depthwise_filter: Any, pointwise_filter: Any,
                                  strides: Sequence[int], padding: Any, data_format: str | None = None,
                                  dilations: Sequence[int] | None = None) -> np.ndarray:
    """Wide or compensated accumulation.

    float16/bfloat16: inputs widened to float32, both stages accumulate in float32 (taps in order,
    pointwise as a float32 BLAS matmul) and the intermediate is kept in float32 (NOT rounded to the
    dtype); the result is rounded once to the dtype.
    float32/float64: computed in the dtype with Kahan-compensated summation in both stages (taps in order
    (i, j), then channels k = 0 .. C*M-1); the intermediate is rounded to the dtype (it is a dtype
    value), the compensated pointwise sum is the result. Where a partial sum turns Inf or NaN the
    compensation is dropped, so non-finite values propagate by IEEE rules instead of Kahan's Inf - Inf.
    """
    call = _prepare(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    dtype = call.dtype
    with np.errstate(invalid="ignore", over="ignore"):
        if dtype.name in ("float16", "bfloat16"):
            out = _depthwise(call, np.float32) @ call.pw[0, 0].astype(np.float32)
            return call.finish(out)
        kh, kw, c, m = call.dw.shape
        padded, weights = call.padded(dtype), call.dw
        taps = [(i, j) for i in range(kh) for j in range(kw)]
        n = call.x.shape[0]
        intermediate = _kahan_sum(lambda t: call.window(padded, *taps[t])[..., None] * weights[taps[t]],
                                  len(taps), (n, call.out_h, call.out_w, c, m), dtype).reshape(-1, c * m)
        pw = call.pw[0, 0]
        out = _kahan_sum(lambda k: intermediate[:, k:k + 1] * pw[k], c * m, (intermediate.shape[0], pw.shape[1]),
                         dtype)
    return call.finish(out)


def pairwise_compute_precision(input: Any, depthwise_filter: Any, pointwise_filter: Any,
                               strides: Sequence[int], padding: Any, data_format: str | None = None,
                               dilations: Sequence[int] | None = None) -> np.ndarray:
    """TensorFlow's two-op graph with a tree-summed pointwise stage in the compute precision.

    Rounding: the depthwise taps accumulate in the compute precision (float32 for float16/bfloat16/float32,
    float64 for float64) in order (i, j), and the intermediate is rounded to the case's dtype, as between
    TensorFlow's two ops. The pointwise products z_k * pw_k are formed in the compute precision and added
    by pairwise (tree) summation over k = 0 .. C*M-1, blocked over output pixels to bound memory; the
    result is rounded once to the dtype. The tree's error bound grows with log2(C*M), not C*M.
    """
    call = _prepare(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    compute = call.compute
    with np.errstate(invalid="ignore", over="ignore"):
        intermediate: np.ndarray = _depthwise(call, compute).astype(call.dtype).astype(compute)
        pw = call.pw[0, 0].astype(compute)
        rows, k = intermediate.shape
        o = pw.shape[1]
        out = np.empty((rows, o), dtype=compute)
        block = max(1, _BLOCK_ELEMENTS // max(1, k * o))
        for start in range(0, rows, block):
            z = intermediate[start:start + block]
            out[start:start + block] = _pairwise_sum(z[:, :, None] * pw[None, :, :], axis=1)
    return call.finish(out)


def native_low_precision(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
                         padding: Any, data_format: str | None = None,
                         dilations: Sequence[int] | None = None) -> np.ndarray:
    """Naive arithmetic in the dtype itself: the worst rounding a correct implementation can have.

    Every product and every sum is rounded to the case's dtype (float16 in NumPy's float16; bfloat16 in
    ml_dtypes' bfloat16, which rounds to bfloat16 after every operation; float32/float64 natively). The
    depthwise taps accumulate sequentially in order (i, j), the intermediate is in the dtype, and the
    pointwise stage is a sequential running sum over k = 0 .. C*M-1 held in the dtype (no BLAS, no wider
    accumulator, no pairwise tree).
    """
    call = _prepare(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    dtype = call.dtype
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        intermediate = _depthwise(call, dtype)
        pw = call.pw[0, 0]
        out = intermediate[:, 0:1] * pw[0]
        for k in range(1, pw.shape[0]):
            out = out + intermediate[:, k:k + 1] * pw[k]
    return call.finish(out)


# Correct implementations that accumulate float16/bfloat16 in the dtype itself, and say so: the tolerance
# model judges them by that accumulator's worst case (without the declaration: float32's, which they miss).
DTYPE_ACCUMULATOR = {"accumulator": {"float16": "float16", "bfloat16": "bfloat16"}}
reversed_order.supports = DTYPE_ACCUMULATOR  # type: ignore[attr-defined]
native_low_precision.supports = DTYPE_ACCUMULATOR  # type: ignore[attr-defined]

ALTERNATIVES: dict[str, Callable[..., np.ndarray]] = {
    "fp64_then_cast": fp64_then_cast,
    "fused_full_conv": fused_full_conv,
    "reversed_order": reversed_order,
    "fp32_accumulate_low_precision": fp32_accumulate_low_precision,
    "pairwise_compute_precision": pairwise_compute_precision,
    "native_low_precision": native_low_precision,
}
