"""Wrong implementations of tf.nn.separable_conv2d: realistic hardware-backend bugs.

The zoo's "catches wrong implementations" half: the case bank must fail every function here on at
least one case. Each one is the straightforward computation of impls.numpy_backend with exactly one bug,
said in its docstring. Most are one parameterized core, `_conv`, switched by a named bug; the rest
post-process a correct result (impls.numpy_backend.separable_conv2d).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ml_dtypes
import numpy as np

from impls import numpy_backend as _nb

__version__ = "1.0"
_COMPUTE_DTYPE = {"float16": np.float32, "bfloat16": np.float32, "float32": np.float32, "float64": np.float64}
BUGS = frozenset({"same_split_before", "no_dilation", "dilation_h_only", "stride_h_only", "multiplier_swapped",
                  "layout_reinterpret", "kernel_transposed", "extra_row", "rate_with_stride", "float32_in_float16",
                  "float64_in_float32", "tf32_pointwise", "replicate_padding"})


def _round_to_tf32(values: np.ndarray) -> np.ndarray:
    """float32 values rounded (to nearest even) to TF32's 10 explicit significand bits."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0xFFF + ((bits >> 13) & 1)) & ~np.uint64(0x1FFF)
    rounded = bits.astype(np.uint32).view(np.float32)
    return np.where(np.isfinite(values), rounded, values)


def _conv(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
          data_format: str | None, dilations: Sequence[int] | None, bug: str) -> np.ndarray:
    """numpy_backend's algorithm (compute precision float32 for the 16-bit types, intermediate rounded to
    the dtype, one matmul), with the one bug named by `bug` (a member of BUGS) switched on."""
    assert bug in BUGS, bug
    x, dw, pw = np.asarray(input), np.asarray(depthwise_filter), np.asarray(pointwise_filter)
    data_format = data_format or "NHWC"
    dilations = [1, 1] if dilations is None else list(dilations)
    if bug == "rate_with_stride":  # validate everything except the rate/stride exclusion
        sh, sw, _, _ = _nb._check(x, dw, pw, list(strides), data_format, [1, 1])
        rh, rw = dilations
        if min(rh, rw) < 1:
            _nb._fail(f"dilations must be >= 1, got {dilations}")
    else:
        sh, sw, rh, rw = _nb._check(x, dw, pw, list(strides), data_format, dilations)
    dtype = x.dtype
    compute = _COMPUTE_DTYPE[dtype.name]
    if bug == "float32_in_float16" and dtype == np.float32:
        compute = np.float16
    if bug == "float64_in_float32" and dtype == np.float64:
        compute = np.float32
    if data_format == "NHWC":
        nhwc = x
    elif bug == "layout_reinterpret":  # the NCHW buffer read as if it were NHWC
        n_, c_, h_, w_ = x.shape
        nhwc = np.ascontiguousarray(x).reshape(n_, h_, w_, c_)
    else:
        nhwc = x.transpose(0, 2, 3, 1)
    n, h, w, c = nhwc.shape
    kh, kw, _, m = dw.shape
    if bug == "kernel_transposed":  # the filter buffer indexed [kw, kh] instead of [kh, kw]
        dw = np.ascontiguousarray(dw).reshape(kw, kh, c, m).transpose(1, 0, 2, 3)
    top, bottom, left, right, out_h, out_w = _nb._padding_and_output(h, w, kh, kw, sh, sw, rh, rw, padding,
                                                                    data_format)
    if bug == "same_split_before" and isinstance(padding, str) and padding == "SAME":  # the odd pixel goes before, not after
        top, bottom, left, right = bottom, top, right, left
    if bug == "extra_row":  # output height rounded up: one more row, read from extra zero padding
        out_h += 1
        bottom += sh
    # The taps' steps: geometry above used the true rates and strides, the kernel's loops may not.
    tap_rh, tap_rw = (1, 1) if bug == "no_dilation" else (rh, 1) if bug == "dilation_h_only" else (rh, rw)
    step_w = 1 if bug == "stride_h_only" else sw

    if bug == "replicate_padding":
        padded = np.pad(nhwc.astype(compute), ((0, 0), (top, bottom), (left, right), (0, 0)), mode="edge")
    else:
        padded = np.zeros((n, h + top + bottom, w + left + right, c), dtype=compute)
        padded[:, top:top + h, left:left + w, :] = nhwc
    weights = dw.astype(compute)
    depthwise = np.zeros((n, out_h, out_w, c, m), dtype=compute)
    with np.errstate(invalid="ignore", over="ignore"):
        for i in range(kh):
            for j in range(kw):
                window = padded[:, i * tap_rh:i * tap_rh + (out_h - 1) * sh + 1:sh,
                                j * tap_rw:j * tap_rw + (out_w - 1) * step_w + 1:step_w, :, None]
                depthwise += window * weights[i, j]
        if bug == "multiplier_swapped":  # intermediate channel r*C + q instead of q*M + r
            depthwise = depthwise.transpose(0, 1, 2, 4, 3)
        intermediate = np.ascontiguousarray(depthwise).reshape(n * out_h * out_w, c * m)
        intermediate = intermediate.astype(dtype).astype(compute)
        pointwise = pw[0, 0].astype(compute)
        if bug == "tf32_pointwise" and dtype == np.float32:  # the matmul's operands lose 13 bits
            intermediate, pointwise = _round_to_tf32(intermediate), _round_to_tf32(pointwise)
        out = intermediate @ pointwise
    result = out.reshape(n, out_h, out_w, -1).astype(dtype)
    if data_format == "NHWC":
        return result
    if bug == "layout_reinterpret":  # the NHWC result buffer handed back as NCHW
        return np.ascontiguousarray(result).reshape(n, -1, out_h, out_w)
    return np.ascontiguousarray(result.transpose(0, 3, 1, 2))


