"""The reference of record: TensorFlow's tf.nn.separable_conv2d on the CPU, checked before it is trusted.

TensorFlow is not always right (docs/tolerance.md, "Reference health"): it refuses some valid cases, accepts a
forbidden one, aborts the process on malformed ranks, and has returned wrong, run-to-run varying values
for some small strided shapes. So its output is computed twice (bitwise equal or `nondeterministic`) and
judged against the float64 oracle with the same tolerance model (else `mismatch`). Where TensorFlow
refuses or fails, the backend is judged against the oracle instead, and the record says so.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from conformance.cases import contract
from conformance.cases.case import Case
from conformance.cases.data import Inputs, numpy_dtype
from conformance.judging.compare import compare
from conformance.judging.oracle import OracleOutputs, compute_oracle
from conformance.judging.tolerance import Tolerance
from conformance.result import ReferenceStatus

# The statuses a Reference (and a golden entry) may have: every ReferenceStatus but NONE. crash: TensorFlow's
# process died or hung on the case (conformance.execution.runner.prepare records it; the backend is judged
# against the oracle or the contract).
REFERENCE_STATUSES = tuple(s.value for s in ReferenceStatus if s is not ReferenceStatus.NONE)


@dataclass(frozen=True)
class Reference:
    """What a backend's output for one case is judged against, and how healthy TensorFlow was."""

    source: str  # "tensorflow" or "oracle": what the backend is compared with
    status: str  # one of REFERENCE_STATUSES (a ReferenceStatus)
    detail: str = ""
    output: np.ndarray | None = None  # TensorFlow's output when source is tensorflow
    oracle: OracleOutputs | None = None  # None for cases that expect an error, and backward cases
    metrics: dict[str, Any] = field(default_factory=dict)  # TensorFlow vs the oracle
    # Backward cases (conformance.judging.backward): TensorFlow's gradients when source is tensorflow, and
    # the exact ones, by name (GRADIENTS).
    gradients: dict[str, np.ndarray] | None = None
    gradient_oracles: dict[str, OracleOutputs] | None = None


def tensorflow_missing() -> str | None:
    """Why TensorFlow cannot be used here, or None when it can. Looks it up without importing it: the
    references are computed in a child process, so this process need not pay for the import."""
    try:
        found = importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError) as error:
        found, reason = False, str(error)
    else:
        reason = "no module named 'tensorflow'"
    if not found:
        return f"TensorFlow is not installed ({reason}); install the `tf` extra or use --reference oracle"
    return None


def reference_unusable(reference: str, golden: str | None = None) -> str | None:
    """Why the chosen reference (tensorflow, oracle or golden with its folder) cannot be used here, or
    None when it can: every command checks this before it computes anything."""
    if reference == "tensorflow":
        return tensorflow_missing()
    if reference == "golden" and not (golden and Path(golden).is_dir()):
        return f"--reference golden needs --golden DIR, a folder of golden entries (got {golden!r})"
    return None


# Packages that importing TensorFlow imports where they are installed, for parts never used here: JAX for
# TFLite's JAX converter, Keras 3 for tf.keras, 0.8 s each of every TensorFlow process's start (every
# reference process, and the TensorFlow backend).
HIDDEN_FROM_TENSORFLOW = ("jax", "keras")


def _import_tensorflow(hidden: Sequence[str]) -> Any:
    """`import tensorflow` with `hidden` packages unimportable (ImportError) for that import only."""
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # `import NAME` raises ImportError
    try:
        import tensorflow as tf
    finally:
        for name in hidden:
            del sys.modules[name]
    return tf


