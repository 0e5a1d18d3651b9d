"""The tolerance model: how far from the reference a correct implementation may land.

Error analysis (Higham, ch. 3) for one output element y = sum_k p_k * z_k, z_k = sum_t x_t * w_t:
the depthwise stage is a dot product of T = kh*kw taps, its result is rounded to the dtype (the
intermediate), and the pointwise stage is a dot product of K = C*M terms. In any summation order, with
or without FMA, with any accumulator at least as precise as the dtype,

    |y_computed - y_exact| <= (T + K + 1) * (u * B + eta)          (to first order in u)

where u is the dtype's unit roundoff, eta its smallest subnormal (the absolute error one gradual
underflow may add), and B the bound tensor: the same operation on absolute values,
B = sum_k |p_k| * sum_t |x_t| * |w_t|. B, not |y|, is the right scale: it stays sound under
cancellation, where y is small but its rounding errors are not.

A comparison between two computed results (backend vs TensorFlow) allows the errors of both sides.
Every limit also allows 2^-53 * B for the oracle's own rounding to float64 (it is computed in extended
precision for float64 cases).
Integer data with exact sums (data: integers) leaves no rounding at all: the limit is zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from conformance.case import Case

UNIT_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24, "float64": 2.0**-53}
ORACLE_ROUNDOFF = 2.0**-53
SMALLEST_SUBNORMAL = {"float16": 2.0**-24, "bfloat16": 2.0**-133, "float32": 2.0**-149, "float64": 2.0**-1074}
# Tensor-level checks (after TOSA's DOT_PRODUCT compliance mode): with e_i the error normalized by
# u*B_i + eta, a correct implementation's errors are a sum of at most KS roundings each within one unit,
# zero-mean under round-to-nearest, so sum(e_i^2) <= ENERGY * KS * n and |sum(e_i)| <= BIAS * sqrt(KS * n).
ENERGY = 0.4
BIAS = 2.0


@dataclass(frozen=True)
class Tolerance:
    """The per-element limit and tensor-level thresholds for one case."""

    unit_roundoff: float
    underflow: float
    accumulation: int  # KS = kh*kw + C*M + 1
    scale: float = 1.0
    atol: float = 0.0
    exact: bool = False
    statistics: bool = True

    @classmethod
    def for_case(cls, case: Case) -> Tolerance:
        kh, kw = case.kernel
        return cls(unit_roundoff=UNIT_ROUNDOFF[case.dtype], underflow=SMALLEST_SUBNORMAL[case.dtype],
                   accumulation=kh * kw + case.depthwise_channels + 1, scale=case.tolerance.scale,
                   atol=case.tolerance.atol, exact=case.data == "integers",
                   statistics=case.tolerance.statistics and case.data != "integers")

    def unit(self, bound: np.ndarray) -> np.ndarray:
        """One unit of normalized error per element: u * B + eta."""
        return self.unit_roundoff * bound + self.underflow

    def limit(self, bound: np.ndarray, sides: int) -> np.ndarray:
        """Per-element limit on |actual - reference|; `sides` computed results carry rounding error
        (2 for backend vs TensorFlow, 1 for anything vs the exact oracle)."""
        if self.exact:
            return np.full(bound.shape, self.atol)
        return sides * self.scale * self.accumulation * self.unit(bound) + ORACLE_ROUNDOFF * bound + self.atol

    def energy_limit(self, count: int, sides: int) -> float:
        return ENERGY * sides * self.scale**2 * self.accumulation * count

    def bias_limit(self, count: int, sides: int) -> float:
        return BIAS * self.scale * float(np.sqrt(sides * self.accumulation * count))

    def describe(self) -> str:
        if self.exact:
            return f"exact (integer data), atol {self.atol:g}"
        return (f"{self.scale:g} * {self.accumulation} * (u*B + eta), u = 2^{int(np.log2(self.unit_roundoff))}"
                + (f", atol {self.atol:g}" if self.atol else ""))
