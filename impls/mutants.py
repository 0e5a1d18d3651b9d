"""Wrong implementations of tf.nn.separable_conv2d: realistic hardware-backend bugs.

The zoo's "catches wrong implementations" half: the case bank must fail every function here on at
least one case (`sepconv-conformance selftest` measures it). Each is the plain two-stage computation
(`_conv` with no bug: compute precision float32 for the 16-bit types and the dtype otherwise, taps in
order, intermediate rounded to the dtype as in TensorFlow's two-op graph, one matmul) with exactly one
bug, said in its docstring. Most switch a named bug inside `_conv`; the rest post-process its correct
result. Validation and geometry come from conformance.impls.zoo_core, not from the backend under test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ml_dtypes
import numpy as np

from conformance.impls import zoo_core

__version__ = "2.0"
_BF16 = np.dtype(ml_dtypes.bfloat16)
# Wider precision for the truncation bugs, so the truncating conversion is the only rounding that matters.
_WIDE = {"float16": np.float32, "bfloat16": np.float32, "float32": np.float64, "float64": np.longdouble}
# The lower-precision buffer a bandwidth-saving kernel stores the intermediate in (bfloat16 has none).
_LOWER = {"float16": _BF16, "float32": _BF16, "float64": np.dtype(np.float32)}
Backend = Callable[..., np.ndarray]


# --- numerical helpers ----------------------------------------------------------------------------------
def _round_to_tf32(values: np.ndarray) -> np.ndarray:
    """float32 values rounded (to nearest even) to TF32's 10 explicit significand bits."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0xFFF + ((bits >> 13) & 1)) & ~np.uint64(0x1FFF)
    rounded = bits.astype(np.uint32).view(np.float32)
    return np.where(np.isfinite(values), rounded, values)


