"""Bugs in how a backend reads the depthwise filter's taps, recognized by recomputing the operator with
the filter read that way:
- "transposed kernel": the filter buffer indexed [kw, kh] instead of [kh, kw] (a square kernel is read
  transposed, a non-square one in column order);
- "kernel rotated 180°": a true convolution instead of TensorFlow's cross-correlation;
- "kernel rows flipped", "kernel columns flipped": one axis of the window walked backwards.

These bugs change every output element by amounts that look like noise, so no relation between the output
and the reference (conformance.judging.detectors) shows them; only the hypothesis, recomputed, does.
Each variant costs one evaluation of the oracle at the case's size, so it runs only for a failing output
that no detector explained. A variant is claimed when every comparable element of the output is within
the tolerance model's limit of the variant's exact (float64) value, for one computed side, and the
reference itself is not (a symmetric kernel cannot tell a variant from the truth)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from conformance.cases.case import Case
from conformance.cases.data import Inputs
from conformance.judging.detectors import Relation, fits
from conformance.judging.oracle import compute_oracle
from conformance.judging.tolerance import Tolerance


def _column_order(dw: np.ndarray) -> np.ndarray:
    kh, kw, c, m = dw.shape
    return np.ascontiguousarray(dw).reshape(kw, kh, c, m).transpose(1, 0, 2, 3)


VARIANTS: tuple[tuple[str, str, Callable[[np.ndarray], np.ndarray]], ...] = (
    ("transposed kernel", "the depthwise filter's taps read in column order (its buffer indexed [kw, kh] instead "
                          "of [kh, kw]: a square kernel transposed)", _column_order),
    ("kernel rotated 180°", "the depthwise kernel rotated by 180 degrees (a convolution, where TensorFlow "
                            "computes a cross-correlation)", lambda dw: dw[::-1, ::-1]),
    ("kernel rows flipped", "the depthwise kernel's rows in reverse order", lambda dw: dw[::-1]),
    ("kernel columns flipped", "the depthwise kernel's columns in reverse order", lambda dw: dw[:, ::-1]),
)


def kernel_relation(case: Case, inputs: Inputs, got: np.ndarray, reference: np.ndarray,
                    tolerance: Tolerance) -> Relation | None:
    """The first variant the output (float64, the case's layout) is, or None."""
    filters = inputs.depthwise_filter
    if filters.shape[0] * filters.shape[1] < 2:
        return None  # a 1x1 kernel reads the same whatever the order
    with np.errstate(invalid="ignore", over="ignore"):
        for what, sentence, read in VARIANTS:
            variant = read(filters)
            if np.array_equal(variant, filters, equal_nan=True):
                continue
            oracle = compute_oracle(case, dataclasses.replace(inputs, depthwise_filter=variant))
            limit = tolerance.limit(oracle.bound, 1, np.abs(oracle.output))
            if fits(got, oracle.output, limit) and not fits(reference, oracle.output, limit):
                return what, f"the output is what {sentence} gives"
    return None