def _reference(*args: Any, **kwargs: Any) -> np.ndarray:
    return _nb.separable_conv2d(*args, **kwargs)


def _channel_axis(data_format: str | None) -> int:
    return 1 if data_format == "NCHW" else 3


def _unit_roundoff(dtype: np.dtype) -> float:
    return float(ml_dtypes.finfo(dtype).eps) / 2


# --- geometry bugs ------------------------------------------------------------------------------------
def same_split_before(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
                      data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """SAME padding split on the wrong side: an odd total puts the extra pixel on the top/left instead
    of the bottom/right (Caffe/PyTorch-style symmetric-then-before instead of TensorFlow's after)."""
    return _conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations,
                 "same_split_before")


def no_dilation(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
                data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """Dilation ignored in the kernel: output size and SAME padding use the dilated kernel, but the taps
    are read contiguously (rate 1) as in a plain depthwise kernel."""
    return _conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations,
                 "no_dilation")


def dilation_h_only(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
                    data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """Dilation applied only along the height: the width rate is dropped from the tap offsets."""
    return _conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations,
                 "dilation_h_only")


def stride_h_only(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
                  data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """Stride applied only along the height: the output size is right, but successive output columns
    read input columns 1 apart instead of stride_w apart."""
    return _conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations,
                 "stride_h_only")


def extra_row(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
              data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """Off-by-one output size: the output height is computed with a rounding-up division and gets one
    extra row (computed from zero padding below the input)."""
    return _conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations,
                 "extra_row")


def replicate_padding(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
                      data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """Boundary pixels read from the wrong place: padded positions take the nearest edge pixel
    (replicate/clamp-to-edge addressing) instead of zero."""
    return _conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations,
                 "replicate_padding")


# --- indexing and layout bugs ---------------------------------------------------------------------------
def multiplier_swapped(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
                       data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """Channel-multiplier index order swapped: depthwise output (q, r) is stored at intermediate channel
    r*C + q instead of q*M + r, so it meets the wrong pointwise row (only differs when C > 1 and M > 1)."""
    return _conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations,
                 "multiplier_swapped")


def layout_reinterpret(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
                       data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """Layout confusion: an NCHW input buffer is read as if it were NHWC (same shape numbers, reshaped,
    not transposed), and the NHWC result buffer is handed back reshaped as NCHW. NHWC is right."""
    return _conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations,
                 "layout_reinterpret")


def kernel_transposed(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
                      data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """Depthwise kernel transposed: the filter buffer is indexed as [kw, kh, C, M] (kh <-> kw swapped in
    the address computation); a square kernel is read transposed, a non-square one scrambled."""
    return _conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations,
                 "kernel_transposed")


