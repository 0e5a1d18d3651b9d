"""tf.nn.separable_conv2d on a CUDA GPU through CuPy: the bundled `cupy` backend.

Host arrays in, host array out (the backend signature); the work is done on the device: a CUDA kernel
for the depthwise stage (impls/sepconv_depthwise.cu, one thread per intermediate element) and cuBLAS,
through cupy.matmul, for the pointwise stage. The backward pass (separable_conv2d_backprop,
run_backward_pipeline) adds two kernels, for the depthwise filter's and the input's gradients, and two
GEMMs (docs/backward.md).

Numerics, per dtype (the same as the NumPy backend's, and TensorFlow's two-op graph):
- float32: depthwise sums in float32; the pointwise GEMM in float32 with TF32 turned off (CuPy uses TF32
  only when CUPY_TF32=1; this backend resets that, so its results do not depend on the environment).
- float64: both stages in float64.
- float16: the kernel reads float16, sums in float32 and rounds the intermediate to float16 (nearest
  even); the GEMM runs in float32 on the intermediate widened to float32 (so it accumulates in float32),
  and the result is rounded once to float16.
- bfloat16: CuPy has no bfloat16 dtype, so tensors travel as their uint16 bit patterns and are widened
  exactly to float32 on the device (bits << 16); the depthwise stage uses the float32 kernel; the
  intermediate and the result are rounded to bfloat16 by float32_to_bfloat16_bits (nearest even on the
  bit pattern, NaN kept quiet), xp code that CI tests against ml_dtypes.
- NaN and Inf propagate by IEEE rules; padding is zeros, multiplied like any input (0 * Inf = NaN).

Everything but the kernel body is written against an array module `xp` (ArrayBackend): CuPy on the
device, NumPy in CI, where conformance.impls.cupy_kernels.depthwise_standin does the kernel's exact arithmetic, so
`separable_conv2d_standin` runs this backend's whole pipeline without a GPU.

Importing this module never imports CuPy: `unavailable_reason()` says whether it can run here.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import ml_dtypes
import numpy as np

from conformance.impls.cupy_kernels import (
    DepthwiseGeometry,
    depthwise_cuda,
    depthwise_standin,
    filter_gradient_cuda,
    filter_gradient_standin,
    input_gradient_cuda,
    input_gradient_standin,
    layout_steps,
)

# The contract's argument checks and output geometry are the NumPy backend's: one definition for both.
from conformance.impls.numpy_backend import _check, _padding_and_output

INSTALL_HINT = "pip install 'sepconv-conformance[gpu]'"
_STORAGE = {"float16": np.float16, "bfloat16": np.float32, "float32": np.float32, "float64": np.float64}
_COMPUTE = {"float16": np.float32, "bfloat16": np.float32, "float32": np.float32, "float64": np.float64}


# --- can it run here? ----------------------------------------------------------------------------------

def unavailable_reason() -> str | None:
    """None when CuPy, its CUDA libraries and a CUDA device are usable; otherwise what is missing."""
    try:
        import cupy
    except Exception as error:  # noqa: BLE001 - a broken install says why, whatever it raises
        if isinstance(error, ModuleNotFoundError) and error.name == "cupy":
            return f"CuPy is not installed ({INSTALL_HINT})"
        return f"CuPy is installed but cannot be imported: {type(error).__name__}: {error}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # noqa: BLE001 - CUDARuntimeError: no driver, driver too old, ...
        return f"CuPy is installed but there is no usable CUDA device: {type(error).__name__}: {error}"
    if count < 1:
        return "CuPy is installed but there is no usable CUDA device: no CUDA device found"
    try:  # NVRTC compiles the kernel, cuBLAS runs the GEMM: both are loaded lazily, so check them now
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
        importlib.import_module("cupy_backends.cuda.libs.cublas")
    except Exception as error:  # noqa: BLE001
        return (f"CuPy is installed but cannot load the CUDA libraries it needs (NVRTC, cuBLAS): "
                f"{type(error).__name__}: {error} (pip install 'cupy-cuda12x[ctk]', or install the CUDA "
                "toolkit)")
    return None


_device_version: str | None = None


def _version() -> str:
    global _device_version
    if _device_version is None:
        reason = unavailable_reason()
        if reason:  # not kept: the answer may change (a test installs a fake CuPy, say)
            return f"unavailable: {reason}"
        import cupy

        device = cupy.cuda.Device()
        name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        _device_version = f"cupy {cupy.__version__}, {name} (sm_{device.compute_capability})"
    return _device_version


def __getattr__(attribute: str) -> str:
    # __version__ names CuPy and the device, so it is computed on first access, never at import.
    if attribute == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")


# --- the kernel's arguments (host side, plain Python) ---------------------------------------------------

def geometry(x_shape: tuple[int, ...], dw_shape: tuple[int, ...], data_format: str, sh: int, sw: int, rh: int,
             rw: int, padding: Any) -> DepthwiseGeometry:
    """The kernel's arguments for validated operands; raises ValueError where the dilated kernel does not
    fit in the padded input."""
    n, h, w, c = x_shape if data_format == "NHWC" else (x_shape[0], x_shape[2], x_shape[3], x_shape[1])
    kh, kw, _, m = dw_shape
    top, _, left, _, out_h, out_w = _padding_and_output(h, w, kh, kw, sh, sw, rh, rw, padding, data_format)
    step_n, step_h, step_w, step_c = layout_steps(tuple(x_shape), data_format)
    return DepthwiseGeometry(batch=n, channels=c, multiplier=m, in_h=h, in_w=w, out_h=out_h, out_w=out_w,
                             kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, rate_h=rh, rate_w=rw,
                             pad_top=top, pad_left=left, step_n=step_n, step_h=step_h, step_w=step_w,
                             step_c=step_c)


# --- bfloat16 as bits (xp code: runs on the device and in CI alike) -------------------------------------

def bfloat16_bits_to_float32(xp: Any, bits: Any) -> Any:
    """uint16 bfloat16 patterns -> float32 of the same values (exact: the top 16 bits of a float32)."""
    return (bits.astype(xp.uint32) << xp.uint32(16)).view(xp.float32)


def float32_to_bfloat16_bits(xp: Any, values: Any) -> Any:
    """float32 -> uint16 bfloat16 patterns, rounded to nearest even; overflow gives Inf, NaN stays NaN
    (quiet, sign kept), subnormals round like any other value."""
    bits = xp.ascontiguousarray(values, dtype=xp.float32).view(xp.uint32)
    lsb = (bits >> xp.uint32(16)) & xp.uint32(1)
    rounded = (bits + xp.uint32(0x7FFF) + lsb) >> xp.uint32(16)  # wraps only for NaN, handled below
    nan = (bits & xp.uint32(0x7FFFFFFF)) > xp.uint32(0x7F800000)
    return xp.where(nan, (bits >> xp.uint32(16)) | xp.uint32(0x0040), rounded).astype(xp.uint16)


# --- the pipeline, against an array module -------------------------------------------------------------

@dataclass(frozen=True)
class ArrayBackend:
    """Where the pipeline runs: an array module, host<->array transfers, and the depthwise stage's kernels
    (forward, and the backward pass's two)."""

    xp: Any
    to_array: Callable[[np.ndarray], Any]
    to_host: Callable[[Any], np.ndarray]
    depthwise: Callable[[Any, Any, Any, DepthwiseGeometry], None]
    filter_gradient: Callable[[Any, Any, Any, DepthwiseGeometry], None]
    input_gradient: Callable[[Any, Any, Any, DepthwiseGeometry], None]


NUMPY_STANDIN = ArrayBackend(np, np.asarray, np.asarray, depthwise_standin, filter_gradient_standin,
                             input_gradient_standin)


def _upload(backend: ArrayBackend, host: np.ndarray, dtype: str) -> Any:
    """A host tensor as a contiguous array in the kernel's storage dtype (bfloat16: widened float32)."""
    host = np.ascontiguousarray(host)
    if dtype == "bfloat16":
        return bfloat16_bits_to_float32(backend.xp, backend.to_array(host.view(np.uint16)))
    return backend.to_array(host)


def _in_dtype(xp: Any, values: Any, dtype: str) -> Any:
    """Values rounded to the operator's dtype, in the kernels' storage dtype (bfloat16: its values widened
    back to float32, exactly), as TensorFlow's graph holds a tensor between two ops."""
    if dtype == "bfloat16":
        return bfloat16_bits_to_float32(xp, float32_to_bfloat16_bits(xp, values))
    return xp.ascontiguousarray(values.astype(_STORAGE[dtype], copy=False))


def _to_host(backend: ArrayBackend, values: Any, dtype: str) -> np.ndarray:
    """A result on the host in the operator's dtype: bfloat16 rounded to nearest even by its bits, the other
    dtypes rounded once from the compute dtype."""
    xp = backend.xp
    if dtype == "bfloat16":
        return np.ascontiguousarray(backend.to_host(float32_to_bfloat16_bits(xp, values))).view(ml_dtypes.bfloat16)
    return np.ascontiguousarray(backend.to_host(xp.ascontiguousarray(values.astype(_STORAGE[dtype], copy=False))))


def _validated(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int], padding: Any,
               data_format: str | None, dilations: Sequence[int] | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, DepthwiseGeometry]:
    """The operands as host arrays, the layout, and the kernels' geometry; raises the contract's ValueError."""
    x, dw, pw = np.asarray(input), np.asarray(depthwise_filter), np.asarray(pointwise_filter)
    data_format = data_format or "NHWC"
    dilations = [1, 1] if dilations is None else list(dilations)
    sh, sw, rh, rw = (int(v) for v in _check(x, dw, pw, list(strides), data_format, dilations))
    return x, dw, pw, data_format, geometry(x.shape, dw.shape, data_format, sh, sw, rh, rw, padding)


