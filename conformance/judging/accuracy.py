"""Accuracy relative to TensorFlow: the backend's error and TensorFlow's, both against the exact oracle, in
the same units, and their ratio. A conformance verdict says "within what floating point allows"; this says
where in that range a backend sits next to the reference of record (`--max-error-ratio R` turns it into a
gate). Units: the root mean square over the comparable elements of |result - oracle| / (u*B + eta), the
tolerance model's unit; both results are judged on the same elements.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from conformance.judging.tolerance import Tolerance
from conformance.result import Result


def relative_accuracy(actual: np.ndarray, tensorflow: np.ndarray, oracle: np.ndarray, bound: np.ndarray,
                      tolerance: Tolerance) -> dict[str, Any]:
    """Metrics: `error_rms_units`, `tf_error_rms_units`, `error_ratio_to_tensorflow` (inf where TensorFlow
    is exact and the backend is not; 1 where both are exact) and `identical_to_tensorflow` (bitwise)."""
    identical = actual.dtype == tensorflow.dtype and actual.shape == tensorflow.shape and \
        np.ascontiguousarray(actual).tobytes() == np.ascontiguousarray(tensorflow).tobytes()
    with np.errstate(all="ignore"):
        got, tf = actual.astype(np.float64), tensorflow.astype(np.float64)
        mask = np.isfinite(got) & np.isfinite(tf) & np.isfinite(oracle) & np.isfinite(bound)
        unit = tolerance.unit(bound)[mask]
        mine = _rms((got[mask] - oracle[mask]) / unit)
        theirs = _rms((tf[mask] - oracle[mask]) / unit)
    ratio = 1.0 if mine == theirs else (mine / theirs if theirs > 0 else math.inf)
    return {"error_rms_units": mine, "tf_error_rms_units": theirs, "error_ratio_to_tensorflow": ratio,
            "identical_to_tensorflow": bool(identical)}


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values)))) if values.size else 0.0


def summary_lines(results: Sequence[Result]) -> list[str]:
    """Per backend, one line: where it stands next to TensorFlow's error, and how often it is identical."""
    lines = []
    for backend in dict.fromkeys(r.backend for r in results):
        mine = [r for r in results if r.backend == backend and "error_ratio_to_tensorflow" in r.metrics]
        if not mine:
            continue
        ratios = [float(r.metrics["error_ratio_to_tensorflow"]) for r in mine]
        worst = max(mine, key=lambda r: float(r.metrics["error_ratio_to_tensorflow"]))
        identical = sum(bool(r.metrics.get("identical_to_tensorflow")) for r in mine)
        lines.append(f"accuracy vs TensorFlow [{backend}]: median {statistics.median(ratios):.3g}x TensorFlow's "
                     f"error, worst {float(worst.metrics['error_ratio_to_tensorflow']):.3g}x on {worst.case}; "
                     f"{identical} of {len(mine)} bitwise identical")
    return lines
