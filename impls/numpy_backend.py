"""tf.nn.separable_conv2d in NumPy: the bundled CPU implementation under test.

Numerics, per dtype:
- float32, float64: computed in the dtype itself. The depthwise stage accumulates the kh*kw taps of each
  output element in order (i, j) (the first product, then one rounded addition per further tap); the
  intermediate is held in the dtype; the pointwise stage is one BLAS matmul (BLAS picks the order of its
  C*M-term sums; the intermediate's channels are ordered (m, c), not TensorFlow's (c, m), with the
  pointwise filter's rows permuted to match, so the same products are summed).
- float16, bfloat16: computed in float32 (NumPy's float16 and ml_dtypes' bfloat16 arithmetic would round
  every product); the intermediate is rounded to the dtype (round to nearest even), as TensorFlow's
  two-op graph does; the pointwise stage accumulates in float32 and rounds once at the end.
- NaN and Inf propagate by IEEE rules; padding contributes exact zeros (products 0 * w with the weights,
  as if the input were zero-padded). No flush of subnormals.

Speed (the arithmetic above is the same whatever the blocking or the thread count: results are bitwise
identical run to run and across settings):
- the depthwise stage runs over blocks of output rows of one image. A block's input rows (with their halo)
  are copied once into a per-thread buffer in the compute dtype, NHWC (NCHW input is transposed in this
  copy), zero-padded, each pixel's C channels repeated for the M multipliers, and for a column stride
  s > 1 the columns split into s phases; so every tap reads whole contiguous rows of out_w * C * M values;
- the products of all kh*kw taps come from one NumPy multiply per column phase (a strided view with one
  axis per tap), then one sum over the tap axis, which NumPy performs sequentially in tap order; the
  products of a few rows at a time stay in cache, and each NumPy call is large, since per-call overhead
  holds the GIL the threads share. The sum lands in the intermediate itself: nothing is copied after;
- blocks are shared out dynamically to threads (NumPy's ufuncs release the GIL): by default half the
  cores this process may use, at least one. On the 2-core machine of docs/performance.md one thread is
  faster than two: BLAS's worker threads spin-wait for a while after each matmul and take the other
  core, and two threads pay the per-call overhead under one GIL. $SEPCONV_NUMPY_THREADS overrides it;
- the pointwise stage is one BLAS matmul over every image (BLAS threads it itself; one call, because
  each call costs BLAS a wake-up of its threads); NCHW results come from pointwise^T @ intermediate^T
  (BLAS takes the transposes as strides), copied per image in contiguous runs of out_h * out_w values.

Self-contained on purpose (no import from the harness): it is an implementation under test, and a
template for a new backend.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

__version__ = "2.0"
_COMPUTE_DTYPE = {"float16": np.float32, "bfloat16": np.float32, "float32": np.float32, "float64": np.float64}
# Tiles: a block of output rows of one image is one task (its input rows are copied once, with their halo
# of kh - 1 rows, so blocks should not be thin); within it, the taps' products are formed a few rows at a
# time. Bytes of a block's intermediate, and bytes of the products of all taps at once: large enough that
# each NumPy call does tens of microseconds of work (per-call overhead holds the GIL, which the threads
# share), small enough to stay in the L2/L3 cache until used.
_BLOCK_BYTES = 1 << 20
_PRODUCT_BYTES = 1 << 21
_TASKS_PER_THREAD = 4  # blocks are made smaller where there would be fewer, for balance
# Below this many multiply-adds (N*out_h*out_w*C*M*kh*kw) a call runs on one thread: starting threads
# costs more than they save.
_PARALLEL_WORK = 1 << 21
_THREADS_ENV = "SEPCONV_NUMPY_THREADS"


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
    if dw.size == 0 or pw.size == 0:  # a zero kernel size, multiplier or out_channels
        _fail(f"filters must not be empty, got shapes {list(dw.shape)} and {list(pw.shape)}")
    if not (x.dtype == dw.dtype == pw.dtype):
        _fail(f"all tensors must share one dtype, got {x.dtype}, {dw.dtype}, {pw.dtype}")
    if x.dtype.name not in _COMPUTE_DTYPE:
        _fail(f"unsupported dtype {x.dtype}")
    return sh, sw, rh, rw


def _configured_threads() -> tuple[int | None, str | None]:
    """($SEPCONV_NUMPY_THREADS as a count, or None for the default; why it is invalid, or None)."""
    text = os.environ.get(_THREADS_ENV, "").strip()
    if not text:
        return None, None
    if not text.isdigit() or int(text) < 1:
        return None, f"{_THREADS_ENV} must be a positive integer, got {text!r}"
    return int(text), None


def unavailable_reason() -> str | None:
    """Why this backend cannot run as configured (read by the harness before a run), or None."""
    return _configured_threads()[1]


def threads() -> int:
    """Threads for the depthwise stage: $SEPCONV_NUMPY_THREADS, else half the cores this process may use
    (at least 1), leaving the rest to BLAS's workers, which spin for a while after each matmul. (BLAS
    threads the pointwise stage itself, as its own settings say, e.g. OPENBLAS_NUM_THREADS.)"""
    count, _ = _configured_threads()
    if count is not None:
        return count
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


class _Tiles:
    """The depthwise stage of one call, cut into tiles of output rows (one image each).

    Buffers are per thread: `buffer` holds a tile's input rows as [phase, row, column, m, c] in the compute
    dtype, zero-padded (padding columns are zeroed once, at allocation, and never written; padding rows
    are zeroed where a tile reaches them), with column phase p holding padded columns p, p + sw, ...
    """

    def __init__(self, x: np.ndarray, nchw: bool, dw: np.ndarray, intermediate: np.ndarray,
                 geometry: tuple[int, ...], dtype: np.dtype, threads: int):
        self.x, self.nchw, self.intermediate = x, nchw, intermediate
        self.compute = intermediate.dtype
        # float16/bfloat16: the intermediate is rounded to the operator's dtype, tile by tile
        self.rounding = dtype if dtype != self.compute else None
        self.n, self.h, self.w, self.c, self.sh, self.sw, self.rh, self.rw, self.top, self.left = geometry
        self.kh, self.kw, _, self.m = dw.shape
        _, self.out_h, self.out_w, self.e = intermediate.shape
        # Weights in the intermediate's channel order (m, c), repeated out_w times: one row per tap.
        by_tap = dw.astype(self.compute).transpose(0, 1, 3, 2).reshape(self.kh, self.kw, 1, self.e)
        self.weight_rows = np.ascontiguousarray(np.broadcast_to(by_tap, (self.kh, self.kw, self.out_w, self.e)))
        self.weight_rows = self.weight_rows.reshape(self.kh, self.kw, self.out_w * self.e)
        row_bytes = max(self.out_w * self.e * self.compute.itemsize, 1)
        self.rows = max(1, min(self.out_h, _BLOCK_BYTES // row_bytes,
                               -(-self.n * self.out_h // (_TASKS_PER_THREAD * threads))))
        self.sub_rows = max(1, min(self.rows, _PRODUCT_BYTES // (max(self.kh * self.kw, 1) * row_bytes)))
        self.buffer_rows = (self.rows - 1) * self.sh + (self.kh - 1) * self.rh + 1
        self.columns = self.out_w + (self.kw - 1) * self.rw // self.sw  # per phase (rw > 1 only with sw = 1)
        # Per phase p: the phase's columns [first, end) that hold input columns, from input column `start`.
        self.phases = []
        for p in range(self.sw):
            first = max(0, -(-(self.left - p) // self.sw))
            end = max(first, min(self.columns, -(-(self.w + self.left - p) // self.sw)))
            self.phases.append((p, first, end, first * self.sw + p - self.left))

    def tasks(self) -> list[tuple[int, int, int]]:
        return [(b, r0, min(r0 + self.rows, self.out_h)) for b in range(self.n)
                for r0 in range(0, self.out_h, self.rows)]

    def run(self, next_task: Iterator[tuple[int, int, int]], lock: threading.Lock) -> None:
        """Compute tiles until none is left (the body of each thread)."""
        buffer = np.zeros((self.sw, self.buffer_rows, self.columns, self.m, self.c), dtype=self.compute)
        products = np.empty((self.kh, self.kw, self.sub_rows, self.out_w * self.e), dtype=self.compute)
        rounded = None if self.rounding is None else np.empty((self.sub_rows, self.out_w * self.e), self.rounding)
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf propagate silently (per thread)
            while True:
                with lock:
                    task = next(next_task, None)
                if task is None:
                    return
                b, r0, r1 = task
                self._fill(buffer, b, r0, r1 - r0)
                for s0 in range(r0, r1, self.sub_rows):
                    self._accumulate(buffer[:, (s0 - r0) * self.sh:], products, rounded, b, s0,
                                     min(s0 + self.sub_rows, r1))

    def _fill(self, buffer: np.ndarray, b: int, r0: int, count: int) -> None:
        """Copy the input rows that output rows r0 .. r0 + count - 1 read into `buffer`."""
        needed = (count - 1) * self.sh + (self.kh - 1) * self.rh + 1
        first_row = r0 * self.sh - self.top  # input row of buffer row 0
        lo, hi = max(0, -first_row), max(0, min(needed, self.h - first_row))
        if lo > 0:
            buffer[:, :lo] = 0
        if hi < needed:
            buffer[:, max(hi, lo):needed] = 0
        if hi <= lo:
            return
        for p, first, end, start in self.phases:
            if end <= first:
                continue
            columns = slice(start, start + (end - first - 1) * self.sw + 1, self.sw)
            if self.nchw:  # gather the channels of each pixel: the one transposing copy of the input
                source = self.x[b, :, first_row + lo:first_row + hi, columns].transpose(1, 2, 0)
            else:
                source = self.x[b, first_row + lo:first_row + hi, columns]
            target = buffer[p, lo:hi, first:end]
            np.copyto(target[:, :, 0], source)
            for k in range(1, self.m):  # the channel multiplier: repeat the pixel's channels
                np.copyto(target[:, :, k], target[:, :, 0])

    def _accumulate(self, buffer: np.ndarray, products: np.ndarray, rounded: np.ndarray | None, b: int, r0: int,
                    r1: int) -> None:
        """Sum the taps in order (i, j) into the intermediate's rows r0 .. r1 - 1 (a contiguous block).

        The products of all taps come from one multiply per column phase (strided views of the buffer, one
        axis per tap), then one sequential sum over the taps: few NumPy calls, each a lot of work."""
        count, row = r1 - r0, self.out_w * self.e
        step = buffer.strides[1]  # one buffer row
        item = buffer.itemsize
        tap_column = self.rw if self.sw == 1 else 1  # columns between taps j and j + sw (same phase)
        for p in range(min(self.sw, self.kw)):
            taps = len(range(p, self.kw, self.sw))
            windows = np.lib.stride_tricks.as_strided(
                buffer[p], shape=(self.kh, taps, count, row),
                strides=(self.rh * step, tap_column * self.e * item, self.sh * step, item), writeable=False)
            np.multiply(windows, self.weight_rows[:, p::self.sw, None, :], out=products[:, p::self.sw, :count])
        acc = self.intermediate[b, r0:r1].reshape(count, row)
        # Along a non-contiguous axis NumPy's sum is sequential: ((t0 + t1) + t2) + ..., in tap order.
        np.add.reduce(products[:, :, :count].reshape(self.kh * self.kw, count, row), axis=0, out=acc)
        if rounded is not None:  # round to the operator's dtype (nearest even) and widen back, exactly
            np.copyto(rounded[:count], acc, casting="unsafe")
            np.copyto(acc, rounded[:count])


def _run_tiles(tiles: _Tiles, thread_count: int) -> None:
    tasks = tiles.tasks()
    next_task, lock = iter(tasks), threading.Lock()
    workers = min(thread_count, len(tasks))
    if workers <= 1:
        tiles.run(next_task, lock)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sepconv-numpy") as pool:
        for future in [pool.submit(tiles.run, next_task, lock) for _ in range(workers)]:
            future.result()  # re-raises a worker's exception (e.g. MemoryError)


def separable_conv2d(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
                     padding: Any, data_format: str | None = None,
                     dilations: Sequence[int] | None = None) -> np.ndarray:
    """Same signature and semantics as tf.nn.separable_conv2d (without `name`)."""
    x, dw, pw = np.asarray(input), np.asarray(depthwise_filter), np.asarray(pointwise_filter)
    data_format = data_format or "NHWC"
    dilations = [1, 1] if dilations is None else list(dilations)
    sh, sw, rh, rw = _check(x, dw, pw, list(strides), data_format, dilations)
    dtype = x.dtype
    compute = np.dtype(_COMPUTE_DTYPE[dtype.name])
    nchw = data_format == "NCHW"
    n, h, w, c = (x.shape[0], x.shape[2], x.shape[3], x.shape[1]) if nchw else x.shape
    kh, kw, _, m = dw.shape
    out_channels = pw.shape[3]
    top, _, left, _, out_h, out_w = _padding_and_output(h, w, kh, kw, sh, sw, rh, rw, padding, data_format)

    # The intermediate, NHWC with channels ordered (m, c); the pointwise filter's rows permuted to match.
    intermediate = np.empty((n, out_h, out_w, c * m), dtype=compute)
    pointwise = pw[0, 0].astype(compute).reshape(c, m, out_channels).transpose(1, 0, 2).reshape(c * m, out_channels)
    # float16/bfloat16 inputs are widened once, in one contiguous pass (NumPy's float16 casts are slow
    # on strided data); exact, so the arithmetic is unchanged.
    source = x if dtype == compute else x.astype(compute)
    thread_count = threads() if intermediate.size * kh * kw >= _PARALLEL_WORK else 1
    tiles = _Tiles(source, nchw, dw, intermediate, (n, h, w, c, sh, sw, rh, rw, top, left), dtype, thread_count)
    _run_tiles(tiles, thread_count)
    with np.errstate(invalid="ignore", over="ignore"):
        flat = intermediate.reshape(n * out_h * out_w, c * m)
        if not nchw:
            result = np.matmul(flat, pointwise)
            return result.reshape(n, out_h, out_w, out_channels).astype(dtype, copy=False)
        # One BLAS call for every image (each call costs BLAS a wake-up of its threads): pointwise^T @ flat^T
        # (BLAS takes the transposes as strides) is [O, N * Ho * Wo]; each image's [O, Ho * Wo] block of it
        # is then copied in contiguous runs of Ho * Wo values (converting to the dtype on the way).
        result = np.matmul(pointwise.T, flat.T).reshape(out_channels, n, out_h * out_w)
        out = np.empty((n, out_channels, out_h, out_w), dtype=dtype)
        np.copyto(out.reshape(n, out_channels, out_h * out_w), result.transpose(1, 0, 2), casting="unsafe")
        return out


def separable_conv2d_backprop(input: Any, depthwise_filter: Any, pointwise_filter: Any, output_gradient: Any,
                              strides: Sequence[int], padding: Any, data_format: str | None = None,
                              dilations: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gradients of separable_conv2d for `output_gradient` (dL/d output, the output's shape and layout):
    (input_gradient, depthwise_filter_gradient, pointwise_filter_gradient), as tf.GradientTape gives them.

    Numerics: computed in the compute dtype above (float32 for float16/bfloat16); as in TensorFlow's graph,
    the depthwise intermediate and the gradient reaching it (output_gradient @ pointwise^T) are rounded to
    the operator's dtype before the stages that read them, and each gradient is rounded once at the end.
    Vectorized, no loop over pixels: with multiplier 1, one elementwise pass per tap (_backprop_by_tap);
    above, one BLAS product per channel (_backprop_by_channel). The pointwise stages are BLAS products
    either way; the filter gradients' sums over N*Ho*Wo are NumPy's pairwise sums or BLAS's, in their order."""
    x, dw, pw = np.asarray(input), np.asarray(depthwise_filter), np.asarray(pointwise_filter)
    data_format = data_format or "NHWC"
    dilations = [1, 1] if dilations is None else list(dilations)
    sh, sw, rh, rw = _check(x, dw, pw, list(strides), data_format, dilations)
    dtype, nchw = x.dtype, data_format == "NCHW"
    compute = np.dtype(_COMPUTE_DTYPE[dtype.name])
    nhwc = (x.transpose(0, 2, 3, 1) if nchw else x).astype(compute)
    n, h, w, c = nhwc.shape
    kh, kw, _, m = dw.shape
    out_channels = pw.shape[3]
    top, bottom, left, right, out_h, out_w = _padding_and_output(h, w, kh, kw, sh, sw, rh, rw, padding, data_format)
    grad = np.asarray(output_gradient)
    expected = (n, out_channels, out_h, out_w) if nchw else (n, out_h, out_w, out_channels)
    if grad.shape != expected or grad.dtype != dtype:
        _fail(f"output_gradient must have the output's shape {list(expected)} and dtype {dtype}, "
              f"got {list(grad.shape)} {grad.dtype}")
    positions = n * out_h * out_w
    grad = (grad.transpose(0, 2, 3, 1) if nchw else grad).astype(compute).reshape(positions, out_channels)
    weights, pointwise = dw.astype(compute), pw[0, 0].astype(compute)
    geometry = (top, bottom, left, right, out_h, out_w, sh, sw, rh, rw)

    def rounded(values: np.ndarray) -> np.ndarray:  # to the operator's dtype and back (float16/bfloat16)
        return values if dtype == compute else values.astype(dtype).astype(compute)

    stages = _backprop_by_channel if m > 1 else _backprop_by_tap
    with np.errstate(invalid="ignore", over="ignore"):
        padded_gradient, depthwise_gradient, pointwise_gradient = stages(nhwc, weights, pointwise, grad, geometry,
                                                                         rounded)
    input_gradient = padded_gradient[:, top:top + h, left:left + w, :]
    if nchw:
        input_gradient = input_gradient.transpose(0, 3, 1, 2)
    return (np.ascontiguousarray(input_gradient).astype(dtype), depthwise_gradient.astype(dtype),
            pointwise_gradient.astype(dtype))


