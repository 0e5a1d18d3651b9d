"""Seeded inputs for a case, in its dtype and layout.

Values are drawn in float64 and rounded once to the case's dtype; the oracle sees exactly those rounded
values (widened back to float64), so the only error a backend may add is its own arithmetic's.

Distributions: normal N(0, 1); uniform U(-1, 1); integers (exact sums, see integer_range); nonfinite
(normal with NaN/Inf in the input); positive U(0, 1) for all three tensors, so no output has cancellation
and every rounding error biased toward zero adds up (catches truncation instead of rounding to nearest);
subnormal (the input N(0, 1) scaled to a quarter of the dtype's smallest normal, so most inputs and many
intermediates and outputs are subnormal: catches flush-to-zero and denormals-are-zero). The pointwise
filter is scaled by 1/sqrt(C*M) in every continuous distribution.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from conformance.cases import contract
from conformance.cases.case import Case

# Significand precision p (including the implicit bit): integers up to 2**p are exact.
PRECISION_BITS = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}
NONFINITE_FRACTION = 0.02  # share of input elements replaced by NaN, +Inf or -Inf
SUBNORMAL_SCALE = 0.25  # subnormal data: input standard deviation, in units of the smallest normal


def numpy_dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


@dataclass(frozen=True)
class Inputs:
    """The operator's three tensors, in the case's dtype; input is in the case's layout."""

    input: np.ndarray
    depthwise_filter: np.ndarray
    pointwise_filter: np.ndarray
    output_gradient: np.ndarray | None = None  # backward cases: dL/d(output), the output's shape and layout


def integer_range(case: Case) -> int:
    """Largest r such that values in [-r, r] keep every partial sum exactly representable.

    |depthwise sum| <= kh*kw*r^2 and |pointwise sum| <= C*M*kh*kw*r^3 must stay <= 2**p; 0 means
    no such r exists for this case's sizes and dtype. Closed form: for integers a >= 1 and n >= 0,
    a * r^k <= n exactly when r^k <= n // a. A term with no products (a zero size, in an error case)
    bounds nothing: r is then only kept exact itself, r <= 2**p.
    """
    taps = case.kernel[0] * case.kernel[1]
    limit = 2 ** PRECISION_BITS[case.dtype]
    r = limit
    if taps > 0:
        r = min(r, math.isqrt(limit // taps))
        if case.depthwise_channels > 0:
            r = min(r, _floor_cube_root(limit // (case.depthwise_channels * taps)))
    return r


def _floor_cube_root(n: int) -> int:
    """Largest r >= 0 with r**3 <= n, for 0 <= n < 2**64: a float estimate, then corrected exactly."""
    r = round(n ** (1 / 3))
    while r**3 > n:
        r -= 1
    while (r + 1) ** 3 <= n:
        r += 1
    return r


def _draw(rng: np.random.Generator, shape: tuple[int, ...], case: Case, scale: float) -> np.ndarray:
    if case.data == "positive":
        return rng.uniform(0.0, 1.0, shape) * scale
    if case.data == "uniform":
        return rng.uniform(-1.0, 1.0, shape) * scale
    if case.data == "integers":
        r = integer_range(case)
        return rng.integers(-r, r, size=shape, endpoint=True).astype(np.float64)
    return rng.standard_normal(shape) * scale


def _gradient_shape(case: Case) -> tuple[int, ...]:
    """The output's shape (layout order); for a forbidden case, whose output may have no size, at least 1
    in each dimension (the call must be made for the backend to reject it)."""
    try:
        return tuple(max(1, size) for size in contract.output_shape(case))
    except (ValueError, ZeroDivisionError):
        return (1, 1, 1, 1)


def materialize(case: Case) -> Inputs:
    """Draw the case's inputs. Deterministic in (seed, id): the same case gets the same data anywhere."""
    rng = np.random.default_rng([case.seed, zlib.crc32(case.id.encode())])
    dtype = numpy_dtype(case.dtype)
    # Scale the pointwise filter so outputs stay O(1) whatever C*M is (keeps float16 far from overflow).
    pw_scale = 1.0 / np.sqrt(max(case.pointwise_shape[2] if len(case.pointwise_shape) == 4 else 1, 1))
    # An input override (error cases) is drawn in the shape as passed; otherwise [N, H, W, C], then laid out.
    override = case.input_tensor_shape
    x = _draw(rng, case.input if override is None else override, case, 1.0)
    if case.data == "subnormal":
        x *= SUBNORMAL_SCALE * float(ml_dtypes.finfo(dtype).smallest_normal)
    if case.data == "nonfinite":
        flat = x.reshape(-1)
        picked = rng.random(flat.size) < NONFINITE_FRACTION
        flat[picked] = rng.choice([np.nan, np.inf, -np.inf], size=int(picked.sum()))
    if case.data_format == "NCHW" and override is None:
        x = x.transpose(0, 3, 1, 2)
    dw = _draw(rng, case.depthwise_shape, case, 1.0)
    pw = _draw(rng, case.pointwise_shape, case, pw_scale)
    gradient = None
    if case.mode == "backward":  # drawn last: the other tensors stay as they were
        gradient = np.ascontiguousarray(_draw(rng, _gradient_shape(case), case, 1.0)).astype(dtype)
    return Inputs(np.ascontiguousarray(x).astype(dtype), dw.astype(dtype), pw.astype(dtype), gradient)
