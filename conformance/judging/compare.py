"""Compare a computed tensor with the reference under the tolerance model. Returns values, never raises.

Order of checks: shape, dtype, non-finite pattern, per-element limit, then the tensor-level bias and
energy statistics (which catch small systematic errors that stay under every per-element limit).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np

from conformance.judging.diagnostics import failure_details, worst_first
from conformance.judging.tolerance import Tolerance
from conformance.result import Kind

WORST_ELEMENTS = 5


@dataclass(frozen=True)
class Comparison:
    passed: bool
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # failures only: where the error is (HTML report)
    kind: Kind = Kind.NONE  # which check failed; Kind.NONE when passed


def _index(flat: int, shape: tuple[int, ...]) -> list[int]:
    return [int(i) for i in np.unravel_index(flat, shape)]


def _nonfinite_problems(actual: np.ndarray, reference: np.ndarray, oracle: np.ndarray,
                        single_limit: np.ndarray, largest: float) -> np.ndarray:
    """Elements whose NaN/Inf status is wrong. Where the reference is NaN or +-Inf the actual value must
    be the same. A finite reference admits a non-finite actual value only where overflow is plausible
    (|oracle| + limit reaches the dtype's largest finite value) and it is an Inf of the oracle's sign."""
    ref_nan, act_nan = np.isnan(reference), np.isnan(actual)
    ref_inf, act_inf = np.isinf(reference), np.isinf(actual)
    wrong = (ref_nan & ~act_nan) | (ref_inf & (actual != reference))
    finite_ref = np.isfinite(reference)
    may_overflow = np.abs(oracle) + single_limit >= largest
    overflow_ok = may_overflow & act_inf & (np.sign(actual) == np.sign(oracle))
    wrong |= finite_ref & (act_nan | (act_inf & ~overflow_ok))
    return wrong


def compare(actual: Any, reference: np.ndarray, oracle: np.ndarray, bound: np.ndarray,
            tolerance: Tolerance, sides: int, dtype: np.dtype, data_format: str = "NHWC",
            variance: np.ndarray | None = None) -> Comparison:
    """Judge `actual` against `reference` (TensorFlow's output, or the oracle itself).

    sides: how many of (actual, reference) carry rounding error: 2 against TensorFlow, 1 against the
    oracle. variance: the oracle's sum_k p_k^2 z_k^2 (float16/bfloat16), for the probabilistic energy check;
    without it the classic one runs. The metrics say how far off the worst element is, in units of its limit.
    """
    if not isinstance(actual, np.ndarray):
        return Comparison(False, f"returned {type(actual).__name__}, not an array", kind=Kind.NOT_ARRAY)
    if actual.shape != reference.shape:
        return Comparison(False, f"shape {list(actual.shape)}, expected {list(reference.shape)}",
                          {"shape": list(actual.shape)}, kind=Kind.SHAPE)
    if actual.dtype != dtype:
        return Comparison(False, f"dtype {actual.dtype}, expected {dtype}", {"dtype": str(actual.dtype)},
                          kind=Kind.DTYPE)
    with np.errstate(all="ignore"):
        return _compare_values(actual.astype(np.float64), reference.astype(np.float64), oracle, bound,
                               tolerance, sides, float(ml_dtypes.finfo(dtype).max), data_format, variance)


def _compare_values(got: np.ndarray, ref: np.ndarray, oracle: np.ndarray, bound: np.ndarray,
                    tolerance: Tolerance, sides: int, largest: float, data_format: str,
                    variance: np.ndarray | None) -> Comparison:
    magnitude = np.abs(oracle)
    limit = tolerance.limit(bound, sides, magnitude)
    got_finite, ref_finite = np.isfinite(got), np.isfinite(ref)
    if got_finite.all() and ref_finite.all():  # the common case: no NaN/Inf status to check
        nonfinite_wrong = np.zeros(ref.shape, dtype=bool)
    else:
        nonfinite_wrong = _nonfinite_problems(got, ref, oracle, tolerance.limit(bound, 1, magnitude), largest)
    comparable = ref_finite & got_finite & np.isfinite(bound)
    error = np.where(comparable, np.abs(got - ref), 0.0)
    ratio = np.where(error > 0, error / limit, 0.0)  # limit 0 (exact) and error > 0 gives inf
    relative = np.where(comparable & (ref != 0), error / np.abs(ref), 0.0)
    over = (ratio > 1.0) | nonfinite_wrong
    severity = np.where(nonfinite_wrong, np.inf, ratio)

    def details(kind: str) -> dict[str, Any]:  # failures only: they cost a few passes over the output
        return failure_details(got, ref, limit, bound, nonfinite_wrong, data_format, kind)
    metrics: dict[str, Any] = {
        "elements": int(ref.size),
        "max_abs_error": float(error.max(initial=0.0)),
        "max_rel_error": float(relative.max(initial=0.0)),
        "max_error_in_limits": float(ratio.max(initial=0.0)),
        "elements_over_limit": int(over.sum()),
        "nonfinite_mismatches": int(nonfinite_wrong.sum()),
    }
    if ref.size:
        metrics["worst_index"] = _index(int(np.argmax(severity)), ref.shape)
        metrics["worst"] = _worst_elements(got, ref, limit, severity)
    if over.any():
        w = metrics["worst"][0]
        kind = Kind.ELEMENT  # over its limit, or (limit 0) not bitwise exact: the same check
        if nonfinite_wrong.any() and not np.isfinite(w["error_in_limits"]):
            what, kind = "non-finite mismatch", Kind.NONFINITE
        elif w["limit"] == 0:
            what = "not bitwise exact (exact integer data)"
        else:
            what = f"error {w['error_in_limits']:.3g}x the limit"
        return Comparison(False, f"{what} at {w['index']}: expected {w['expected']:.9g}, got {w['got']:.9g}, "
                                 f"limit {w['limit']:.3g}; {int(over.sum())} of {ref.size} elements off"
                                 + _precision_hint(tolerance, w["error_in_limits"]), metrics, details("elements"),
                          kind)
    if tolerance.statistics:
        mask = comparable & (bound > 0)
        verdict = _statistics(got - ref, tolerance.unit(bound), mask, tolerance, sides)
        if verdict.passed and variance is not None and tolerance.uses_rms(int(mask.sum())):
            # Against the exact oracle whatever the reference: a property of the backend's own rounding.
            verdict = _rounding_rms(got - oracle, tolerance.sigma(bound, magnitude, variance),
                                    mask & np.isfinite(oracle), tolerance, verdict.metrics)
        metrics.update(verdict.metrics)
        if not verdict.passed:
            return Comparison(False, verdict.reason, metrics, details("statistics"), verdict.kind)
    return Comparison(True, "", metrics)


def _worst_elements(got: np.ndarray, ref: np.ndarray, limit: np.ndarray, ratio: np.ndarray) -> list[dict]:
    flat = ratio.reshape(-1)
    order = worst_first(flat, WORST_ELEMENTS)
    return [{"index": _index(int(i), ref.shape), "expected": float(ref.flat[i]), "got": float(got.flat[i]),
             "error": float(abs(got.flat[i] - ref.flat[i])), "limit": float(limit.flat[i]),
             "error_in_limits": float(ratio.flat[i])}
            for i in order if ratio.flat[i] > 0]


# Errors within this many limits, in float16/bfloat16 over a wider accumulator, look like lost precision
# rather than a wrong computation: the message then names the likely cause.
PRECISION_HINT_RATIO = 64.0


def _precision_hint(tolerance: Tolerance, ratio: float) -> str:
    if not (tolerance.wide_accumulator and tolerance.random_data) or not 1.0 < ratio <= PRECISION_HINT_RATIO:
        return ""
    return (f" (likely cause: accumulation or an intermediate in lower precision than a {tolerance.accumulator} "
            "accumulator; a backend that accumulates in the dtype declares it: SUPPORTS accumulator)")


def _rounding_rms(error: np.ndarray, sigma: np.ndarray, mask: np.ndarray, tolerance: Tolerance,
                  metrics: dict[str, Any]) -> Comparison:
    """The probabilistic energy check (conformance.judging.tolerance): the root mean square of the errors against
    the oracle in units of each element's expected rounding error under the declared accumulator."""
    rms = float(np.sqrt(np.mean(np.square(error[mask] / sigma[mask]))))
    ratio = rms / tolerance.rms_limit()
    metrics = metrics | {"rms_in_sigmas": rms, "rms_in_limits": ratio}
    if ratio > 1.0:
        return Comparison(False, f"error energy: root mean square {rms:.3g} expected rounding errors, {ratio:.3g}x "
                                 f"its limit, over {int(mask.sum())} elements: more than rounding explains"
                                 + _precision_hint(tolerance, min(ratio, PRECISION_HINT_RATIO)), metrics,
                          kind=Kind.RMS)
    return Comparison(True, "", metrics)


def _statistics(difference: np.ndarray, unit: np.ndarray, mask: np.ndarray, tolerance: Tolerance,
                sides: int) -> Comparison:
    """TOSA-style tensor-level checks on normalized errors: systematic bias and excess energy."""
    count = int(mask.sum())
    if count == 0:
        return Comparison(True, "")
    normalized = difference[mask] / unit[mask]
    bias = abs(float(normalized.sum())) / tolerance.bias_limit(count, sides)
    energy = float(np.square(normalized).sum()) / tolerance.energy_limit(count, sides)
    metrics = {"bias_in_limits": bias, "energy_in_limits": energy,
               "mean_normalized_error": float(normalized.mean())}
    if bias > 1.0:
        return Comparison(False, f"systematic bias: mean error {normalized.mean():+.3g} units of u*B over "
                                 f"{count} elements is {bias:.3g}x the bias limit", metrics, kind=Kind.BIAS)
    if energy > 1.0:
        return Comparison(False, f"error energy {energy:.3g}x its limit: too many elements are off by more than "
                                 "rounding explains", metrics, kind=Kind.ENERGY)
    return Comparison(True, "", metrics)