_Stages = tuple[np.ndarray, np.ndarray, np.ndarray]  # padded input gradient (NHWC), depthwise, pointwise gradients


def _backprop_by_tap(x: np.ndarray, weights: np.ndarray, pointwise: np.ndarray, grad: np.ndarray,
                     geometry: tuple[int, ...], rounded: Any) -> _Stages:
    """Multiplier 1: NHWC, one elementwise pass per tap and stage (each tap's window of the padded input is a
    strided view); the two pointwise stages are BLAS products."""
    top, bottom, left, right, out_h, out_w, sh, sw, rh, rw = geometry
    n, _, _, c = x.shape
    kh, kw = weights.shape[:2]
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    taps = [(a, b, slice(a * rh, a * rh + (out_h - 1) * sh + 1, sh), slice(b * rw, b * rw + (out_w - 1) * sw + 1, sw))
            for a in range(kh) for b in range(kw)]
    intermediate = np.zeros((n, out_h, out_w, c), dtype=x.dtype)
    for a, b, rows, columns in taps:
        intermediate += padded[:, rows, columns, :] * weights[a, b, :, 0]
    intermediate = rounded(intermediate).reshape(-1, c)
    to_intermediate = rounded(grad @ pointwise.T).reshape(n, out_h, out_w, c)
    pointwise_gradient = (intermediate.T @ grad).reshape(1, 1, c, -1)
    depthwise_gradient = np.empty(weights.shape, dtype=x.dtype)
    padded_gradient = np.zeros(padded.shape, dtype=x.dtype)
    for a, b, rows, columns in taps:
        depthwise_gradient[a, b, :, 0] = np.einsum("nijc,nijc->c", padded[:, rows, columns, :], to_intermediate)
        padded_gradient[:, rows, columns, :] += to_intermediate * weights[a, b, :, 0]
    return padded_gradient, depthwise_gradient, pointwise_gradient


