"""tf.nn.separable_conv2d in NumPy: the bundled CPU implementation under test.

Numerics, per dtype:
- float32, float64: computed in the dtype itself; the depthwise stage accumulates the kh*kw taps in
  order (i, j), the intermediate is held in the dtype, the pointwise stage is one BLAS matmul.
- float16, bfloat16: computed in float32 (NumPy's float16 and ml_dtypes' bfloat16 arithmetic would
  round every product), the intermediate is rounded to the dtype as TensorFlow's is, the pointwise stage
  accumulates in float32 and rounds once at the end.
- NaN and Inf propagate by IEEE rules; padding contributes exact zeros (0 * Inf never arises from it).

Self-contained on purpose (no import from the harness): it is an implementation under test, and a
template for a new backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__version__ = "1.0"
_COMPUTE_DTYPE = {"float16": np.float32, "bfloat16": np.float32, "float32": np.float32, "float64": np.float64}


def _fail(message: str) -> None:
    raise ValueError(f"separable_conv2d: {message}")


def _explicit_padding(padding: Any, data_format: str) -> tuple[int, int, int, int]:
    try:
        pairs = [[int(p) for p in pair] for pair in padding]
    except (TypeError, ValueError):
        pairs = []
    if len(pairs) != 4 or any(len(p) != 2 for p in pairs):
        _fail(f"padding must be 'SAME', 'VALID' or 4 [before, after] pairs, got {padding!r}")
    outer = (pairs[0], pairs[3]) if data_format == "NHWC" else (pairs[0], pairs[1])
    if any(p != [0, 0] for p in outer):
        _fail(f"explicit padding of the batch and channel dimensions must be 0, got {padding!r}")
    (top, bottom), (left, right) = (pairs[1], pairs[2]) if data_format == "NHWC" else (pairs[2], pairs[3])
    if min(top, bottom, left, right) < 0:
        _fail(f"explicit padding must be >= 0, got {padding!r}")
    return top, bottom, left, right


def _same_split(size: int, effective_kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + effective_kernel - size, 0)
    return total // 2, total - total // 2


def _padding_and_output(h: int, w: int, kh: int, kw: int, sh: int, sw: int, rh: int, rw: int, padding: Any,
                        data_format: str) -> tuple[int, int, int, int, int, int]:
    """(top, bottom, left, right, out_h, out_w) for the padding argument; raises where the dilated kernel
    does not fit in the padded input."""
    eff_h, eff_w = (kh - 1) * rh + 1, (kw - 1) * rw + 1
    named = padding if isinstance(padding, str) else None  # explicit padding may be a list or an array
    if named == "SAME":
        (top, bottom), (left, right) = _same_split(h, eff_h, sh), _same_split(w, eff_w, sw)
    elif named == "VALID":
        top = bottom = left = right = 0
    else:
        top, bottom, left, right = _explicit_padding(padding, data_format)
    out_h = (h + top + bottom - eff_h) // sh + 1
    out_w = (w + left + right - eff_w) // sw + 1
    if out_h < 1 or out_w < 1:
        _fail(f"output size would be {out_h}x{out_w}: the dilated kernel ({eff_h}x{eff_w}) does not fit "
              f"in the padded input ({h + top + bottom}x{w + left + right})")
    return top, bottom, left, right, out_h, out_w


def _check(x: np.ndarray, dw: np.ndarray, pw: np.ndarray, strides: Sequence[int], data_format: str,
           dilations: Sequence[int]) -> tuple[int, int, int, int]:
    """Validate the arguments; returns (sh, sw, rh, rw)."""
    if data_format not in ("NHWC", "NCHW"):
        _fail(f"data_format must be 'NHWC' or 'NCHW', got {data_format!r}")
    for name, array in (("input", x), ("depthwise_filter", dw), ("pointwise_filter", pw)):
        if array.ndim != 4:
            _fail(f"{name} must have rank 4, got shape {list(array.shape)}")
    if len(strides) != 4 or len(dilations) != 2:
        _fail(f"strides must have 4 values and dilations 2, got {list(strides)} and {list(dilations)}")
    outer = (strides[0], strides[3]) if data_format == "NHWC" else (strides[0], strides[1])
    if tuple(outer) != (1, 1):
        _fail(f"strides of the batch and channel dimensions must be 1, got {list(strides)}")
    sh, sw = (strides[1], strides[2]) if data_format == "NHWC" else (strides[2], strides[3])
    rh, rw = dilations
    if min(sh, sw, rh, rw) < 1:
        _fail(f"strides and dilations must be >= 1, got {list(strides)} and {list(dilations)}")
    if max(rh, rw) > 1 and max(sh, sw) > 1:
        _fail(f"if any dilation rate is > 1, all strides must be 1 (strides {list(strides)}, "
              f"dilations {list(dilations)})")
    channels = x.shape[3] if data_format == "NHWC" else x.shape[1]
    if dw.shape[2] != channels:
        _fail(f"depthwise_filter has {dw.shape[2]} input channels, input has {channels}")
    if pw.shape[:3] != (1, 1, dw.shape[2] * dw.shape[3]):
        _fail(f"pointwise_filter must have shape [1, 1, {dw.shape[2] * dw.shape[3]}, out_channels], "
              f"got {list(pw.shape)}")
    if not (x.dtype == dw.dtype == pw.dtype):
        _fail(f"all tensors must share one dtype, got {x.dtype}, {dw.dtype}, {pw.dtype}")
    if x.dtype.name not in _COMPUTE_DTYPE:
        _fail(f"unsupported dtype {x.dtype}")
    return sh, sw, rh, rw


def separable_conv2d(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
                     padding: Any, data_format: str | None = None,
                     dilations: Sequence[int] | None = None) -> np.ndarray:
    """Same signature and semantics as tf.nn.separable_conv2d (without `name`)."""
    x, dw, pw = np.asarray(input), np.asarray(depthwise_filter), np.asarray(pointwise_filter)
    data_format = data_format or "NHWC"
    dilations = [1, 1] if dilations is None else list(dilations)
    sh, sw, rh, rw = _check(x, dw, pw, list(strides), data_format, dilations)
    dtype = x.dtype
    compute = _COMPUTE_DTYPE[dtype.name]
    nhwc = x if data_format == "NHWC" else x.transpose(0, 2, 3, 1)
    n, h, w, c = nhwc.shape
    kh, kw, _, m = dw.shape
    top, bottom, left, right, out_h, out_w = _padding_and_output(h, w, kh, kw, sh, sw, rh, rw, padding, data_format)

    padded = np.zeros((n, h + top + bottom, w + left + right, c), dtype=compute)
    padded[:, top:top + h, left:left + w, :] = nhwc
    weights = dw.astype(compute)
    depthwise = np.zeros((n, out_h, out_w, c, m), dtype=compute)
    product = np.empty_like(depthwise)
    with np.errstate(invalid="ignore", over="ignore"):
        for i in range(kh):
            for j in range(kw):
                window = padded[:, i * rh:i * rh + (out_h - 1) * sh + 1:sh,
                                j * rw:j * rw + (out_w - 1) * sw + 1:sw, :, None]
                np.multiply(window, weights[i, j], out=product)
                depthwise += product
        # The intermediate has the operator's dtype, as in TensorFlow's two-op graph.
        intermediate = depthwise.reshape(n * out_h * out_w, c * m).astype(dtype).astype(compute)
        out = intermediate @ pw[0, 0].astype(compute)
    result = out.reshape(n, out_h, out_w, -1).astype(dtype)
    return result if data_format == "NHWC" else np.ascontiguousarray(result.transpose(0, 3, 1, 2))