def _toward_zero(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Wide values converted to `dtype` by truncation (round toward zero) instead of to nearest: where
    the nearest value is farther from zero than the exact one, step one ulp back toward zero (which also
    saturates an overflow to the largest finite value, as truncation does)."""
    nearest = values.astype(dtype)
    away = np.isfinite(values) & (np.abs(nearest.astype(values.dtype)) > np.abs(values))
    return np.where(away, np.nextafter(nearest, np.zeros_like(nearest)), nearest)


def _flush_subnormals(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Subnormals of `dtype` replaced by a zero of the same sign (FTZ on outputs, DAZ on inputs)."""
    tiny = float(ml_dtypes.finfo(dtype).smallest_normal)
    with np.errstate(invalid="ignore"):
        return np.where(np.abs(values.astype(np.float64)) < tiny, values * 0, values).astype(values.dtype)


# Output rows are summed a block at a time: a block and its scratch stay in cache through the k loop.
_BLOCK_ELEMENTS = 1 << 15
_F16_MAGIC = np.uint32((13 << 23) | 0x400000)  # added to a float32's exponent bits: 1.5 * 2**(e + 13)
_SIGN_BIT = np.uint32(0x80000000)


class _Rounding:
    """Rounds float32 blocks, in place, to the nearest float16 or bfloat16 value (ties to even), kept in
    float32: what converting to the dtype and back gives, with scratch space for blocks up to `shape`."""

    def __init__(self, dtype: np.dtype, shape: tuple[int, int], overflow: bool):
        self.float16 = dtype == np.float16
        self.overflow = overflow  # False: no value can reach float16's overflow threshold (checks skipped)
        self.narrow = np.empty(shape, dtype)
        self.magic = np.empty(shape, np.float32)
        self.sum = np.empty(shape, np.float32)
        self.sign = np.empty(shape, np.uint32)
        self.big = np.empty(shape, bool)

    def __call__(self, values: np.ndarray) -> None:
        rows = len(values)
        if not self.float16:  # ml_dtypes' conversions are fast: to bfloat16 and back
            np.copyto(self.narrow[:rows], values, casting="unsafe")
            np.copyto(values, self.narrow[:rows], casting="unsafe")
            return
        # NumPy's float16 conversions are slow, so float16 rounding is done in float32: for 2**e <= |x| <
        # 2**(e+1), c = 1.5 * 2**(e + 13) puts x + c in [2**(e+13), 2**(e+14)), where float32's spacing is
        # float16's at x, so the addition rounds x as float16 does and (x + c) - c is exact; c is an even
        # multiple of that spacing (ties go to even), and c >= 0.75 keeps the spacing at least 2**-24, that
        # of float16's subnormals. (x + c) - c has x's sign or is +0: OR-ing in x's sign bit keeps the sign of
        # a zero (as copysign would, at a third of its cost); from 65520 up float16 overflows.
        magic, total, sign, bits = self.magic[:rows], self.sum[:rows], self.sign[:rows], values.view(np.uint32)
        np.bitwise_and(bits, np.uint32(0x7F800000), out=magic.view(np.uint32))
        np.add(magic.view(np.uint32), _F16_MAGIC, out=magic.view(np.uint32))
        np.maximum(magic, np.float32(0.75), out=magic)
        np.bitwise_and(bits, _SIGN_BIT, out=sign)
        np.add(values, magic, out=total)
        np.subtract(total, magic, out=total)
        np.bitwise_or(total.view(np.uint32), sign, out=bits)
        if self.overflow:
            big = self.big[:rows]
            np.greater_equal(np.abs(values, out=magic), np.float32(65536), out=big)
            if big.any():
                np.copysign(np.float32(np.inf), values, out=values, where=big)


def _running_sum_in_dtype(intermediate: np.ndarray, terms: np.ndarray) -> np.ndarray:
    """intermediate @ terms (both float16 or both bfloat16) as a kernel accumulating in that dtype computes
    it: out = x[:, 0] * w[0], then out = out + x[:, k] * w[k] for k = 1, 2, ... in order, every product
    and every sum rounded to the dtype.

    Computed in float32, each product and each sum rounded to the dtype right away (_Rounding): what
    NumPy's float16 and ml_dtypes' bfloat16 arithmetic do element by element (the same bits), vectorized
    over a block of outputs, which is many times faster. A product of two 16-bit values is exact in float32
    (11 + 11 or 8 + 8 significand bits; for bfloat16, beyond float32's range aside), so it is rounded once,
    correctly; a sum is rounded twice (to float32, then to the dtype), which is still correct rounding since
    float32's 24 bits are at least 2p + 2 for the dtype's p (Figueroa, "When is double rounding innocuous?",
    1995). tests/test_selftest.py checks the bits against the dtype's own scalar arithmetic."""
    dtype = intermediate.dtype
    columns = np.ascontiguousarray(intermediate.T, dtype=np.float32)  # row k: x[:, k], contiguous
    weights = terms.astype(np.float32)
    rows, count = columns.shape[1], len(columns)
    # Every partial sum is at most sum_k max|x[:, k]| * max|w[k]|, grown by at most (1 + 2**-11) per
    # rounding (and 2**-25 per subnormal one): below 65520, float16 cannot overflow (NaN: check).
    largest = float(np.max(np.abs(columns), axis=1, initial=0).astype(np.float64)
                    @ np.max(np.abs(weights), axis=1, initial=0))
    overflow = not largest * (1 + 2.0 ** -11) ** (2 * count) + count * 2.0 ** -24 < 65520
    out = np.empty((rows, weights.shape[1]), np.float32)
    block = max(1, min(rows, _BLOCK_ELEMENTS // max(1, weights.shape[1])))
    rounded = _Rounding(dtype, (block, weights.shape[1]), overflow)
    scratch = np.empty((block, weights.shape[1]), np.float32)
    for start in range(0, rows, block):
        total = out[start:start + block]
        product = scratch[:len(total)]
        np.multiply(columns[0, start:start + block, None], weights[0], out=total)
        rounded(total)
        for k in range(1, count):
            np.multiply(columns[k, start:start + block, None], weights[k], out=product)
            rounded(product)
            total += product
            rounded(total)
    return out.astype(dtype)


def _wraparound_padded(nhwc: np.ndarray, pads: tuple[int, int, int, int], dtype: Any) -> np.ndarray:
    """Zero padding above and below, but left/right halo pixels read through flat addressing without a
    column bounds check: column x of row y is pixel y*W + x of the image, i.e. the previous row's end or
    the next row's start (zero only beyond the whole image)."""
    n, h, w, c = nhwc.shape
    top, bottom, left, right = pads
    flat = np.arange(h)[:, None] * w + np.arange(-left, w + right)[None, :]
    inside = (flat >= 0) & (flat < h * w)
    source = nhwc.reshape(n, h * w, c).astype(dtype)[:, np.clip(flat, 0, h * w - 1), :]
    padded = np.zeros((n, h + top + bottom, w + left + right, c), dtype=dtype)
    padded[:, top:top + h] = np.where(inside[None, :, :, None], source, 0)
    return padded


# --- the parameterized core -----------------------------------------------------------------------------
BUGS = frozenset({
    "same_split_before", "no_dilation", "dilation_h_only", "stride_h_only", "multiplier_swapped",
    "layout_reinterpret", "kernel_transposed", "extra_row", "rate_with_stride", "float32_in_float16",
    "float64_in_float32", "tf32_pointwise", "replicate_padding", "row_wraparound", "denormals_flushed",
    "outer_strides_ignored", "round_toward_zero", "truncated_intermediate", "low_precision_intermediate",
    "accumulator_carry", "explicit_padding_nhwc_order", "same_pad_stride_blind", "bfloat16_in_float16",
    "dtype_accumulation"})
_SKIPPED_CHECKS = {"rate_with_stride": frozenset({"rate_with_stride"}),
                   "outer_strides_ignored": frozenset({"outer_strides"})}


def _geometry(nhwc: np.ndarray, dw: np.ndarray, strides: tuple[int, int], rates: tuple[int, int], padding: Any,
              data_format: str, bug: str | None) -> tuple[int, int, int, int, int, int]:
    """(top, bottom, left, right, out_h, out_w), with the geometry bugs."""
    _, h, w, _ = nhwc.shape
    kh, kw = dw.shape[:2]
    (sh, sw), (rh, rw) = strides, rates
    named = padding if isinstance(padding, str) else None
    if bug == "explicit_padding_nhwc_order" and named is None and data_format == "NCHW":
        pairs = [[int(p) for p in pair] for pair in padding]  # NCHW pairs read at the NHWC positions
        padding, data_format = [[0, 0], pairs[1], pairs[2], [0, 0]], "NHWC"
    top, bottom, left, right, out_h, out_w = zoo_core.padding_and_output(h, w, kh, kw, sh, sw, rh, rw, padding,
                                                                         data_format)
    if named == "SAME" and bug == "same_split_before":  # the odd pixel goes before, not after
        top, bottom, left, right = bottom, top, right, left
    if named == "SAME" and bug == "same_pad_stride_blind":  # total padding k_eff - 1, whatever the stride
        eff_h, eff_w = (kh - 1) * rh + 1, (kw - 1) * rw + 1
        top, bottom, left, right = (eff_h - 1) // 2, eff_h // 2, (eff_w - 1) // 2, eff_w // 2
    if bug == "extra_row":  # output height rounded up: one more row, read from extra zero padding
        out_h += 1
        bottom += sh
    return top, bottom, left, right, out_h, out_w


def _conv(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
          data_format: str | None, dilations: Sequence[int] | None, bug: str | None) -> np.ndarray:
    """The plain two-stage computation with the one bug named by `bug` (a member of BUGS; None: correct)."""
    assert bug is None or bug in BUGS, bug
    x, dw, pw = np.asarray(input), np.asarray(depthwise_filter), np.asarray(pointwise_filter)
    data_format = data_format or "NHWC"
    dilations = [1, 1] if dilations is None else list(dilations)
    sh, sw, rh, rw = zoo_core.check(x, dw, pw, list(strides), data_format, dilations,
                                    _SKIPPED_CHECKS.get(bug or "", frozenset()))
    dtype = x.dtype
    compute: Any = zoo_core.COMPUTE_DTYPE[dtype.name]
    if bug == "float32_in_float16" and dtype == np.float32:
        compute = np.float16
    if bug == "float64_in_float32" and dtype == np.float64:
        compute = np.float32
    if bug in ("round_toward_zero", "truncated_intermediate"):
        compute = _WIDE[dtype.name]
    if bug == "denormals_flushed":  # DAZ: subnormal inputs read as zero
        x, dw, pw = (_flush_subnormals(a, dtype) for a in (x, dw, pw))
    if bug == "bfloat16_in_float16" and dtype == np.float16:  # operands carried at bfloat16 precision
        x, dw, pw = (a.astype(_BF16).astype(dtype) for a in (x, dw, pw))
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
    top, bottom, left, right, out_h, out_w = _geometry(nhwc, dw, (sh, sw), (rh, rw), padding, data_format, bug)
    # The taps' steps: the geometry used the true rates and strides, the kernel's loops may not.
    tap_rh, tap_rw = (1, 1) if bug == "no_dilation" else (rh, 1) if bug == "dilation_h_only" else (rh, rw)
    step_w = 1 if bug == "stride_h_only" else sw

    if bug == "replicate_padding":  # padded positions take the nearest edge pixel instead of zero
        padded = np.pad(nhwc.astype(compute), ((0, 0), (top, bottom), (left, right), (0, 0)), mode="edge")
    elif bug == "row_wraparound":
        padded = _wraparound_padded(nhwc, (top, bottom, left, right), compute)
    else:
        padded = np.zeros((n, h + top + bottom, w + left + right, c), dtype=compute)
        padded[:, top:top + h, left:left + w, :] = nhwc
    weights = dw.astype(compute)
    depthwise = np.zeros((n, out_h, out_w, c, m), dtype=compute)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        for i in range(kh):
            for j in range(kw):
                window = padded[:, i * tap_rh:i * tap_rh + (out_h - 1) * sh + 1:sh,
                                j * tap_rw:j * tap_rw + (out_w - 1) * step_w + 1:step_w, :, None]
                depthwise += window * weights[i, j]
        if bug == "accumulator_carry":  # accumulator zeroed once per call, not per image
            depthwise = np.cumsum(depthwise, axis=0, dtype=compute)
        if bug == "multiplier_swapped":  # intermediate channel r*C + q instead of q*M + r
            depthwise = depthwise.transpose(0, 1, 2, 4, 3)
        flat = np.ascontiguousarray(depthwise).reshape(n * out_h * out_w, c * m)
        if bug in ("round_toward_zero", "truncated_intermediate"):
            intermediate = _toward_zero(flat, dtype)
        else:
            intermediate = flat.astype(dtype)  # the intermediate has the operator's dtype
        if bug == "denormals_flushed":  # FTZ on the stored intermediate
            intermediate = _flush_subnormals(intermediate, dtype)
        if (bug == "low_precision_intermediate" and dtype.name in _LOWER) or (
                bug == "bfloat16_in_float16" and dtype == np.float16):
            intermediate = intermediate.astype(_LOWER[dtype.name])
        if bug == "dtype_accumulation" and dtype.name in ("float16", "bfloat16"):
            # The pointwise sum held in the dtype: a running sum over k, rounded after every product and add.
            out = _running_sum_in_dtype(intermediate, pw[0, 0]).reshape(n, out_h, out_w, -1)
        else:
            intermediate = intermediate.astype(compute)
            pointwise = pw[0, 0].astype(compute)
            if bug == "tf32_pointwise" and dtype == np.float32:  # the matmul's operands lose 13 bits
                intermediate, pointwise = _round_to_tf32(intermediate), _round_to_tf32(pointwise)
            out = (intermediate @ pointwise).reshape(n, out_h, out_w, -1)
        if bug == "bfloat16_in_float16" and dtype == np.float16:
            out = out.astype(_BF16)
        result = _toward_zero(out, dtype) if bug == "round_toward_zero" else out.astype(dtype)
    if bug == "denormals_flushed":  # FTZ on the output
        result = _flush_subnormals(result, dtype)
    if data_format == "NHWC":
        return result
    if bug == "layout_reinterpret":  # the NHWC result buffer handed back as NCHW
        return np.ascontiguousarray(result).reshape(n, -1, out_h, out_w)
    return np.ascontiguousarray(result.transpose(0, 3, 1, 2))


def correct(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
            data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    """`_conv` without a bug: the baseline every mutant departs from (the selftest checks it passes)."""
    return _conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations, None)


def _with_bug(bug: str, doc: str) -> Backend:
    """A backend with tf.nn.separable_conv2d's signature running `_conv` with `bug` switched on."""
    def mutant(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
               data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
        return _conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations, bug)
    mutant.__name__ = mutant.__qualname__ = bug
    mutant.__doc__ = doc
    return mutant


def _post(name: str, doc: str, change: Callable[[np.ndarray, str], np.ndarray]) -> Backend:
    """A backend that computes the correct result and then applies `change(result, data_format)`."""
    def mutant(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
               data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
        result = correct(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
        return change(result, data_format or "NHWC")
    mutant.__name__ = mutant.__qualname__ = name
    mutant.__doc__ = doc
    return mutant


def _unit_roundoff(dtype: np.dtype) -> float:
    return float(ml_dtypes.finfo(dtype).eps) / 2


def _drop_last_channel(result: np.ndarray, data_format: str) -> np.ndarray:
    index: list[Any] = [slice(None)] * 4
    index[1 if data_format == "NCHW" else 3] = -1
    result[tuple(index)] = 0
    return result


def _zero_last_batch(result: np.ndarray, data_format: str) -> np.ndarray:
    if result.shape[0] > 1:
        result[-1] = 0
    return result


def _one_element_off(result: np.ndarray, data_format: str) -> np.ndarray:
    flat = result.reshape(-1)
    i = flat.size // 2
    flat[i] = (np.float64(flat[i]) * (1 + 1e-3)).astype(result.dtype)
    return result


def _additive_bias(result: np.ndarray, data_format: str) -> np.ndarray:
    wide = result.astype(np.float64)
    finite = np.isfinite(wide)
    shift = 4 * 2 * _unit_roundoff(result.dtype) * (np.abs(wide[finite]).mean() if finite.any() else 0.0)
    return (wide + shift).astype(result.dtype)


def _scale_bias(result: np.ndarray, data_format: str) -> np.ndarray:
    return (result.astype(np.float64) * (1 + 8 * _unit_roundoff(result.dtype))).astype(result.dtype)


def _nonfinite_flushed(result: np.ndarray, data_format: str) -> np.ndarray:
    largest = float(ml_dtypes.finfo(result.dtype).max)
    return np.nan_to_num(result.astype(np.float64), nan=0.0, posinf=largest, neginf=-largest).astype(result.dtype)


# --- geometry bugs ----------------------------------------------------------------------------------------
same_split_before = _with_bug("same_split_before", """SAME padding split on the wrong side: an odd total puts
the extra pixel on the top/left instead of the bottom/right (Caffe/PyTorch-style)""")
same_pad_stride_blind = _with_bug("same_pad_stride_blind", """SAME padding computed as k_eff - 1 in total
(k_eff // 2 after), as for stride 1, whatever the stride: strided SAME windows start at the wrong pixel""")
no_dilation = _with_bug("no_dilation", """Dilation ignored in the kernel: output size and SAME padding use the
dilated kernel, but the taps are read contiguously (rate 1)""")
dilation_h_only = _with_bug("dilation_h_only", """Dilation applied only along the height: the width rate is
dropped from the tap offsets""")
stride_h_only = _with_bug("stride_h_only", """Stride applied only along the height: the output size is right,
but successive output columns read input columns 1 apart instead of stride_w apart""")
extra_row = _with_bug("extra_row", """Off-by-one output size: the output height is computed with a rounding-up
division and gets one extra row (computed from zero padding below the input)""")
replicate_padding = _with_bug("replicate_padding", """Boundary pixels read from the wrong place: padded
positions take the nearest edge pixel (clamp-to-edge addressing) instead of zero""")
row_wraparound = _with_bug("row_wraparound", """Boundary pixels read from the wrong place: the left/right
halo is addressed as flat offsets y*W + x without a column bounds check, so a pixel left of column 0
reads the previous row's last pixel and one right of the last column the next row's first""")
explicit_padding_nhwc_order = _with_bug("explicit_padding_nhwc_order", """Explicit padding read at NHWC
positions whatever the layout: for NCHW, pairs 1 and 2 ([0, 0] and [top, bottom]) are taken as height
and width padding""")
# --- indexing and layout bugs ------------------------------------------------------------------------------
multiplier_swapped = _with_bug("multiplier_swapped", """Channel-multiplier index order swapped: depthwise
output (q, r) is stored at intermediate channel r*C + q instead of q*M + r (differs when C > 1, M > 1)""")
layout_reinterpret = _with_bug("layout_reinterpret", """Layout confusion: an NCHW input buffer is read as if
it were NHWC (reshaped, not transposed), and the NHWC result buffer is handed back reshaped as NCHW""")
kernel_transposed = _with_bug("kernel_transposed", """Depthwise kernel transposed: the filter buffer is
indexed as [kw, kh, C, M]; a square kernel is read transposed, a non-square one scrambled""")
accumulator_carry = _with_bug("accumulator_carry", """Stale accumulator: the depthwise accumulator is zeroed
once per call, not per image, so image b adds the sums of images 0 .. b-1 (visible with batch > 1)""")
last_channel_dropped = _post("last_channel_dropped", """Last output channel dropped: a vectorized tail loop
skips it and leaves it zero""", _drop_last_channel)
last_batch_zeroed = _post("last_batch_zeroed", """Last batch element zeroed: the batch loop stops one short
(only visible with batch > 1)""", _zero_last_batch)
# --- contract bugs --------------------------------------------------------------------------------------
rate_with_stride = _with_bug("rate_with_stride", """Accepts a dilation rate > 1 together with a stride > 1
(the contract forbids it) and computes a strided dilated convolution instead of raising""")
outer_strides_ignored = _with_bug("outer_strides_ignored", """Accepts batch/channel strides != 1 (the contract
forbids them) and silently ignores them instead of raising""")
# --- numerical bugs -------------------------------------------------------------------------------------
float32_in_float16 = _with_bug("float32_in_float16", """float32 cases computed in float16 (both stages), as a
backend that silently picks a half-precision kernel would. Other dtypes are right""")
float64_in_float32 = _with_bug("float64_in_float32", """float64 cases computed in float32 (both stages), as a
backend without a double-precision kernel would. Other dtypes are right""")
tf32_pointwise = _with_bug("tf32_pointwise", """float32 pointwise matmul on TF32 tensor cores: both operands
rounded to 10 significand bits (accumulation stays float32). Other dtypes are right""")
low_precision_intermediate = _with_bug("low_precision_intermediate", """Intermediate stored in a lower
precision than the dtype to save bandwidth: bfloat16 for float16/float32, float32 for float64""")
round_toward_zero = _with_bug("round_toward_zero", """Conversions to the dtype truncate (round toward zero)
instead of rounding to nearest, for the intermediate and the output: computed in a wider precision,
each result is off by up to one ulp, always toward zero (a systematic bias on same-signed outputs)""")
truncated_intermediate = _with_bug("truncated_intermediate", """The intermediate is converted to the dtype
by truncation (round toward zero) from a wider accumulator; the output is rounded to nearest""")
denormals_flushed = _with_bug("denormals_flushed", """Denormals flushed (FTZ/DAZ) by a backend that declares it
preserves them: subnormal inputs are read as zero and subnormal intermediate and output values of the dtype
are stored as zero""")
# Flushing is allowed by default (TensorFlow's CPU kernels flush): the bug is promising to preserve them.
denormals_flushed.supports = {"subnormals": "preserve"}  # type: ignore[attr-defined]
one_element_off = _post("one_element_off", """One output element (flat index size // 2) off by a relative
1e-3, e.g. a race or a bad tile edge""", _one_element_off)
additive_bias = _post("additive_bias", """Small systematic bias: every output gets + 4 * eps(dtype) *
mean|output|, e.g. a mis-rounded bias or accumulator initialisation; far below any per-element
limit""", _additive_bias)
scale_bias = _post("scale_bias", """Small systematic scale error: every output multiplied by (1 + 8u), e.g. a
normalisation constant one rounding off; below every per-element limit""", _scale_bias)
bfloat16_in_float16 = _with_bug("bfloat16_in_float16", """float16 computed at bfloat16 precision: inputs,
intermediate and output carried through bfloat16 (8 significand bits instead of 11), as a runtime that picks
its bfloat16 kernel for float16 does. Other dtypes are right""")
dtype_accumulation = _with_bug("dtype_accumulation", """float16/bfloat16 pointwise sum accumulated in the dtype
(a running sum, rounded after every term) instead of float32, and not declared: error growing with C*M.
Other dtypes are right""")


def zeros_long_reduction(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
                         padding: Any, data_format: str | None = None,
                         dilations: Sequence[int] | None = None) -> np.ndarray:
    """float16/bfloat16 output all zeros where the pointwise reduction is long (C*M >= 256), e.g. a kernel
    whose long-reduction path never writes its result. Everything else is right"""
    result = correct(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    long = np.shape(pointwise_filter)[2] >= 256
    return np.zeros_like(result) if long and result.dtype.name in ("float16", "bfloat16") else result


nonfinite_flushed = _post("nonfinite_flushed", """Fast-math non-finite handling: NaN outputs are flushed to 0
and Inf saturated to the dtype's largest finite value, instead of propagating""", _nonfinite_flushed)

MUTANTS: dict[str, Backend] = {f.__name__: f for f in (
    same_split_before, same_pad_stride_blind, no_dilation, dilation_h_only, stride_h_only, extra_row,
    replicate_padding, row_wraparound, explicit_padding_nhwc_order, multiplier_swapped, layout_reinterpret,
    kernel_transposed, accumulator_carry, last_channel_dropped, last_batch_zeroed, rate_with_stride,
    outer_strides_ignored, float32_in_float16, float64_in_float32, tf32_pointwise, low_precision_intermediate,
    round_toward_zero, truncated_intermediate, denormals_flushed, one_element_off, additive_bias, scale_bias,
    nonfinite_flushed, bfloat16_in_float16, dtype_accumulation, zeros_long_reduction)}
