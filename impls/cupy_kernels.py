"""The depthwise stage of the CuPy backend, forward and backward: the CUDA kernels (sepconv_depthwise.cu),
their launchers, and NumPy stand-ins that do exactly the kernels' arithmetic, element by element, so that
everything around the kernels (and their index arithmetic itself) runs in CI, where there is no GPU.

Backward (filter_gradient_*, input_gradient_*): the same geometry; the gradient reaching the intermediate
([N, OH, OW, C, M], storage dtype) in, the depthwise filter's gradient [KH, KW, C, M] or the input's
gradient (in the input's layout) out; the same accumulators, the same rounding, the sums in the order the
source's comment gives.

Both take the same arguments: the input in its own layout (C-contiguous), the [KH, KW, C, M] filter, an
output array of N*OH*OW*C*M elements (the intermediate, [N, OH, OW, C, M] row-major), and a
DepthwiseGeometry, whose fields are the kernel's scalar parameters in order. Storage dtypes: float16,
float32 or float64 (bfloat16 is widened to float32 by the caller). Accumulation: float32 for float16 and
float32, float64 for float64; taps in order (i, j) from +0, every product and sum rounded to nearest even
(the kernel uses __fmul_rn/__fadd_rn, so no FMA); padding is zeros, multiplied like any input value
(0 * Inf = NaN, as in the oracle); the sum is rounded once to the storage dtype (float16: round to
nearest even, overflow to Inf).

Importing this module never imports CuPy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

SOURCE_PATH = Path(__file__).with_name("sepconv_depthwise.cu")
KERNEL_NAMES = {"float16": "sepconv_depthwise_float16", "float32": "sepconv_depthwise_float32",
                "float64": "sepconv_depthwise_float64"}
ACCUMULATOR = {"float16": np.float32, "float32": np.float32, "float64": np.float64}
BACKWARD_KERNEL_NAMES = {stage: {dtype: f"sepconv_{stage}_{dtype}" for dtype in KERNEL_NAMES}
                         for stage in ("filter_gradient", "input_gradient")}
BLOCK = 256  # threads per block
MAX_BLOCKS = 1 << 20  # the grid-stride loop covers the rest
STANDIN_CHUNK = 1 << 18  # elements per vectorized step of the stand-in (bounds its int64 temporaries)


@dataclass(frozen=True)
class DepthwiseGeometry:
    """The kernel's scalar parameters, in the kernel's order (all passed as 64-bit integers).

    step_* are the input's element steps along N, H, W, C: the layout, as the kernel sees it."""

    batch: int
    channels: int
    multiplier: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int
    kernel_h: int
    kernel_w: int
    stride_h: int
    stride_w: int
    rate_h: int
    rate_w: int
    pad_top: int
    pad_left: int
    step_n: int
    step_h: int
    step_w: int
    step_c: int

    @property
    def total(self) -> int:
        """Elements of the intermediate: one kernel thread (one stand-in lane) each."""
        return self.batch * self.out_h * self.out_w * self.channels * self.multiplier

    def kernel_args(self) -> tuple[np.int64, ...]:
        return tuple(np.int64(getattr(self, f.name)) for f in dataclasses.fields(self))


def layout_steps(shape: tuple[int, ...], data_format: str) -> tuple[int, int, int, int]:
    """Element steps (N, H, W, C) of a C-contiguous tensor of `shape` in `data_format`."""
    if data_format == "NHWC":
        _, h, w, c = shape
        return h * w * c, w * c, c, 1
    _, c, h, w = shape
    return c * h * w, w, 1, h * w


def kernel_source() -> str:
    return SOURCE_PATH.read_text(encoding="utf-8")


def check_launch(x: Any, w: Any, out: Any, g: DepthwiseGeometry) -> str:
    """The launch preconditions (the kernel trusts them); returns the storage dtype's name. A failure here
    is a bug in the caller, hence RuntimeError, not the contract's ValueError."""
    name = np.dtype(x.dtype).name
    if name not in KERNEL_NAMES or w.dtype != x.dtype or out.dtype != x.dtype:
        raise RuntimeError(f"depthwise: dtypes {x.dtype}, {w.dtype}, {out.dtype}: expected one of "
                           f"{', '.join(KERNEL_NAMES)}, the same for all three")
    for label, array in (("input", x), ("filter", w), ("out", out)):
        if not array.flags.c_contiguous:
            raise RuntimeError(f"depthwise: {label} is not C-contiguous")
    sizes = {"input": (x.size, g.batch * g.in_h * g.in_w * g.channels),
             "filter": (w.size, g.kernel_h * g.kernel_w * g.channels * g.multiplier),
             "out": (out.size, g.total)}
    for label, (got, want) in sizes.items():
        if got != want:
            raise RuntimeError(f"depthwise: {label} has {got} elements, the geometry needs {want}")
    return name