def run_pipeline(backend: ArrayBackend, input: Any, depthwise_filter: Any, pointwise_filter: Any,
                 strides: Sequence[int], padding: Any, data_format: str | None = None,
                 dilations: Sequence[int] | None = None) -> np.ndarray:
    """tf.nn.separable_conv2d's semantics with the work done by `backend`; returns a host array."""
    x, dw, pw, data_format, g = _validated(input, depthwise_filter, pointwise_filter, strides, padding,
                                           data_format, dilations)
    dtype, xp = x.dtype.name, backend.xp
    compute = _COMPUTE[dtype]
    with np.errstate(invalid="ignore", over="ignore"):  # NumPy stand-in: NaN/Inf are data, not warnings
        intermediate = xp.empty((g.batch * g.out_h * g.out_w, g.channels * g.multiplier), dtype=_STORAGE[dtype])
        backend.depthwise(_upload(backend, x, dtype), _upload(backend, dw, dtype), intermediate, g)
        intermediate = _in_dtype(xp, intermediate, dtype)  # in the operator's dtype, as in TensorFlow's graph
        weights = _upload(backend, pw[0, 0], dtype).astype(compute, copy=False)
        out = xp.matmul(intermediate.astype(compute, copy=False), weights).reshape(g.batch, g.out_h, g.out_w, -1)
        return _to_host(backend, out.transpose(0, 3, 1, 2) if data_format == "NCHW" else out, dtype)


