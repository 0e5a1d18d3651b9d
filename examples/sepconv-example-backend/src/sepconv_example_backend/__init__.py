"""An example backend for sepconv-conformance, packaged the way a hardware team would ship theirs.

`separable_conv2d` stands where your driver call would: it takes NumPy arrays with the signature of
tf.nn.separable_conv2d and returns a NumPy array. It is a plain NumPy implementation (float32 and float64
only, each computed in its own dtype), with the input checks a first driver bring-up typically has, and
not all the contract asks for: `expectations.yaml` lists what it is known to get wrong.
"""

from __future__ import annotations

import numpy as np

__version__ = "0.3.0"

# What this backend supports; the harness records every other case as `skip`, with the reason.
SUPPORTS = {"dtypes": ["float32", "float64"], "max_elements": 4_000_000}
# What it is known to get wrong (xfail) or must not run (skip), each with a reason.
EXPECTATIONS = "expectations.yaml"


def _pads(size: int, kernel: int, stride: int, rate: int, padding) -> tuple[int, int]:
    span = (kernel - 1) * rate + 1
    if padding == "VALID":
        return 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + span - size, 0)
    return total // 2, total - total // 2  # SAME puts the extra pixel at the end, as TensorFlow does


def separable_conv2d(input, depthwise_filter, pointwise_filter, strides, padding, data_format=None,
                     dilations=None):
    data_format = data_format or "NHWC"
    x = np.asarray(input)
    if x.ndim != 4 or np.ndim(depthwise_filter) != 4 or np.ndim(pointwise_filter) != 4:
        raise ValueError("input and filters must be rank 4")
    if data_format == "NCHW":
        x = x.transpose(0, 2, 3, 1)
    elif data_format != "NHWC":
        raise ValueError(f"unknown data_format {data_format!r}")
    dw, pw = np.asarray(depthwise_filter), np.asarray(pointwise_filter)
    kh, kw, channels, multiplier = dw.shape
    if channels != x.shape[3] or pw.shape[:3] != (1, 1, channels * multiplier):
        raise ValueError("filter shapes do not match the input")
    if dw.size == 0 or pw.size == 0:
        raise ValueError("filters must not be empty")
    sh, sw = (strides[1], strides[2]) if data_format == "NHWC" else (strides[2], strides[3])
    rh, rw = dilations or (1, 1)
    if min(sh, sw, rh, rw) < 1:
        raise ValueError("strides and dilations must be >= 1")
    if isinstance(padding, str):
        (top, bottom), (left, right) = (_pads(x.shape[1], kh, sh, rh, padding),
                                        _pads(x.shape[2], kw, sw, rw, padding))
    else:
        spatial = padding[1:3] if data_format == "NHWC" else padding[2:4]
        (top, bottom), (left, right) = spatial
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h = (x.shape[1] - (kh - 1) * rh - 1) // sh + 1
    out_w = (x.shape[2] - (kw - 1) * rw - 1) // sw + 1
    depthwise = np.zeros((x.shape[0], out_h, out_w, channels, multiplier), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = x[:, i * rh:i * rh + (out_h - 1) * sh + 1:sh, j * rw:j * rw + (out_w - 1) * sw + 1:sw, :]
            depthwise += window[..., None] * dw[i, j]
    out = depthwise.reshape(*depthwise.shape[:3], -1) @ pw[0, 0]
    return out.transpose(0, 3, 1, 2) if data_format == "NCHW" else out