def depthwise_standin(x: np.ndarray, w: np.ndarray, out: np.ndarray, g: DepthwiseGeometry) -> None:
    """The kernel, in NumPy: the same index arithmetic on flat arrays, the same rounding, in chunks of
    lanes instead of a grid of threads."""
    name = check_launch(x, w, out, g)
    acc_dtype = ACCUMULATOR[name]
    x_flat, w_flat, out_flat = x.reshape(-1), w.reshape(-1), out.reshape(-1)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf follow IEEE rules, as on the device
        for start in range(0, g.total, STANDIN_CHUNK):
            index = np.arange(start, min(start + STANDIN_CHUNK, g.total), dtype=np.int64)
            rest = index
            m = rest % g.multiplier
            rest = rest // g.multiplier
            c = rest % g.channels
            rest = rest // g.channels
            ox = rest % g.out_w
            rest = rest // g.out_w
            oy = rest % g.out_h
            b = rest // g.out_h
            acc = np.zeros(index.size, dtype=acc_dtype)
            for i in range(g.kernel_h):
                iy = oy * g.stride_h - g.pad_top + i * g.rate_h
                inside_h = (iy >= 0) & (iy < g.in_h)
                for j in range(g.kernel_w):
                    ix = ox * g.stride_w - g.pad_left + j * g.rate_w
                    inside = inside_h & (ix >= 0) & (ix < g.in_w)
                    at = np.where(inside, b * g.step_n + iy * g.step_h + ix * g.step_w + c * g.step_c, 0)
                    xv = np.where(inside, x_flat[at].astype(acc_dtype), acc_dtype(0))  # padding: zeros
                    wv = w_flat[((i * g.kernel_w + j) * g.channels + c) * g.multiplier + m].astype(acc_dtype)
                    acc = acc + xv * wv
            out_flat[start:start + index.size] = acc.astype(out.dtype)


def check_backward_launch(data: Any, grad: Any, out: Any, g: DepthwiseGeometry, stage: str) -> str:
    """check_launch for a backward kernel: `data` is the input (filter_gradient) or the filter
    (input_gradient), `grad` the intermediate's gradient; returns the storage dtype's name."""
    name = np.dtype(data.dtype).name
    if name not in KERNEL_NAMES or grad.dtype != data.dtype or out.dtype != data.dtype:
        raise RuntimeError(f"{stage}: dtypes {data.dtype}, {grad.dtype}, {out.dtype}: expected one of "
                           f"{', '.join(KERNEL_NAMES)}, the same for all three")
    input_size = g.batch * g.in_h * g.in_w * g.channels
    filter_size = g.kernel_h * g.kernel_w * g.channels * g.multiplier
    sizes = {"data": (data.size, input_size if stage == "filter_gradient" else filter_size),
             "grad": (grad.size, g.total),
             "out": (out.size, filter_size if stage == "filter_gradient" else input_size)}
    for label, array in (("data", data), ("grad", grad), ("out", out)):
        if not array.flags.c_contiguous:
            raise RuntimeError(f"{stage}: {label} is not C-contiguous")
        if sizes[label][0] != sizes[label][1]:
            raise RuntimeError(f"{stage}: {label} has {sizes[label][0]} elements, the geometry needs {sizes[label][1]}")
    return name