def _backprop_by_channel(x: np.ndarray, weights: np.ndarray, pointwise: np.ndarray, grad: np.ndarray,
                         geometry: tuple[int, ...], rounded: Any) -> _Stages:
    """Multiplier > 1: channels first (one transpose of the input), every stage a batch of one BLAS product
    per channel (im2col: each channel's windows gathered once as a [kh*kw, N*Ho*Wo] matrix); the input
    gradient's per-tap shares are then added into the padded input tap by tap."""
    top, bottom, left, right, out_h, out_w, sh, sw, rh, rw = geometry
    n, h, w, c = x.shape
    kh, kw, _, m = weights.shape
    taps, positions = kh * kw, n * out_h * out_w
    padded = np.zeros((c, n, h + top + bottom, w + left + right), dtype=x.dtype)
    padded[:, :, top:top + h, left:left + w] = x.transpose(3, 0, 1, 2)
    s0, s1, s2, s3 = padded.strides
    windows = np.lib.stride_tricks.as_strided(padded, (c, kh, kw, n, out_h, out_w),
                                              (s0, s2 * rh, s3 * rw, s1, s2 * sh, s3 * sw), writeable=False)
    patches = np.ascontiguousarray(windows).reshape(c, taps, positions)
    kernel = np.ascontiguousarray(weights.reshape(taps, c, m).transpose(1, 0, 2))  # [C, taps, M]
    # The intermediate and the gradient reaching it, [C*M, N*Ho*Wo], rows in TensorFlow's (c, m) order.
    intermediate = rounded(np.matmul(kernel.transpose(0, 2, 1), patches)).reshape(c * m, positions)
    to_intermediate = rounded(pointwise @ grad.T)
    pointwise_gradient = (intermediate @ grad).reshape(1, 1, c * m, -1)
    per_channel = to_intermediate.reshape(c, m, positions)
    depthwise_gradient = np.matmul(patches, per_channel.transpose(0, 2, 1)).transpose(1, 0, 2).reshape(kh, kw, c, m)
    shares = np.matmul(kernel, per_channel).reshape(c, taps, n, out_h, out_w)
    padded_gradient = np.zeros(padded.shape, dtype=x.dtype)
    for tap in range(taps):
        a, b = divmod(tap, kw)
        padded_gradient[:, :, a * rh:a * rh + (out_h - 1) * sh + 1:sh, b * rw:b * rw + (out_w - 1) * sw + 1:sw] \
            += shares[:, tap]
    return padded_gradient.transpose(1, 2, 3, 0), depthwise_gradient, pointwise_gradient