def run_backward_pipeline(backend: ArrayBackend, input: Any, depthwise_filter: Any, pointwise_filter: Any,
                          output_gradient: Any, strides: Sequence[int], padding: Any, data_format: str | None = None,
                          dilations: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three gradients tf.GradientTape gives, with the work done by `backend`:
    1. the intermediate again (the forward kernel), rounded to the dtype as in the forward pass;
    2. the gradient reaching it, output_gradient @ pointwise^T (cuBLAS, compute dtype), rounded to the dtype
       (TensorFlow's graph holds it in the dtype);
    3. the pointwise filter's gradient, intermediate^T @ output_gradient (cuBLAS), rounded once;
    4. the depthwise filter's and the input's gradients: the backward kernels, which read the rounded
       gradient of 2 and round their sums once (sepconv_depthwise.cu)."""
    x, dw, pw, data_format, g = _validated(input, depthwise_filter, pointwise_filter, strides, padding,
                                           data_format, dilations)
    dtype, xp = x.dtype.name, backend.xp
    compute = _COMPUTE[dtype]
    out_channels = pw.shape[3]
    grad = np.asarray(output_gradient)
    expected = (g.batch, g.out_h, g.out_w, out_channels) if data_format == "NHWC" else \
        (g.batch, out_channels, g.out_h, g.out_w)
    if grad.shape != expected or grad.dtype != x.dtype:
        raise ValueError(f"separable_conv2d: output_gradient must have the output's shape {list(expected)} and "
                         f"dtype {x.dtype}, got {list(grad.shape)} {grad.dtype}")
    if data_format == "NCHW":
        grad = grad.transpose(0, 2, 3, 1)
    positions, width = g.batch * g.out_h * g.out_w, g.channels * g.multiplier
    with np.errstate(invalid="ignore", over="ignore"):
        x_dev, dw_dev = _upload(backend, x, dtype), _upload(backend, dw, dtype)
        intermediate = xp.empty((positions, width), dtype=_STORAGE[dtype])
        backend.depthwise(x_dev, dw_dev, intermediate, g)
        intermediate = _in_dtype(xp, intermediate, dtype).astype(compute, copy=False)
        gradient = _upload(backend, grad, dtype).astype(compute, copy=False).reshape(positions, out_channels)
        pointwise = _upload(backend, pw[0, 0], dtype).astype(compute, copy=False)
        reaching = _in_dtype(xp, xp.matmul(gradient, pointwise.T), dtype)  # [N*OH*OW, C*M]
        pointwise_gradient = xp.matmul(intermediate.T, gradient).reshape(1, 1, width, out_channels)
        depthwise_gradient = xp.empty(dw.shape, dtype=_STORAGE[dtype])
        backend.filter_gradient(x_dev, reaching, depthwise_gradient, g)
        input_gradient = xp.empty(x.shape, dtype=_STORAGE[dtype])
        backend.input_gradient(dw_dev, reaching, input_gradient, g)
        return (_to_host(backend, input_gradient, dtype), _to_host(backend, depthwise_gradient, dtype),
                _to_host(backend, pointwise_gradient, dtype))


# --- the device ----------------------------------------------------------------------------------------

def _fp32_gemm(cupy: Any) -> None:
    """Make float32 GEMMs plain FP32 even under CUPY_TF32=1 (TF32 rounds the operands to 10 bits)."""
    try:
        from cupy._core import _routines_linalg as linalg

        if linalg.get_compute_type(np.float32) == linalg.COMPUTE_TYPE_TF32:
            linalg.set_compute_type(np.float32, linalg.COMPUTE_TYPE_DEFAULT)
    except (ImportError, AttributeError) as error:  # a CuPy without these internals
        if os.environ.get("CUPY_TF32", "0").strip() not in ("", "0"):
            raise RuntimeError(f"CUPY_TF32 is set and this CuPy ({cupy.__version__}) offers no way to turn "
                               f"TF32 off for this backend ({error}); unset CUPY_TF32") from None


@lru_cache(maxsize=1)
def _cupy_backend() -> ArrayBackend:
    """The device, checked once per process (a failed check is not cached: it raises again)."""
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(f"the cupy backend cannot run here: {reason}")
    import cupy

    _fp32_gemm(cupy)
    return ArrayBackend(cupy, cupy.asarray, cupy.asnumpy, depthwise_cuda, filter_gradient_cuda, input_gradient_cuda)


def separable_conv2d(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
                     padding: Any, data_format: str | None = None,
                     dilations: Sequence[int] | None = None) -> np.ndarray:
    """Same signature and semantics as tf.nn.separable_conv2d (without `name`), computed on the GPU."""
    return run_pipeline(_cupy_backend(), input, depthwise_filter, pointwise_filter, strides, padding,
                        data_format, dilations)


def separable_conv2d_standin(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
                             padding: Any, data_format: str | None = None,
                             dilations: Sequence[int] | None = None) -> np.ndarray:
    """This backend's pipeline with NumPy standing in for CuPy and the kernel: runs anywhere."""
    return run_pipeline(NUMPY_STANDIN, input, depthwise_filter, pointwise_filter, strides, padding,
                        data_format, dilations)


def separable_conv2d_backprop(input: Any, depthwise_filter: Any, pointwise_filter: Any, output_gradient: Any,
                              strides: Sequence[int], padding: Any, data_format: str | None = None,
                              dilations: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The backward pass on the GPU: (input, depthwise filter, pointwise filter) gradients."""
    return run_backward_pipeline(_cupy_backend(), input, depthwise_filter, pointwise_filter, output_gradient,
                                 strides, padding, data_format, dilations)


def separable_conv2d_backprop_standin(input: Any, depthwise_filter: Any, pointwise_filter: Any,
                                      output_gradient: Any, strides: Sequence[int], padding: Any,
                                      data_format: str | None = None, dilations: Sequence[int] | None = None
                                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The backward pipeline with NumPy standing in for CuPy and the kernels: runs anywhere."""
    return run_backward_pipeline(NUMPY_STANDIN, input, depthwise_filter, pointwise_filter, output_gradient,
                                 strides, padding, data_format, dilations)


separable_conv2d_standin.backprop = separable_conv2d_backprop_standin  # type: ignore[attr-defined]


# --- a side-by-side benchmark: python -m conformance.impls.cupy_backend [--standin] [--cases PATH] [--repeat N]

def _bench(argv: Sequence[str] | None = None) -> int:
    """Time this backend against the NumPy backend on the same cases, in one run (end to end per call:
    host->device, both stages, device->host), and print the ratios."""
    import argparse
    import statistics
    import time
    from pathlib import Path

    from conformance.cases.data import materialize
    from conformance.cases.loader import load_cases
    from conformance.impls.numpy_backend import separable_conv2d as numpy_separable_conv2d

    parser = argparse.ArgumentParser(prog="python -m conformance.impls.cupy_backend", description=_bench.__doc__)
    parser.add_argument("--cases", default=str(Path(__file__).resolve().parent.parent / "cases" / "networks.yaml"))
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per case (the median is shown)")
    parser.add_argument("--standin", action="store_true", help="time the NumPy stand-in instead of the device")
    args = parser.parse_args(argv)
    if not args.standin and (reason := unavailable_reason()):
        print(f"cupy backend cannot run here: {reason}")
        return 2
    ours = separable_conv2d_standin if args.standin else separable_conv2d
    label = "standin" if args.standin else "cupy"
    print(f"{'case':<64} {'numpy ms':>9} {label + ' ms':>10} {'speed-up':>8}")
    for case in (c for c in load_cases([args.cases]) if not c.expect_error):
        inputs = materialize(case)
        call = (inputs.input, inputs.depthwise_filter, inputs.pointwise_filter, case.operator_strides,
                case.operator_padding, case.data_format, list(case.rates))
        medians = []
        for fn in (numpy_separable_conv2d, ours):
            fn(*call)  # warm-up: compilation, allocation
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                fn(*call)
                times.append(time.perf_counter() - start)
            medians.append(statistics.median(times) * 1e3)
        print(f"{case.id[:64]:<64} {medians[0]:9.2f} {medians[1]:10.2f} {medians[0] / medians[1]:7.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(_bench())