def filter_gradient_standin(x: np.ndarray, grad: np.ndarray, out: np.ndarray, g: DepthwiseGeometry) -> None:
    """The filter_gradient kernel in NumPy: one lane per filter element, the sum over (b, oy, ox) in order."""
    acc_dtype = ACCUMULATOR[check_backward_launch(x, grad, out, g, "filter_gradient")]
    x_flat, grad_flat = x.reshape(-1), grad.reshape(-1)
    index = np.arange(g.kernel_h * g.kernel_w * g.channels * g.multiplier, dtype=np.int64)
    m, c = index % g.multiplier, (index // g.multiplier) % g.channels
    j, i = (index // (g.multiplier * g.channels)) % g.kernel_w, index // (g.multiplier * g.channels * g.kernel_w)
    acc = np.zeros(index.size, dtype=acc_dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        for b in range(g.batch):
            for oy in range(g.out_h):
                iy = oy * g.stride_h - g.pad_top + i * g.rate_h
                inside_h = (iy >= 0) & (iy < g.in_h)
                for ox in range(g.out_w):
                    ix = ox * g.stride_w - g.pad_left + j * g.rate_w
                    inside = inside_h & (ix >= 0) & (ix < g.in_w)
                    at = np.where(inside, b * g.step_n + iy * g.step_h + ix * g.step_w + c * g.step_c, 0)
                    xv = np.where(inside, x_flat[at].astype(acc_dtype), acc_dtype(0))  # padding: zeros
                    gv = grad_flat[(((b * g.out_h + oy) * g.out_w + ox) * g.channels + c) * g.multiplier + m]
                    acc = acc + xv * gv.astype(acc_dtype)
    out.reshape(-1)[:] = acc.astype(out.dtype)


def input_gradient_standin(w: np.ndarray, grad: np.ndarray, out: np.ndarray, g: DepthwiseGeometry) -> None:
    """The input_gradient kernel in NumPy: one lane per input element, the sum over taps (i, j), then m."""
    acc_dtype = ACCUMULATOR[check_backward_launch(w, grad, out, g, "input_gradient")]
    w_flat, grad_flat, out_flat = w.reshape(-1), grad.reshape(-1), out.reshape(-1)
    with np.errstate(invalid="ignore", over="ignore"):
        total = g.batch * g.in_h * g.in_w * g.channels
        for start in range(0, total, STANDIN_CHUNK):
            index = np.arange(start, min(start + STANDIN_CHUNK, total), dtype=np.int64)
            c, x = index % g.channels, (index // g.channels) % g.in_w
            y, b = (index // (g.channels * g.in_w)) % g.in_h, index // (g.channels * g.in_w * g.in_h)
            acc = np.zeros(index.size, dtype=acc_dtype)
            for i in range(g.kernel_h):
                ny = y + g.pad_top - i * g.rate_h
                oy = ny // g.stride_h
                reads_h = (ny >= 0) & (ny % g.stride_h == 0) & (oy < g.out_h)
                for j in range(g.kernel_w):
                    nx = x + g.pad_left - j * g.rate_w
                    ox = nx // g.stride_w
                    reads = reads_h & (nx >= 0) & (nx % g.stride_w == 0) & (ox < g.out_w)
                    for m in range(g.multiplier):
                        at = np.where(reads, (((b * g.out_h + oy) * g.out_w + ox) * g.channels + c) * g.multiplier + m,
                                      0)
                        gv = grad_flat[at].astype(acc_dtype)
                        wv = w_flat[((i * g.kernel_w + j) * g.channels + c) * g.multiplier + m].astype(acc_dtype)
                        acc = np.where(reads, acc + gv * wv, acc)  # a tap that reads nothing adds nothing
            out_flat[b * g.step_n + y * g.step_h + x * g.step_w + c * g.step_c] = acc.astype(out.dtype)


@lru_cache(maxsize=1)
def _module() -> Any:
    import cupy

    # Compiled by NVRTC on first use and cached by CuPy (in memory and on disk, keyed by the source).
    return cupy.RawModule(code=kernel_source(), options=("--std=c++17",))


def depthwise_cuda(x: Any, w: Any, out: Any, g: DepthwiseGeometry) -> None:
    """Launch the kernel on CuPy arrays (asynchronous on the current stream, like any CuPy operation)."""
    name = check_launch(x, w, out, g)
    _launch(KERNEL_NAMES[name], g.total, (x, w, out), g)


def _launch(name: str, total: int, args: tuple[Any, ...], g: DepthwiseGeometry) -> None:
    if total == 0:  # an empty grid is an invalid launch
        return
    blocks = min(-(-total // BLOCK), MAX_BLOCKS)
    _module().get_function(name)((blocks,), (BLOCK,), (*args, *g.kernel_args()))


def filter_gradient_cuda(x: Any, grad: Any, out: Any, g: DepthwiseGeometry) -> None:
    name = check_backward_launch(x, grad, out, g, "filter_gradient")
    _launch(BACKWARD_KERNEL_NAMES["filter_gradient"][name], out.size, (x, grad, out), g)


def input_gradient_cuda(w: Any, grad: Any, out: Any, g: DepthwiseGeometry) -> None:
    name = check_backward_launch(w, grad, out, g, "input_gradient")
    _launch(BACKWARD_KERNEL_NAMES["input_gradient"][name], out.size, (w, grad, out), g)
