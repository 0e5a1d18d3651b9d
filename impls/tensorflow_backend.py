"""TensorFlow's own tf.nn.separable_conv2d as a backend under test: the suite's control experiment.

Judged against the float64 oracle (`run --backend tensorflow --reference oracle`), it shows where the
tolerance model puts the reference of record itself: it must conform wherever its reference health is
`ok`, and each case where it does not is one of TensorFlow's documented findings (docs/tolerance.md,
"TensorFlow judged as a backend"). Judged against TensorFlow (the default reference) it is bitwise
identical wherever TensorFlow is deterministic, which checks the harness's plumbing end to end.

Numerics are TensorFlow's on this CPU: with oneDNN (the default on CPUs with AVX512_VNNI, AVX512_BF16
or AMX) float16/bfloat16 accumulate in float32 in both stages; on TensorFlow's Eigen path
(TF_ENABLE_ONEDNN_OPTS=0, or CPUs without those features) the depthwise taps accumulate in the dtype and
NCHW float16/bfloat16 is refused (docs/research/tf-low-precision-2026-12). The call runs on /CPU:0 with
TF32 off; TensorFlow's exceptions propagate, so what it refuses is recorded as a rejection. SUPPORTS
declares the depthwise accumulator measured on this machine (conformance.judging.reference's probe).

On a named device (`tensorflow:/GPU:0`, `tensorflow:/device:XPU:0` for a pluggable device, with
`,precision=default` for TensorFlow's default TF32 on Ampere and later GPUs) it is the runtime under test,
judged against TensorFlow on the CPU and the oracle: the most common conformance question there is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from conformance.impls.runtime_adapter import RuntimeRejection
from conformance.judging.reference import tensorflow_depthwise_accumulator, tensorflow_module

tf = tensorflow_module()  # quiet, TF32 off, as the reference process imports it
__version__ = tf.__version__
# Its numerics, declared as measured on this machine: on the Eigen path the depthwise taps of float16 and
# bfloat16 accumulate in the dtype, and the tolerance model must judge it by that accumulator.
SUPPORTS = {"accumulator": {dtype: accumulator for dtype in ("float16", "bfloat16")
                            if (accumulator := tensorflow_depthwise_accumulator(dtype)) == dtype}}


def unavailable_reason(device: str | None = None) -> str | None:
    if device is None:
        return None
    known = [d.name for d in tf.config.list_logical_devices()]
    wanted = device.upper().replace("/DEVICE:", "/")
    if not any(name.upper().replace("/DEVICE:", "/").endswith(wanted) for name in known):
        return f"TensorFlow has no device {device} here (it sees {', '.join(known)})"
    return None


def runtime_backend(device: str | None, precision: str) -> Any:
    """TensorFlow on `device` (forward and backward), with TF32 as the precision mode says."""
    tf.config.experimental.enable_tensor_float_32_execution(precision == "default")
    tf.config.set_soft_device_placement(False)  # an op without a kernel on the device raises, never runs on the CPU
    where = device or "/CPU:0"

    def separable_conv2d(*args: Any, **kwargs: Any) -> np.ndarray:
        return _by_runtime(where, _forward, *args, **kwargs)

    def backprop(*args: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _by_runtime(where, _backward, *args, **kwargs)

    separable_conv2d.backprop = backprop  # type: ignore[attr-defined]
    separable_conv2d.supports = SUPPORTS if where.upper() in ("/CPU:0", "/DEVICE:CPU:0") else None  # type: ignore[attr-defined]
    tf32 = "TF32 on where the device has it" if precision == "default" else "TF32 off"
    separable_conv2d.__version__ = (f"tensorflow {tf.__version__} on {where}, precision {precision} "  # type: ignore[attr-defined]
                                    f"({tf32})")
    return separable_conv2d


def _by_runtime(device: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """call(device, ...), its refusals marked as TensorFlow's own (TensorFlow is the contract: no adapter checks)."""
    try:
        return call(device, *args, **kwargs)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever TensorFlow raises is its refusal
        raise RuntimeRejection(f"TensorFlow on {device} refused it: {type(error).__name__}: "
                               f"{' '.join(str(error).split())[:600]}") from None


def separable_conv2d(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
                     padding: Any, data_format: str | None = None,
                     dilations: Sequence[int] | None = None) -> np.ndarray:
    """tf.nn.separable_conv2d on the CPU, eagerly, arrays in and a NumPy array out."""
    return _forward("/CPU:0", input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)


def _forward(device: str, input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
             padding: Any, data_format: str | None = None, dilations: Sequence[int] | None = None) -> np.ndarray:
    with tf.device(device):
        result = tf.nn.separable_conv2d(
            tf.constant(np.asarray(input)), tf.constant(np.asarray(depthwise_filter)),
            tf.constant(np.asarray(pointwise_filter)), strides=list(strides), padding=padding,
            data_format=data_format or "NHWC", dilations=None if dilations is None else list(dilations))
    return np.asarray(result.numpy())


def separable_conv2d_backprop(input: Any, depthwise_filter: Any, pointwise_filter: Any, output_gradient: Any,
                              strides: Sequence[int], padding: Any, data_format: str | None = None,
                              dilations: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three gradients tf.GradientTape gives over tf.nn.separable_conv2d on the CPU (the backward
    pass's control experiment: judged against the exact gradients, it shows docs/backward.md's findings)."""
    return _backward("/CPU:0", input, depthwise_filter, pointwise_filter, output_gradient, strides, padding,
                     data_format, dilations)


def _backward(device: str, input: Any, depthwise_filter: Any, pointwise_filter: Any, output_gradient: Any,
              strides: Sequence[int], padding: Any, data_format: str | None = None,
              dilations: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with tf.device(device):
        tensors = [tf.constant(np.asarray(t)) for t in (input, depthwise_filter, pointwise_filter)]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            result = tf.nn.separable_conv2d(*tensors, strides=list(strides), padding=padding,
                                            data_format=data_format or "NHWC",
                                            dilations=None if dilations is None else list(dilations))
        found = tape.gradient(result, tensors, output_gradients=tf.constant(np.asarray(output_gradient)))
    return tuple(np.asarray(g.numpy()) for g in found)  # type: ignore[return-value]
