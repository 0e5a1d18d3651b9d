"""Subnormals: preserved (IEEE gradual underflow) or flushed (FTZ/DAZ), and which a backend may do.

Runtimes differ, and the reference of record flushes: TensorFlow's CPU kernels (and JAX/XLA on the CPU)
flush subnormals in float32, bfloat16 and float64, while PyTorch, ONNX Runtime and OpenVINO (float32)
keep them. So by default a backend may do either, and a backend bit-identical to TensorFlow passes; the
record says which it did. A backend that promises one behaviour declares it (`SUPPORTS = {"subnormals":
"preserve"}` or `"flush"`) and is held to it.

The flushed model: the inputs read with subnormals as zero (DAZ), the oracle recomputed from them, and
every rounding allowed an absolute error up to the dtype's smallest normal number instead of its smallest
subnormal (FTZ turns a result below it into zero). It applies to `data: subnormal` cases, where subnormals
are the point; elsewhere they are too rare to matter within the limits.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import ml_dtypes
import numpy as np

from conformance.cases.case import Case
from conformance.cases.data import Inputs
from conformance.judging.oracle import OracleOutputs, compute_oracle
from conformance.judging.tolerance import Tolerance
from conformance.result import Result

POLICIES = ("preserve", "flush")  # declared; undeclared: either


def flush(array: np.ndarray) -> np.ndarray:
    """`array` with its subnormals replaced by zeros of the same sign."""
    tiny = float(ml_dtypes.finfo(array.dtype).smallest_normal)
    with np.errstate(invalid="ignore"):
        return np.where(np.abs(array.astype(np.float64)) < tiny, array * 0, array).astype(array.dtype)


def flushed_oracle(case: Case, inputs: Inputs) -> OracleOutputs:
    """The oracle of the inputs as a DAZ kernel reads them."""
    return compute_oracle(case, Inputs(flush(inputs.input), flush(inputs.depthwise_filter),
                                       flush(inputs.pointwise_filter)))


def flushed_tolerance(tolerance: Tolerance, dtype: np.dtype) -> Tolerance:
    """The model with FTZ's absolute error per rounding: the dtype's smallest normal number."""
    return dataclasses.replace(tolerance, underflow=float(ml_dtypes.finfo(dtype).smallest_normal))


def summary_lines(results: Sequence[Result]) -> list[str]:
    """Per backend, what it did with subnormals per dtype (on the `data: subnormal` cases)."""
    lines = []
    for backend in dict.fromkeys(r.backend for r in results):
        seen = Counter((r.parameters.get("dtype"), r.metrics["subnormals"]) for r in results
                       if r.backend == backend and "subnormals" in r.metrics)
        if seen:
            lines.append(f"subnormals [{backend}]: " + ", ".join(f"{dtype} {did} ({n})"
                                                              for (dtype, did), n in sorted(seen.items())))
    return lines