def last_channel_dropped(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
                         data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """Last output channel dropped: a vectorized tail loop skips it and leaves it zero."""
    result = _reference(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    index = [slice(None)] * 4
    index[_channel_axis(data_format)] = -1
    result[tuple(index)] = 0
    return result


def last_batch_zeroed(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
                      data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """Last batch element zeroed: the batch loop stops one short (only visible with batch > 1)."""
    result = _reference(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    if result.shape[0] > 1:
        result[-1] = 0
    return result


# --- contract bugs -------------------------------------------------------------------------------------
def rate_with_stride(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
                     data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """Accepts a dilation rate > 1 together with a stride > 1 (the contract forbids it) and computes a
    strided dilated convolution instead of raising."""
    return _conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations,
                 "rate_with_stride")


# --- numerical bugs -------------------------------------------------------------------------------------
def float32_in_float16(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
                       data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """float32 cases computed in float16 (inputs cast to float16, both stages in float16, cast back), as a
    backend that silently picks a half-precision kernel would. Other dtypes are right."""
    return _conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations,
                 "float32_in_float16")


def float64_in_float32(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
                       padding: Any, data_format: str | None = None,
                       dilations: Sequence[int] | None = None) -> np.ndarray:
    """float64 cases computed in float32 (inputs cast to float32, both stages in float32, widened back), as
    a backend without a double-precision kernel would. Other dtypes are right."""
    return _conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations,
                 "float64_in_float32")


def tf32_pointwise(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
                   data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """float32 pointwise matmul on TF32 tensor cores: both operands rounded to 10 significand bits
    (accumulation stays float32), as with NVIDIA's allow_tf32 default. Other dtypes are right."""
    return _conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations,
                 "tf32_pointwise")


def one_element_off(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
                    data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """One output element (flat index size // 2) off by a relative 1e-3, e.g. a race or a bad tile edge."""
    result = _reference(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    flat = result.reshape(-1)
    i = flat.size // 2
    flat[i] = (np.float64(flat[i]) * (1 + 1e-3)).astype(result.dtype)
    return result


def additive_bias(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
                  data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """Small systematic bias: every output gets + 4 * eps(dtype) * mean|output| (eps = 2u), e.g. a
    mis-rounded bias or accumulator initialisation; far below any per-element limit."""
    result = _reference(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    wide = result.astype(np.float64)
    finite = np.isfinite(wide)
    shift = 4 * 2 * _unit_roundoff(result.dtype) * (np.abs(wide[finite]).mean() if finite.any() else 0.0)
    return (wide + shift).astype(result.dtype)


def scale_bias(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
               data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """Small systematic scale error: every output multiplied by (1 + 8u), e.g. a requantisation or
    normalisation constant one rounding off; below every per-element limit, and zero-mean over
    outputs of both signs."""
    result = _reference(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    return (result.astype(np.float64) * (1 + 8 * _unit_roundoff(result.dtype))).astype(result.dtype)


def nonfinite_flushed(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
                      data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """Fast-math non-finite handling: NaN outputs are flushed to 0 and Inf saturated to the dtype's
    largest finite value, instead of propagating."""
    result = _reference(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    largest = float(ml_dtypes.finfo(result.dtype).max)
    return np.nan_to_num(result.astype(np.float64), nan=0.0, posinf=largest, neginf=-largest).astype(result.dtype)


MUTANTS: dict[str, Callable[..., np.ndarray]] = {
    "same_split_before": same_split_before,
    "no_dilation": no_dilation,
    "dilation_h_only": dilation_h_only,
    "stride_h_only": stride_h_only,
    "multiplier_swapped": multiplier_swapped,
    "layout_reinterpret": layout_reinterpret,
    "kernel_transposed": kernel_transposed,
    "one_element_off": one_element_off,
    "extra_row": extra_row,
    "rate_with_stride": rate_with_stride,
    "float32_in_float16": float32_in_float16,
    "float64_in_float32": float64_in_float32,
    "tf32_pointwise": tf32_pointwise,
    "last_channel_dropped": last_channel_dropped,
    "last_batch_zeroed": last_batch_zeroed,
    "additive_bias": additive_bias,
    "scale_bias": scale_bias,
    "replicate_padding": replicate_padding,
    "nonfinite_flushed": nonfinite_flushed,
}
