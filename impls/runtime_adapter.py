"""What the runtime adapters share (onnxruntime, openvino, jax, torch, tensorflow on a device): TensorFlow's
arguments read once into the geometry every runtime is given, the precision modes, and where a rejection
came from.

The mapping to a runtime is the same everywhere:
- padding is always handed over explicitly, as the (top, bottom, left, right) pixels TensorFlow applies:
  SAME is TensorFlow's split (the odd pixel after), with dilation and strides; a runtime's own SAME is
  never used, so no runtime convention can stand in for TensorFlow's;
- the depthwise stage is a grouped convolution (C groups of M filters, output channel c*M + m as in
  TensorFlow), the pointwise stage a 1x1 convolution, each rounded to the dtype in between as TensorFlow's
  two ops are;
- filters are re-laid out in NumPy (an exact copy) and passed as inputs, not constants, so one compiled
  graph serves every case of a shape and dtype; NHWC data is transposed inside the runtime's graph, as a
  converted TensorFlow model does.

Rejections: a forbidden input is handed to the runtime as it is, wherever it can be expressed. What the
runtime refuses raises RuntimeRejection; what it accepts although TensorFlow's contract forbids it raises
AcceptedByRuntime naming the rule and the shape the runtime returned, so the record says which forbidden
inputs each runtime itself accepts (results carry `rejected_by`). Inputs no runtime call can express
(a rank other than 4, batch or channel strides or padding) raise AdapterRejection before any call.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conformance.execution.faults import HarnessFault

ADAPTERS = Path(__file__).resolve().parent  # where the adapters' own code lives (conformance/impls)
# What a bug in Python code raises, and a runtime's C++ core does not (it raises RuntimeError, ValueError,
# TypeError or IndexError, whose innermost Python frame may well be the adapter's call into it).
PROGRAMMING_ERRORS = (NameError, AttributeError, ImportError, AssertionError, KeyError)

# accurate: the runtime's most exact mode (TF32 off, highest precision, OpenVINO's ACCURACY hint), the
# default; default: the runtime as it comes, which is what deployments run.
PRECISIONS = ("accurate", "default")


class AdapterRejection(ValueError):
    """The adapter refused the input by TensorFlow's contract: the runtime cannot express it, or accepted it."""


class RuntimeRejection(ValueError):
    """The runtime itself refused the input."""


class AcceptedByRuntime(AdapterRejection):
    """The runtime accepted an input TensorFlow's contract forbids; the adapter refused it after the call."""


@dataclass(frozen=True)
class Geometry:
    """One call's arguments as every runtime takes them (see the module's docstring)."""

    layout: str  # NHWC or NCHW, the data's layout
    dtype: str
    input_shape: tuple[int, ...]
    channels: int  # of the input
    strides: tuple[int, int]
    rates: tuple[int, int]
    pads: tuple[int, int, int, int]  # top, bottom, left, right: what TensorFlow applies
    violations: tuple[str, ...]  # the contract's rules the arguments break (the runtime is still asked)

    @property
    def key(self) -> tuple[Any, ...]:
        """What a compiled graph depends on besides the filters' shapes."""
        return self.layout, self.dtype, self.input_shape, self.strides, self.rates, self.pads


