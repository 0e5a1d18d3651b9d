"""The high-precision oracle and the bound tensor.

The oracle evaluates the contract's formula on the dtype-rounded inputs in float64 (in extended
precision, np.longdouble, for float64 cases where the platform has it), so its own error is negligible
next to any tolerance: for float32 and lower it is below 2^-53 * KS * B, for float64 below
2^-64 * KS * B on x86. The bound is the same computation on absolute values (see conformance.judging.tolerance).
Non-finite inputs propagate as IEEE arithmetic says (Inf * 0 = NaN, Inf - Inf = NaN); padding is zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from conformance.cases import contract
from conformance.cases.case import Case
from conformance.cases.data import Inputs

LOW_PRECISION = ("float16", "bfloat16")  # dtypes stored more narrowly than they are accumulated by default


@dataclass(frozen=True)
class OracleOutputs:
    """Exact-enough result and bound tensor, both in the case's layout, float64."""

    output: np.ndarray
    bound: np.ndarray
    # float16/bfloat16 only: sum_k p_k^2 z_k^2 per output element (z_k the exact intermediates), the scale of
    # the expected error from rounding the intermediates to the dtype (conformance.judging.tolerance). None otherwise.
    variance: np.ndarray | None = None


def working_precision(case: Case) -> type:
    if case.dtype == "float64" and np.finfo(np.longdouble).nmant > np.finfo(np.float64).nmant:
        return np.longdouble
    return np.float64


def _separable(case: Case, x: np.ndarray, dw: np.ndarray, pw: np.ndarray, squared: bool = False) -> np.ndarray:
    """The contract's formula on NHWC arrays, one dilated, strided window tap at a time; `squared`: the
    pointwise stage on squares instead, sum_k pw_k^2 * z_k^2."""
    g = contract.geometry(case)
    (kh, kw), (sh, sw), (rh, rw) = case.kernel, case.spatial_strides, case.rates
    padded = np.pad(x, ((0, 0), (g.pad_top, g.pad_bottom), (g.pad_left, g.pad_right), (0, 0)))
    n, c, m = case.batch, case.in_channels, case.channel_multiplier
    depthwise = np.zeros((n, g.out_h, g.out_w, c, m), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = padded[:, i * rh: i * rh + (g.out_h - 1) * sh + 1: sh,
                            j * rw: j * rw + (g.out_w - 1) * sw + 1: sw, :]
            depthwise += window[..., :, None] * dw[i, j]
    # Intermediate channel q*M + r pairs with pointwise_filter[0, 0, q*M + r, :].
    flat = depthwise.reshape(n * g.out_h * g.out_w, c * m)
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.square(flat) @ np.square(pw[0, 0]) if squared else flat @ pw[0, 0]
    return out.reshape(n, g.out_h, g.out_w, case.out_channels)


def compute_oracle(case: Case, inputs: Inputs, with_variance: bool = True) -> OracleOutputs:
    """Oracle and bound for a valid case, in its layout; with_variance=False leaves out the variance (a third
    evaluation of the formula, for float16/bfloat16) where the caller does not judge with it."""
    precision = working_precision(case)
    x: np.ndarray = inputs.input.astype(precision)
    if case.data_format == "NCHW":
        x = x.transpose(0, 2, 3, 1)
    dw: np.ndarray = inputs.depthwise_filter.astype(precision)
    pw: np.ndarray = inputs.pointwise_filter.astype(precision)
    with np.errstate(invalid="ignore", over="ignore"):
        output = _separable(case, x, dw, pw)
        bound = _separable(case, np.abs(x), np.abs(dw), np.abs(pw))
        variance = _separable(case, x, dw, pw, squared=True) if with_variance and case.dtype in LOW_PRECISION else None
    if case.data_format == "NCHW":
        output, bound = output.transpose(0, 3, 1, 2), bound.transpose(0, 3, 1, 2)
        variance = None if variance is None else variance.transpose(0, 3, 1, 2)
    return OracleOutputs(np.ascontiguousarray(output, dtype=np.float64),
                         np.ascontiguousarray(bound, dtype=np.float64),
                         None if variance is None else np.ascontiguousarray(variance, dtype=np.float64))
