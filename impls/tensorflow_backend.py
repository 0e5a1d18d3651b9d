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
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402 - the log level must be set first

from conformance.judging.reference import tensorflow_depthwise_accumulator  # noqa: E402

tf.config.experimental.enable_tensor_float_32_execution(False)
__version__ = tf.__version__
# Its numerics, declared as measured on this machine: on the Eigen path the depthwise taps of float16 and
# bfloat16 accumulate in the dtype, and the tolerance model must judge it by that accumulator.
SUPPORTS = {"accumulator": {dtype: accumulator for dtype in ("float16", "bfloat16")
                            if (accumulator := tensorflow_depthwise_accumulator(dtype)) == dtype}}


def separable_conv2d(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
                     padding: Any, data_format: str | None = None,
                     dilations: Sequence[int] | None = None) -> np.ndarray:
    """tf.nn.separable_conv2d on the CPU, eagerly, arrays in and a NumPy array out."""
    with tf.device("/CPU:0"):
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
    with tf.device("/CPU:0"):
        tensors = [tf.constant(np.asarray(t)) for t in (input, depthwise_filter, pointwise_filter)]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            result = tf.nn.separable_conv2d(*tensors, strides=list(strides), padding=padding,
                                            data_format=data_format or "NHWC",
                                            dilations=None if dilations is None else list(dilations))
        found = tape.gradient(result, tensors, output_gradients=tf.constant(np.asarray(output_gradient)))
    return tuple(np.asarray(g.numpy()) for g in found)  # type: ignore[return-value]
