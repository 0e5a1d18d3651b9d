"""The comparison: shape/dtype first, NaN/Inf pattern, per-element limit, tensor statistics."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from conformance.judging.compare import compare
from conformance.judging.diagnostics import worst_first
from conformance.judging.tolerance import UNIT_ROUNDOFF, Tolerance
from conformance.result import Kind

F32 = np.dtype(np.float32)


def tolerance(exact: bool = False, accumulation: int = 10, statistics: bool = True) -> Tolerance:
    return Tolerance(UNIT_ROUNDOFF["float32"], 2.0**-149, accumulation, exact=exact, statistics=statistics)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    oracle = rng.standard_normal((2, 4, 4, 3))
    return oracle, np.abs(oracle) * 3 + 1.0


def test_rounded_oracle_passes(data):
    oracle, bound = data
    verdict = compare(oracle.astype(np.float32), oracle, oracle, bound, tolerance(), 1, F32)
    assert verdict.passed, verdict.reason
    assert 0 < verdict.metrics["max_error_in_limits"] < 1


def test_shape_and_dtype_are_checked_first(data):
    oracle, bound = data
    assert "shape" in compare(oracle[:1].astype(np.float32), oracle, oracle, bound, tolerance(), 1, F32).reason
    assert "dtype float64" in compare(oracle, oracle, oracle, bound, tolerance(), 1, F32).reason
    assert "not an array" in compare([1.0], oracle, oracle, bound, tolerance(), 1, F32).reason


def test_one_element_off_is_located(data):
    oracle, bound = data
    actual = oracle.astype(np.float32)
    actual[1, 2, 3, 0] *= 1.001
    verdict = compare(actual, oracle, oracle, bound, tolerance(), 1, F32)
    assert not verdict.passed
    assert verdict.metrics["worst_index"] == [1, 2, 3, 0]
    assert verdict.metrics["elements_over_limit"] == 1
    assert "at [1, 2, 3, 0]" in verdict.reason


def test_cancellation_is_judged_against_the_bound_not_the_value():
    # y = 1e-6 from terms of size ~1: a float32 result off by 1e-7 (10% relative) is still correct.
    oracle, bound = np.array([1e-6]), np.array([2.0])
    actual = np.array([1.1e-6], dtype=np.float32)
    assert compare(actual, oracle, oracle, bound, tolerance(statistics=False), 1, F32).passed


def test_nan_and_inf_must_match_the_reference(data):
    oracle, bound = data
    reference = oracle.copy()
    reference[0, 0, 0, 0], reference[0, 0, 0, 1] = np.nan, np.inf
    good = reference.astype(np.float32)
    assert compare(good, reference, oracle, bound, tolerance(), 2, F32).passed
    for wrong in (0.0, -np.inf, np.nan):
        bad = good.copy()
        bad[0, 0, 0, 1] = wrong
        verdict = compare(bad, reference, oracle, bound, tolerance(), 2, F32)
        assert not verdict.passed and verdict.metrics["nonfinite_mismatches"] == 1
    bad = good.copy()
    bad[1, 1, 1, 1] = np.inf  # finite reference, no overflow possible
    assert not compare(bad, reference, oracle, bound, tolerance(), 2, F32).passed


def test_overflow_is_allowed_only_where_plausible():
    f16 = np.dtype(np.float16)
    oracle, bound = np.array([65500.0, 10.0]), np.array([65500.0, 10.0])
    reference = oracle.astype(np.float16)
    actual = np.array([np.inf, 10.0], dtype=np.float16)
    tol = Tolerance(UNIT_ROUNDOFF["float16"], 2.0**-24, 10, statistics=False)
    assert compare(actual, reference, oracle, bound, tol, 2, f16).passed
    actual = np.array([-np.inf, 10.0], dtype=np.float16)
    assert not compare(actual, reference, oracle, bound, tol, 2, f16).passed


def test_exact_mode_requires_bitwise_equality():
    oracle, bound = np.array([3.0, -5.0]), np.array([3.0, 5.0])
    assert compare(oracle.astype(np.float32), oracle, oracle, bound, tolerance(exact=True), 1, F32).passed
    off = np.array([3.0, -5.0000005], dtype=np.float32)
    verdict = compare(off, oracle, oracle, bound, tolerance(exact=True), 1, F32)
    assert not verdict.passed and verdict.metrics["max_error_in_limits"] == float("inf")
    assert "not bitwise exact" in verdict.reason


def test_small_systematic_bias_is_caught_by_statistics():
    rng = np.random.default_rng(2)
    oracle = rng.standard_normal(20000)
    bound = np.abs(oracle) + 1.0
    unit = UNIT_ROUNDOFF["float32"] * bound
    biased = (oracle + 2.0 * unit).astype(np.float32)  # 2 units per element: far under the 10-unit limit
    verdict = compare(biased, oracle, oracle, bound, tolerance(), 1, F32)
    assert not verdict.passed and "systematic bias" in verdict.reason
    assert verdict.metrics["max_error_in_limits"] < 1


def test_bfloat16_outputs_are_compared_in_their_own_precision():
    bf16 = np.dtype(ml_dtypes.bfloat16)
    oracle = np.array([1.0, 2.0, 3.0])
    tol = Tolerance(UNIT_ROUNDOFF["bfloat16"], 2.0**-133, 4)
    assert compare(oracle.astype(bf16), oracle, oracle, oracle, tol, 1, bf16).passed


@pytest.mark.parametrize("size", [7, 5_000, 300_001])
def test_the_largest_elements_are_found_exactly(size):
    """The block-maxima shortcut finds the same values as a full partition, largest first: with ties,
    zeros and inf (one finder for the worst elements of a comparison and of the error maps)."""
    rng = np.random.default_rng(size)
    for trial in range(20):
        flat = np.abs(rng.standard_normal(size)) * 10.0 ** rng.integers(-8, 3)
        if trial % 4 == 1:
            flat[rng.random(size) < 0.9] = 0.0  # mostly exact
        if trial % 4 == 2:
            flat = np.round(flat, 1)  # many ties
        if trial % 4 == 3:
            flat[rng.integers(0, size, 3)] = np.inf
        count = min(5, size)
        expected = np.sort(flat)[size - count:]
        found = flat[worst_first(flat, count)]
        assert np.array_equal(found, expected[::-1])


# --- the kind of each failing check (Comparison.kind): what tools classify by, never the reason's text -------
def test_each_failing_check_names_its_kind(data):
    oracle, bound = data
    rounded = oracle.astype(np.float32)
    assert compare(rounded, oracle, oracle, bound, tolerance(), 1, F32).kind is Kind.NONE
    assert compare([1.0], oracle, oracle, bound, tolerance(), 1, F32).kind is Kind.NOT_ARRAY
    assert compare(rounded[:1], oracle, oracle, bound, tolerance(), 1, F32).kind is Kind.SHAPE
    assert compare(oracle, oracle, oracle, bound, tolerance(), 1, F32).kind is Kind.DTYPE
    off = rounded.copy()
    off[1, 2, 3, 0] *= 1.001
    assert compare(off, oracle, oracle, bound, tolerance(), 1, F32).kind is Kind.ELEMENT
    reference = oracle.copy()
    reference[0, 0, 0, 0] = np.nan
    assert compare(rounded, reference, oracle, bound, tolerance(), 2, F32).kind is Kind.NONFINITE


def test_not_bitwise_exact_is_an_element_over_its_limit():
    """Exact (integer) data: limit 0, the same per-element check, so the same kind (shrink may move a
    failure on random data to integer data and keep calling it the same failure)."""
    oracle, bound = np.array([3.0, -5.0]), np.array([3.0, 5.0])
    off = np.array([3.0, -5.0000005], dtype=np.float32)
    assert compare(off, oracle, oracle, bound, tolerance(exact=True), 1, F32).kind is Kind.ELEMENT


def test_bias_and_energy_have_kinds_of_their_own():
    rng = np.random.default_rng(2)
    oracle = rng.standard_normal(20000)
    bound = np.abs(oracle) + 1.0
    unit = UNIT_ROUNDOFF["float32"] * bound
    biased = compare((oracle + 2.0 * unit).astype(np.float32), oracle, oracle, bound, tolerance(), 1, F32)
    assert (biased.passed, biased.kind) == (False, Kind.BIAS)
    signs = np.where(np.arange(oracle.size) % 2, 1.0, -1.0)  # as many up as down: no bias
    noisy = compare((oracle + 4.0 * unit * signs).astype(np.float32), oracle, oracle, bound, tolerance(), 1, F32)
    assert (noisy.passed, noisy.kind) == (False, Kind.ENERGY), noisy.reason
    assert noisy.metrics["max_error_in_limits"] < 1 and noisy.metrics["bias_in_limits"] < 1


def test_the_probabilistic_rms_check_has_its_kind():
    """float16 over a float32 accumulator: errors the classic checks allow, but many times the expected
    rounding error."""
    f16 = np.dtype(np.float16)
    rng = np.random.default_rng(3)
    oracle = rng.standard_normal(4096)
    bound, variance = np.abs(oracle) * 10 + 1.0, oracle**2
    tol = Tolerance(UNIT_ROUNDOFF["float16"], 2.0**-24, 10, accumulator="float32")
    assert tol.uses_rms(oracle.size)
    rounded = compare(oracle.astype(f16), oracle, oracle, bound, tol, 1, f16, variance=variance)
    assert (rounded.passed, rounded.kind) == (True, Kind.NONE), rounded.reason
    signs = np.where(np.arange(oracle.size) % 2, 1.0, -1.0)
    off = (oracle + 4 * UNIT_ROUNDOFF["float16"] * np.abs(oracle) * signs).astype(f16)
    verdict = compare(off, oracle, oracle, bound, tol, 1, f16, variance=variance)
    assert (verdict.passed, verdict.kind) == (False, Kind.RMS), verdict.reason
    assert verdict.metrics["energy_in_limits"] < 1 and verdict.metrics["rms_in_limits"] > 1