def tensorflow_module() -> Any:
    """TensorFlow, imported with HIDDEN_FROM_TENSORFLOW hidden (TensorFlow handles their absence) unless this
    process already uses them; a backend may still import them afterwards. A TensorFlow whose import fails
    without them is imported again with them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        tf = _import_tensorflow([name for name in HIDDEN_FROM_TENSORFLOW if name not in sys.modules])
    except ImportError:
        tf = _import_tensorflow([])

    if not getattr(tensorflow_module, "configured", False):
        # TF32 would silently lower float32 matmuls to 10-bit mantissas on Ampere+ GPUs.
        tf.config.experimental.enable_tensor_float_32_execution(False)
        tensorflow_module.configured = True  # type: ignore[attr-defined]
    return tf


def tensorflow_version() -> str | None:
    """The installed TensorFlow's version, read from its package metadata (no import), or None."""
    if tensorflow_missing():
        return None
    if "tensorflow" in sys.modules:
        return str(sys.modules["tensorflow"].__version__)
    for distribution in ("tensorflow", "tensorflow-cpu", "tf-nightly", "tensorflow-macos"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def run_tensorflow(case: Case, inputs: Inputs) -> np.ndarray:
    """tf.nn.separable_conv2d on the CPU; raises whatever TensorFlow raises."""
    tf = tensorflow_module()
    with tf.device("/CPU:0"):
        result = tf.nn.separable_conv2d(
            tf.constant(inputs.input), tf.constant(inputs.depthwise_filter),
            tf.constant(inputs.pointwise_filter), strides=case.operator_strides,
            padding=case.operator_padding, data_format=case.data_format, dilations=list(case.rates))
    return np.asarray(result.numpy())


def run_tensorflow_backward(case: Case, inputs: Inputs) -> dict[str, np.ndarray]:
    """The three gradients tf.GradientTape gives over tf.nn.separable_conv2d on the CPU, for the case's
    output gradient; raises whatever TensorFlow raises."""
    from conformance.judging.backward import GRADIENTS

    tf = tensorflow_module()
    with tf.device("/CPU:0"):
        tensors = [tf.constant(t) for t in (inputs.input, inputs.depthwise_filter, inputs.pointwise_filter)]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            result = tf.nn.separable_conv2d(*tensors, strides=case.operator_strides, padding=case.operator_padding,
                                            data_format=case.data_format, dilations=list(case.rates))
        found = tape.gradient(result, tensors, output_gradients=tf.constant(inputs.output_gradient))
    return {name: np.asarray(value.numpy()) for name, value in zip(GRADIENTS, found)}


# A probe of how TensorFlow accumulates the depthwise taps of float16/bfloat16 on this machine: one output
# of a 3x3 VALID window over ones, taps BIG, 1, 1, ..., 1 (eight ones) and an identity pointwise filter.
# Accumulated in float32 the result is BIG + 8; in the dtype each +1 is half an ulp of BIG and is lost (ties
# to even), so the result is BIG. BIG = 2048 (float16) and 256 (bfloat16) have an ulp of 2.
_PROBE_BIG = {"float16": 2048.0, "bfloat16": 256.0}


@functools.cache
def tensorflow_depthwise_accumulator(dtype: str) -> str:
    """The precision TensorFlow's depthwise stage accumulates `dtype` in on this machine: float32 on its
    oneDNN path, the dtype itself on its Eigen path (TF_ENABLE_ONEDNN_OPTS=0, or CPUs without
    AVX512_VNNI/BF16/AMX; docs/research/tf-low-precision-2026-12). float32/float64: the dtype. TensorFlow's
    own health is judged with the accumulator it was measured to use, so a machine whose TensorFlow takes
    the Eigen path does not turn TensorFlow's correct rounding into `mismatch`."""
    if dtype not in _PROBE_BIG:
        return dtype
    tf, np_dtype = tensorflow_module(), numpy_dtype(dtype)
    taps = np.ones((3, 3, 1, 1))
    taps[0, 0] = _PROBE_BIG[dtype]
    with tf.device("/CPU:0"):
        out = tf.nn.separable_conv2d(tf.constant(np.ones((1, 3, 3, 1), np_dtype)), tf.constant(taps.astype(np_dtype)),
                                     tf.constant(np.ones((1, 1, 1, 1), np_dtype)), strides=[1, 1, 1, 1],
                                     padding="VALID")
    return dtype if float(np.asarray(out.numpy(), np.float64).ravel()[0]) == _PROBE_BIG[dtype] else "float32"


def error_summary(error: BaseException) -> str:
    """One line for an exception, TensorFlow's decorations stripped: `Type: reason`."""
    text = str(error).strip().splitlines()
    message = text[0] if text else type(error).__name__
    # TensorFlow prefixes messages with '{{function_node ...}}'; the reason follows it.
    if message.startswith("{{") and "}}" in message:
        message = message.split("}}", 1)[1].strip()
    return f"{type(error).__name__}: {message.split(' [Op:')[0]}"


def _bitwise_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def build_reference(case: Case, inputs: Inputs, use_tensorflow: bool = True) -> Reference:
    """The reference for one case; never raises for anything TensorFlow does. A forward case has one
    tensor ("output"), a backward case three (its gradients, conformance.judging.backward), each judged
    on its own; TensorFlow is trusted only where every one of them passes."""
    if case.expect_error:
        return _error_reference(case, inputs, use_tensorflow)
    from conformance.judging.backward import GRADIENTS, backward_oracle, gradient_tolerance

    backward = case.mode == "backward"
    exact = backward_oracle(case, inputs) if backward else {"output": compute_oracle(case, inputs)}

    def reference(source: str, status: str, detail: str = "", found: dict[str, np.ndarray] | None = None,
                  metrics: dict[str, Any] | None = None) -> Reference:
        if backward:
            return Reference(source, status, detail, metrics=metrics or {}, gradients=found, gradient_oracles=exact)
        return Reference(source, status, detail, None if found is None else found["output"], exact["output"],
                         metrics or {})

    if not use_tensorflow:
        return reference("oracle", ReferenceStatus.NOT_RUN, "TensorFlow not used (--reference oracle)")
    try:
        runs = [run_tensorflow_backward(case, inputs) if backward else {"output": run_tensorflow(case, inputs)}
                for _ in range(2)]
    except Exception as error:  # noqa: BLE001 - any refusal by TensorFlow is a finding, not a crash
        return reference("oracle", ReferenceStatus.REFUSED, error_summary(error))
    first, second = runs
    accumulator = tensorflow_depthwise_accumulator(case.dtype)
    metrics: dict[str, Any] = {"tf_depthwise_accumulator": accumulator} if case.dtype in _PROBE_BIG else {}
    wrong, changed = [], []
    for name in GRADIENTS if backward else ("output",):
        tolerance = (gradient_tolerance(case, name, {case.dtype: accumulator}) if backward
                     else Tolerance.for_case(case, {case.dtype: accumulator}))
        verdict = compare(first[name], exact[name].output, exact[name].output, exact[name].bound, tolerance, sides=1,
                          dtype=numpy_dtype(case.dtype), variance=exact[name].variance)
        prefix = f"tf_{name}_" if backward else "tf_"
        metrics |= {prefix + k: v for k, v in verdict.metrics.items() if not k.startswith("worst")}
        if not verdict.passed:
            wrong.append(f"{name}: {verdict.reason}" if backward else verdict.reason)
        if not _bitwise_equal(first[name], second[name]):
            differ = int(np.sum(first[name].astype(np.float64) != second[name].astype(np.float64)))
            changed.append(f"{differ} elements" + (f" of {name}" if backward else ""))
    if changed:
        return reference("oracle", ReferenceStatus.NONDETERMINISTIC,
                         f"two TensorFlow runs differ in {', '.join(changed)}", metrics=metrics)
    if wrong:
        return reference("oracle", ReferenceStatus.MISMATCH, "TensorFlow vs oracle: " + "; ".join(wrong),
                         metrics=metrics)
    return reference("tensorflow", ReferenceStatus.OK, found=first, metrics=metrics)


def _error_reference(case: Case, inputs: Inputs, use_tensorflow: bool) -> Reference:
    """For a case the contract forbids: does TensorFlow reject it too?"""
    if not use_tensorflow:
        return Reference("contract", ReferenceStatus.NOT_RUN, "TensorFlow not used (--reference oracle)")
    if not contract.structurally_safe(case):
        return Reference("contract", ReferenceStatus.NOT_RUN,
                         "not sent to TensorFlow: malformed ranks can abort its process")
    try:
        if case.mode == "backward":
            shapes = [list(g.shape) for g in run_tensorflow_backward(case, inputs).values()]
        else:
            shapes = list(run_tensorflow(case, inputs).shape)
    except Exception as error:  # noqa: BLE001
        return Reference("contract", ReferenceStatus.OK, f"TensorFlow rejects it: {error_summary(error)}")
    return Reference("contract", ReferenceStatus.MISMATCH,
                     f"TensorFlow accepts input the contract forbids (returned shape {shapes})")