def _same_split(size: int, kernel: int, stride: int, rate: int) -> tuple[int, int]:
    effective = (kernel - 1) * rate + 1
    out = -(-size // max(stride, 1))
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _explicit(padding: Any, layout: str) -> tuple[int, int, int, int]:
    try:
        pairs = [[int(p) for p in pair] for pair in padding]
    except (TypeError, ValueError):
        pairs = []
    if len(pairs) != 4 or any(len(p) != 2 for p in pairs):
        raise AdapterRejection(f"padding must be 'SAME', 'VALID' or 4 [before, after] pairs, got {padding!r}")
    outer = (pairs[0], pairs[3]) if layout == "NHWC" else (pairs[0], pairs[1])
    if any(p != [0, 0] for p in outer):
        raise AdapterRejection(f"explicit padding of the batch and channel dimensions must be 0, got {padding!r}; "
                               "a runtime's convolution pads only height and width")
    (top, bottom), (left, right) = (pairs[1], pairs[2]) if layout == "NHWC" else (pairs[2], pairs[3])
    return top, bottom, left, right


def read_arguments(x: np.ndarray, dw: np.ndarray, pw: np.ndarray, strides: Sequence[int], padding: Any,
                   data_format: str | None, dilations: Sequence[int] | None) -> Geometry:
    """TensorFlow's arguments as a Geometry; raises AdapterRejection where no runtime call can express them."""
    layout = data_format or "NHWC"
    if layout not in ("NHWC", "NCHW"):
        raise AdapterRejection(f"data_format must be 'NHWC' or 'NCHW', got {layout!r}")
    for name, array in (("input", x), ("depthwise_filter", dw), ("pointwise_filter", pw)):
        if array.ndim != 4:
            raise AdapterRejection(f"{name} must have rank 4, got shape {list(array.shape)}")
    if not (x.dtype == dw.dtype == pw.dtype):
        raise AdapterRejection(f"all tensors must share one dtype, got {x.dtype}, {dw.dtype}, {pw.dtype}")
    rates = tuple(dilations or (1, 1))
    if len(strides) != 4 or len(rates) != 2:
        raise AdapterRejection(f"strides must have 4 values and dilations 2, got {list(strides)} and {list(rates)}")
    outer = (strides[0], strides[3]) if layout == "NHWC" else (strides[0], strides[1])
    if tuple(outer) != (1, 1):
        raise AdapterRejection(f"strides of the batch and channel dimensions must be 1, got {list(strides)}; "
                               "a runtime's convolution strides only height and width")
    sh, sw = (strides[1], strides[2]) if layout == "NHWC" else (strides[2], strides[3])
    rh, rw = rates
    h, w, channels = (x.shape[1], x.shape[2], x.shape[3]) if layout == "NHWC" else (x.shape[2], x.shape[3], x.shape[1])
    kh, kw = dw.shape[0], dw.shape[1]
    if isinstance(padding, str) and padding in ("SAME", "VALID"):
        if padding == "SAME":
            (top, bottom), (left, right) = _same_split(h, kh, sh, rh), _same_split(w, kw, sw, rw)
        else:
            top = bottom = left = right = 0
    else:
        top, bottom, left, right = _explicit(padding, layout)
    violations = []
    if min(sh, sw, rh, rw) < 1:
        violations.append(f"strides and dilations must be >= 1, got {list(strides)} and {list(rates)}")
    elif max(rh, rw) > 1 and max(sh, sw) > 1:
        violations.append(f"if any dilation rate is > 1, all strides must be 1 (strides {list(strides)}, "
                          f"dilations {list(rates)})")
    if min(top, bottom, left, right) < 0:
        violations.append(f"explicit padding must be >= 0, got {padding!r}")
    if dw.shape[2] != channels:
        violations.append(f"depthwise_filter has {dw.shape[2]} input channels, input has {channels}")
    if pw.shape[:3] != (1, 1, dw.shape[2] * dw.shape[3]):
        violations.append(f"pointwise_filter must have shape [1, 1, {dw.shape[2] * dw.shape[3]}, out_channels], "
                          f"got {list(pw.shape)}")
    if dw.size == 0 or pw.size == 0:
        violations.append(f"filters must not be empty, got shapes {list(dw.shape)} and {list(pw.shape)}")
    if not violations:
        eff_h, eff_w = (kh - 1) * rh + 1, (kw - 1) * rw + 1
        out_h, out_w = (h + top + bottom - eff_h) // sh + 1, (w + left + right - eff_w) // sw + 1
        if out_h < 1 or out_w < 1:
            violations.append(f"output size would be {out_h}x{out_w}: the dilated kernel ({eff_h}x{eff_w}) does "
                              f"not fit in the padded input ({h + top + bottom}x{w + left + right})")
    return Geometry(layout, x.dtype.name, tuple(x.shape), channels, (sh, sw), (rh, rw), (top, bottom, left, right),
                    tuple(violations))


def grouped_filter(dw: np.ndarray) -> np.ndarray:
    """TensorFlow's depthwise filter [kh, kw, C, M] as a grouped convolution's [C*M, 1, kh, kw] (OIHW; output
    channel c*M + m, TensorFlow's order)."""
    kh, kw, c, m = dw.shape
    return np.ascontiguousarray(dw.reshape(kh, kw, c * m).transpose(2, 0, 1)[:, None])


def pointwise_oihw(pw: np.ndarray) -> np.ndarray:
    """TensorFlow's pointwise filter [1, 1, C*M, O] as a 1x1 convolution's [O, C*M, 1, 1]."""
    return np.ascontiguousarray(pw.transpose(3, 2, 0, 1))


def checked(geometry: Geometry, runtime: str, run: Callable[[], Any]) -> Any:
    """run()'s output, with the origin of a rejection made explicit (the module's docstring). A programming
    error raised in the adapter's own code (PROGRAMMING_ERRORS, innermost frame in conformance/impls) is a
    bug of ours: a HarnessFault, never the runtime's refusal and never a pass on a forbidden input."""
    try:
        output = run()
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever the runtime raises is its refusal
        text = " ".join(str(error).split())
        frames = traceback.extract_tb(error.__traceback__)
        if isinstance(error, PROGRAMMING_ERRORS) and frames and Path(frames[-1].filename).resolve().parent == ADAPTERS:
            where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}"
            raise HarnessFault("adapter", f"the {runtime} adapter failed at {where}: "
                                          f"{type(error).__name__}: {text[:600]}") from None
        raise RuntimeRejection(f"{runtime} refused it: {type(error).__name__}: {text[:600]}") from None
    if geometry.violations:
        shapes = [list(np.shape(o)) for o in output] if isinstance(output, tuple) else list(np.shape(output))
        raise AcceptedByRuntime(f"{runtime} accepted it (returned shape {shapes}), but "
                               f"TensorFlow's contract forbids it: {'; '.join(geometry.violations)}")
    return output


def describe(runtime: str, version: str, device: str, precision: str) -> str:
    """The version string results record: what ran, where, in which precision mode."""
    return f"{runtime} {version} on {device}, precision {precision}"
