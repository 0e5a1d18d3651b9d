"""The tolerance model: how far from the reference a correct implementation may land.

One output element is y = sum_k p_k * z_k with z_k = sum_t x_t * w_t: T = kh*kw taps in the depthwise
stage, K = C*M terms in the pointwise stage. Its errors have three sources, kept apart (Higham, *Accuracy
and Stability of Numerical Algorithms*, ch. 3, to first order in the unit roundoffs):

- accumulation, in the accumulator's precision u_a, over the T taps and the K terms:
  at most (T + K) * (u_a * B + eta_a);
- rounding of the intermediate z_k to the dtype (storage unit roundoff u): at most u * sum_k |p_k z_k|
  <= u * B, plus an underflow of eta per z_k;
- rounding of the result to the dtype: at most u * |y| + eta.

B is the bound tensor, the same operation on absolute values, B = sum_k |p_k| * sum_t |x_t| * |w_t|; eta
and eta_a are the smallest subnormals of the dtype and of the accumulator. B, not |y|, is the scale of the
accumulation and intermediate errors: it stays sound under cancellation, where y is small but those
errors are not.

The accumulator: float32 and float64 accumulate in themselves (u_a = u, and the three sources merge into
the classic (T + K + 1) * (u * B + eta)); float16 and bfloat16 accumulate in float32 by default (TensorFlow's
oneDNN CPU path, oneDNN, cuDNN; TOSA requires it for bfloat16, measured in
docs/research/tf-low-precision-2026-12). A backend that accumulates in the dtype itself says so in its
SUPPORTS (`accumulator: {float16: float16}`) and is judged by the worst case of that accumulator. For
float16/bfloat16 with float32 accumulation the limit therefore no longer grows with K: a worst case
multiplied by K is vacuous once K*u nears 1 (an all-zeros output passed in bfloat16 at K >= 256).

Tensor-level statistics catch what a per-element limit lets through:
- bias: |sum e_i| <= 2 * sqrt(sides * KS * n), e_i the error in units of u*B_i + eta (TOSA);
- energy, float32/float64 and dtype accumulators: sum e_i^2 <= 0.4 * sides * KS * n;
- energy, float16/bfloat16 over a wider accumulator (probabilistic, after Higham & Mary 2019): each error
  normalized by its expected rounding error sigma_i = sqrt(u^2 (V_i + y_i^2) / 3 + u_a^2 (T + K) B_i^2 / 3)
  + eta * sqrt(T + K + 1), V_i = sum_k p_k^2 z_k^2 (a round-to-nearest error is at most u*|x| with variance at
  most u^2 x^2 / 3); the root mean square of e_i/sigma_i, e_i the error against the exact oracle whatever
  the reference (it judges the backend's own rounding, so TensorFlow's errors do not dilute it), must stay
  <= 2. It does not grow with K. Measured (docs/research/tf-low-precision-2026-12): correct
  implementations reach 0.85 on random data (1.42 on constant data), TensorFlow's dtype-accumulating
  Eigen path 1.51; all zeros >= 253, float16 at bfloat16 precision 6 to 13, float16 accumulation of the
  pointwise sum 3.2 at K = 64 and 6 to 24 at K >= 256. It runs on continuous random data with at least
  64 elements (a constant or crafted input can push correct rounding to 3.4 sigma everywhere, and a
  handful of elements says nothing about a mean). False alarms: none of 155 runs per correct
  implementation (5 shapes x 20 seeds of normal data, uniform, positive and constant data) nor on the bank
  with any of the selftest's 7 correct implementations; the bound is empirical, not proven.

A comparison between two computed results (backend vs TensorFlow) allows the errors of both sides. Every
limit also allows 2^-53 * B for the oracle's own rounding to float64 (it is computed in extended precision
for float64 cases). Integer data with exact sums (data: integers) leaves no rounding at all: the limit is
zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from conformance.cases.case import Case

UNIT_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24, "float64": 2.0**-53}
ORACLE_ROUNDOFF = 2.0**-53
SMALLEST_SUBNORMAL = {"float16": 2.0**-24, "bfloat16": 2.0**-133, "float32": 2.0**-149, "float64": 2.0**-1074}
# The accumulator each dtype is judged with unless a backend declares another (SUPPORTS `accumulator`).
DEFAULT_ACCUMULATOR = {"float16": "float32", "bfloat16": "float32", "float32": "float32", "float64": "float64"}
# Tensor-level checks (after TOSA's DOT_PRODUCT compliance mode), in units of u*B_i + eta.
ENERGY = 0.4
BIAS = 2.0
# The probabilistic energy check: root mean square of e_i / sigma_i against the oracle; on at least this many
# elements of continuous random data.
RMS_LIMIT = 2.0
RMS_MIN_ELEMENTS = 64
RANDOM_DATA = ("normal", "uniform", "positive", "nonfinite")


@dataclass(frozen=True)
class Tolerance:
    """The per-element limit and tensor-level thresholds for one case."""

    unit_roundoff: float  # u: the dtype's
    underflow: float  # eta: the dtype's smallest subnormal
    accumulation: int  # KS = kh*kw + C*M + 1
    scale: float = 1.0
    atol: float = 0.0
    exact: bool = False
    statistics: bool = True
    accumulator: str = ""  # the accumulator's dtype; "" (or the dtype itself): the dtype's own precision
    random_data: bool = True  # continuous random data: the probabilistic check applies

    @classmethod
    def for_case(cls, case: Case, accumulators: Mapping[str, str] | None = None) -> Tolerance:
        """`accumulators`: what a backend declares (dtype -> accumulator dtype); DEFAULT_ACCUMULATOR else."""
        kh, kw = case.kernel
        accumulator = (accumulators or {}).get(case.dtype, DEFAULT_ACCUMULATOR[case.dtype])
        return cls(unit_roundoff=UNIT_ROUNDOFF[case.dtype], underflow=SMALLEST_SUBNORMAL[case.dtype],
                   accumulation=kh * kw + case.depthwise_channels + 1, scale=case.tolerance.scale,
                   atol=case.tolerance.atol, exact=case.data == "integers",
                   statistics=case.tolerance.statistics and case.data != "integers",
                   accumulator=accumulator, random_data=case.data in RANDOM_DATA)

    @property
    def wide_accumulator(self) -> bool:
        """Whether the accumulator is more precise than the dtype (float16/bfloat16 over float32)."""
        return bool(self.accumulator) and UNIT_ROUNDOFF[self.accumulator] < self.unit_roundoff

    @property
    def accumulator_roundoff(self) -> float:
        return UNIT_ROUNDOFF[self.accumulator] if self.wide_accumulator else self.unit_roundoff

    def unit(self, bound: np.ndarray) -> np.ndarray:
        """One unit of normalized error per element: u * B + eta."""
        return self.unit_roundoff * bound + self.underflow

    def coefficients(self) -> tuple[float, float, float]:
        """(c_B, c_y, c_0): one result's worst-case error is c_B * B + c_y * |y| + c_0 per element (module
        docstring). With the dtype's own accumulator: KS * (u*B + eta). With a wider one: accumulation
        (T+K) * (u_a*B + eta_a), the intermediate's rounding u*B + (T+K)*eta (K underflows at most), the
        result's u*|y| + eta."""
        u, eta, terms = self.unit_roundoff, self.underflow, self.accumulation - 1  # terms: T + K
        if not self.wide_accumulator:
            return self.accumulation * u, 0.0, self.accumulation * eta
        eta_a = SMALLEST_SUBNORMAL[self.accumulator]
        return terms * self.accumulator_roundoff + u, u, terms * eta_a + terms * eta + eta

    def single_side(self, bound: np.ndarray, magnitude: np.ndarray) -> np.ndarray:
        """The worst-case error of one computed result, per element; `magnitude`: |y|."""
        c_bound, c_magnitude, c_constant = self.coefficients()
        return c_bound * bound + c_magnitude * magnitude + c_constant

    def limit(self, bound: np.ndarray, sides: int, magnitude: np.ndarray | None = None) -> np.ndarray:
        """Per-element limit on |actual - reference|; `sides` computed results carry rounding error
        (2 for backend vs TensorFlow, 1 for anything vs the exact oracle); `magnitude`: |y| (the oracle's
        absolute value; its rounding term is bounded by B where it is not given)."""
        if self.exact:
            return np.full(bound.shape, self.atol)
        size = bound if magnitude is None else magnitude
        return sides * self.scale * self.single_side(bound, size) + ORACLE_ROUNDOFF * bound + self.atol

    def sigma(self, bound: np.ndarray, magnitude: np.ndarray, variance: np.ndarray) -> np.ndarray:
        """Expected rounding error per element of one result over a wide accumulator (module docstring)."""
        terms = self.accumulation - 1
        u, u_a = self.unit_roundoff, self.accumulator_roundoff
        spread = np.sqrt(u * u * (variance + magnitude * magnitude) / 3 + u_a * u_a * terms * bound * bound / 3)
        return spread + self.underflow * float(np.sqrt(self.accumulation))  # eta per rounding, T+K+1 of them

    def uses_rms(self, count: int) -> bool:
        """Whether the probabilistic energy check applies (else the classic energy check)."""
        return self.wide_accumulator and self.random_data and count >= RMS_MIN_ELEMENTS

    def rms_limit(self) -> float:
        return RMS_LIMIT * self.scale

    def energy_limit(self, count: int, sides: int) -> float:
        return ENERGY * sides * self.scale**2 * self.accumulation * count

    def bias_limit(self, count: int, sides: int) -> float:
        return BIAS * self.scale * float(np.sqrt(sides * self.accumulation * count))

    def describe(self) -> str:
        if self.exact:
            return f"exact (integer data), atol {self.atol:g}"
        if self.wide_accumulator:
            return (f"{self.scale:g} * ((T+K) * (u_a*B + eta_a) + u*B + u*|y|), "
                    f"u = 2^{int(np.log2(self.unit_roundoff))}, {self.accumulator} accumulator"
                    + (f", atol {self.atol:g}" if self.atol else ""))
        return (f"{self.scale:g} * {self.accumulation} * (u*B + eta), u = 2^{int(np.log2(self.unit_roundoff))}"
                + (f", atol {self.atol:g}" if self.atol else ""))
