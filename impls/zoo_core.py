"""What the zoo's implementations share: argument validation and output geometry.

The correct alternatives (conformance.impls.alternatives) and the mutants (conformance.impls.mutants)
validate and resolve the geometry here, not through conformance.impls.numpy_backend: the backend under
test may change (it is rewritten for speed) without moving the zoo, and a bug in it cannot hide the same
bug in the zoo. The checks raise ValueError for everything the operator's contract forbids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# The precision a careful backend computes in: float32 for the 16-bit types (as on most hardware and in
# TensorFlow), the dtype itself otherwise.
COMPUTE_DTYPE = {"float16": np.float32, "bfloat16": np.float32, "float32": np.float32, "float64": np.float64}


def fail(message: str) -> None:
    raise ValueError(f"separable_conv2d: {message}")


def explicit_padding(padding: Any, data_format: str) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from TensorFlow's 4 [before, after] pairs in layout order."""
    try:
        pairs = [[int(p) for p in pair] for pair in padding]
    except (TypeError, ValueError):
        pairs = []
    if len(pairs) != 4 or any(len(p) != 2 for p in pairs):
        fail(f"padding must be 'SAME', 'VALID' or 4 [before, after] pairs, got {padding!r}")
    outer = (pairs[0], pairs[3]) if data_format == "NHWC" else (pairs[0], pairs[1])
    if any(p != [0, 0] for p in outer):
        fail(f"explicit padding of the batch and channel dimensions must be 0, got {padding!r}")
    (top, bottom), (left, right) = (pairs[1], pairs[2]) if data_format == "NHWC" else (pairs[2], pairs[3])
    if min(top, bottom, left, right) < 0:
        fail(f"explicit padding must be >= 0, got {padding!r}")
    return top, bottom, left, right


def same_split(size: int, effective_kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis: the odd pixel goes after (bottom/right)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + effective_kernel - size, 0)
    return total // 2, total - total // 2


def padding_and_output(h: int, w: int, kh: int, kw: int, sh: int, sw: int, rh: int, rw: int, padding: Any,
                       data_format: str) -> tuple[int, int, int, int, int, int]:
    """(top, bottom, left, right, out_h, out_w); raises where the dilated kernel does not fit."""
    eff_h, eff_w = (kh - 1) * rh + 1, (kw - 1) * rw + 1
    named = padding if isinstance(padding, str) else None  # explicit padding may be a list or an array
    if named == "SAME":
        (top, bottom), (left, right) = same_split(h, eff_h, sh), same_split(w, eff_w, sw)
    elif named == "VALID":
        top = bottom = left = right = 0
    else:
        top, bottom, left, right = explicit_padding(padding, data_format)
    out_h = (h + top + bottom - eff_h) // sh + 1
    out_w = (w + left + right - eff_w) // sw + 1
    if out_h < 1 or out_w < 1:
        fail(f"output size would be {out_h}x{out_w}: the dilated kernel ({eff_h}x{eff_w}) does not fit "
             f"in the padded input ({h + top + bottom}x{w + left + right})")
    return top, bottom, left, right, out_h, out_w


def check(x: np.ndarray, dw: np.ndarray, pw: np.ndarray, strides: Sequence[int], data_format: str,
          dilations: Sequence[int], skip: frozenset[str] = frozenset()) -> tuple[int, int, int, int]:
    """Validate the arguments; returns (sh, sw, rh, rw). `skip` names rules left unchecked, for mutants
    that accept input the contract forbids: "rate_with_stride", "outer_strides"."""
    if data_format not in ("NHWC", "NCHW"):
        fail(f"data_format must be 'NHWC' or 'NCHW', got {data_format!r}")
    for name, array in (("input", x), ("depthwise_filter", dw), ("pointwise_filter", pw)):
        if array.ndim != 4:
            fail(f"{name} must have rank 4, got shape {list(array.shape)}")
    if len(strides) != 4 or len(dilations) != 2:
        fail(f"strides must have 4 values and dilations 2, got {list(strides)} and {list(dilations)}")
    outer = (strides[0], strides[3]) if data_format == "NHWC" else (strides[0], strides[1])
    if tuple(outer) != (1, 1) and "outer_strides" not in skip:
        fail(f"strides of the batch and channel dimensions must be 1, got {list(strides)}")
    sh, sw = (strides[1], strides[2]) if data_format == "NHWC" else (strides[2], strides[3])
    rh, rw = dilations
    if min(sh, sw, rh, rw) < 1:
        fail(f"strides and dilations must be >= 1, got {list(strides)} and {list(dilations)}")
    if max(rh, rw) > 1 and max(sh, sw) > 1 and "rate_with_stride" not in skip:
        fail(f"if any dilation rate is > 1, all strides must be 1 (strides {list(strides)}, "
             f"dilations {list(dilations)})")
    if dw.size == 0 or pw.size == 0:  # a zero kernel size, multiplier or out_channels
        fail(f"filters must not be empty, got shapes {list(dw.shape)} and {list(pw.shape)}")
    channels = x.shape[3] if data_format == "NHWC" else x.shape[1]
    if dw.shape[2] != channels:
        fail(f"depthwise_filter has {dw.shape[2]} input channels, input has {channels}")
    if pw.shape[:3] != (1, 1, dw.shape[2] * dw.shape[3]):
        fail(f"pointwise_filter must have shape [1, 1, {dw.shape[2] * dw.shape[3]}, out_channels], "
             f"got {list(pw.shape)}")
    if not (x.dtype == dw.dtype == pw.dtype):
        fail(f"all tensors must share one dtype, got {x.dtype}, {dw.dtype}, {pw.dtype}")
    if x.dtype.name not in COMPUTE_DTYPE:
        fail(f"unsupported dtype {x.dtype}")
    return sh, sw, rh, rw
