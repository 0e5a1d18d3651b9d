"""Bugs recognized by recomputing the operator with the bug in it: the depthwise filter's taps read the
wrong way, or the padding put on the wrong sides.

These bugs change every output element by amounts that look like noise (a SAME padding split the wrong
way at stride 2 is no shift of the output), so no relation between the output and the reference
(conformance.judging.detectors) shows them; only the hypothesis, recomputed, does. Each hypothesis costs
one evaluation of the oracle at the case's size, so they run only for a failing output that no detector
explained, in HYPOTHESES' order, the first that holds being reported. A hypothesis is claimed when every
comparable element of the output is within the tolerance model's limit of its exact (float64) value, for
one computed side, and the reference itself is not (a symmetric kernel or padding cannot tell)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from conformance.cases import contract
from conformance.cases.case import Case
from conformance.cases.data import Inputs
from conformance.judging.detectors import Relation, fits
from conformance.judging.oracle import compute_oracle
from conformance.judging.tolerance import Tolerance

# what -> how to say it, and the case and inputs with the bug in them (None: it would change nothing).
Hypothesis = tuple[str, Callable[[Case, Inputs], tuple[str, Case, Inputs] | None]]


def _filter_read(read: Callable[[np.ndarray], np.ndarray], sentence: str) -> Callable[..., tuple | None]:
    def apply(case: Case, inputs: Inputs) -> tuple[str, Case, Inputs] | None:
        filters = inputs.depthwise_filter
        variant = read(filters)
        if np.array_equal(variant, filters, equal_nan=True):
            return None
        return sentence, case, dataclasses.replace(inputs, depthwise_filter=variant)
    return apply


def _column_order(dw: np.ndarray) -> np.ndarray:
    kh, kw, c, m = dw.shape
    return np.ascontiguousarray(dw).reshape(kw, kh, c, m).transpose(1, 0, 2, 3)


def _padding_swapped(rows: bool, columns: bool) -> Callable[[Case, Inputs], tuple[str, Case, Inputs] | None]:
    """TensorFlow's padding with top and bottom (rows) and/or left and right (columns) swapped; applies only
    where each swapped pair is unequal, so no two hypotheses compute the same thing."""
    def apply(case: Case, inputs: Inputs) -> tuple[str, Case, Inputs] | None:
        g = contract.geometry(case)
        if (rows and g.pad_top == g.pad_bottom) or (columns and g.pad_left == g.pad_right):
            return None
        top, bottom = (g.pad_bottom, g.pad_top) if rows else (g.pad_top, g.pad_bottom)
        left, right = (g.pad_right, g.pad_left) if columns else (g.pad_left, g.pad_right)
        sides = " and ".join(name for name, on in (("top and bottom", rows), ("left and right", columns)) if on)
        same = "; SAME puts the odd pixel after" if case.padding == "SAME" else ""
        sentence = (f"TensorFlow's padding with its {sides} swapped (top {top}, bottom {bottom}, left {left}, "
                    f"right {right} where TensorFlow pads top {g.pad_top}, bottom {g.pad_bottom}, "
                    f"left {g.pad_left}, right {g.pad_right}{same})")
        return sentence, dataclasses.replace(case, padding=((top, bottom), (left, right))), inputs
    return apply


HYPOTHESES: tuple[Hypothesis, ...] = (
    ("padding on the wrong sides", _padding_swapped(rows=True, columns=True)),
    ("padding on the wrong sides", _padding_swapped(rows=True, columns=False)),
    ("padding on the wrong sides", _padding_swapped(rows=False, columns=True)),
    ("transposed kernel", _filter_read(_column_order, "the depthwise filter's taps read in column order (its buffer "
                                       "indexed [kw, kh] instead of [kh, kw]: a square kernel transposed)")),
    ("kernel rotated 180°", _filter_read(lambda dw: dw[::-1, ::-1], "the depthwise kernel rotated by 180 degrees "
                                         "(a convolution, where TensorFlow computes a cross-correlation)")),
    ("kernel rows flipped", _filter_read(lambda dw: dw[::-1], "the depthwise kernel's rows in reverse order")),
    ("kernel columns flipped", _filter_read(lambda dw: dw[:, ::-1], "the depthwise kernel's columns in reverse order")),
)


def recomputed_relation(case: Case, inputs: Inputs, got: np.ndarray, reference: np.ndarray,
                        tolerance: Tolerance) -> Relation | None:
    """The first hypothesis the output (float64, the case's layout) fits, or None."""
    with np.errstate(invalid="ignore", over="ignore"):
        for what, hypothesis in HYPOTHESES:
            if (applied := hypothesis(case, inputs)) is None:
                continue
            sentence, buggy_case, buggy_inputs = applied
            oracle = compute_oracle(buggy_case, buggy_inputs, with_variance=False)  # the limit takes no variance
            limit = tolerance.limit(oracle.bound, 1, np.abs(oracle.output))
            if fits(got, oracle.output, limit) and not fits(reference, oracle.output, limit):
                return what, f"the output is what {sentence} gives"
    return None
