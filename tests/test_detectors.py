"""Relations between a failing output and its reference (conformance.judging.detectors) and kernels read
the wrong way (conformance.judging.hypotheses): each claimed only when every element fits it, found
on real buggy backends in both layouts, and carried into the failure groups (conformance.reporting.diagnosis)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conformance.cases.data import materialize
from conformance.cases.loader import load_cases
from conformance.execution.backends import Backend
from conformance.execution.runner import run_case
from conformance.impls import mutants
from conformance.impls.numpy_backend import separable_conv2d
from conformance.judging.detectors import detect
from conformance.judging.hypotheses import recomputed_relation
from conformance.judging.oracle import compute_oracle
from conformance.judging.references import OracleReference
from conformance.judging.tolerance import Tolerance
from conformance.reporting.diagnosis import failure_groups

RNG = np.random.default_rng(7)
REF = RNG.standard_normal((2, 6, 7, 5))
LIMIT = np.full(REF.shape, 1e-9)


def swapped(ref: np.ndarray, a: int, b: int) -> np.ndarray:
    order = list(range(ref.shape[3]))
    order[a], order[b] = b, a
    return ref[..., order]


@pytest.mark.parametrize("got, what, words", [
    (np.zeros_like(REF), "all zeros", "the output is all zeros"),
    (0.5 * REF, "scaled", "scaled by 0.5"),
    (np.pad(REF, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1], "shifted by (1, 0)", "shifted by (1, 0)"),
    (np.pad(REF, ((0, 0), (0, 0), (0, 2), (0, 0)))[:, :, 2:], "shifted by (0, -2)", "shifted by (0, -2)"),
    (swapped(REF, 1, 4), "two channels swapped", "output channels 1 and 4 are swapped"),
    (REF[..., [1, 2, 0, 3, 4]], "channels permuted", "0 holds 1, 1 holds 2, 2 holds 0"),
    (np.where(np.arange(5) == 3, 0.25, REF), "constant channels", "output channel 3 is constant (0.25)"),
    (np.where(np.arange(6)[:, None, None] == 5, 0.0, REF), "constant rows", "row 5 is constant (0)"),
])
def test_each_relation_is_recognized(got, what, words):
    relation = detect(got, REF, LIMIT)
    assert relation is not None and relation[0] == what and words in relation[1], relation


@pytest.mark.parametrize("got", [
    REF + 1e-6 * RNG.standard_normal(REF.shape),  # noise over the limit: no relation is claimed
    1.01 * REF + 1e-6 * RNG.standard_normal(REF.shape),  # almost scaled, but not within the limits
    np.where(np.arange(5) == 3, REF + 1.0, REF),  # one channel off by a constant: not "constant"
])
def test_nothing_is_claimed_that_does_not_fit_every_element(got):
    assert detect(got, REF, LIMIT) is None


def test_non_finite_elements_are_left_out_and_other_shapes_are_not_judged():
    got = 2.0 * REF
    got[0, 0, 0, 0] = np.nan
    assert detect(got, REF, LIMIT) == ("scaled", "the output is the reference scaled by 2")
    assert detect(REF[..., :4], REF, LIMIT) is None and detect(REF[0], REF[0], LIMIT[0]) is None


CASES = """
cases:
  - {input: [1, 8, 9, 3], kernel: [2, 2], channel_multiplier: 2, out_channels: 6, padding: SAME}
  - {input: [1, 8, 9, 3], kernel: [2, 2], channel_multiplier: 2, out_channels: 6, padding: SAME, data_format: NCHW}
"""


@pytest.mark.parametrize("mutant, what, words", [
    ("last_channel_dropped", "constant channels", "output channel 5 is constant (0)"),
    ("kernel_transposed", "transposed kernel", "taps read in column order"),
])
def test_real_bugs_are_named_in_both_layouts_and_group_by_their_relation(tmp_path: Path, mutant, what, words):
    (tmp_path / "cases.yaml").write_text(CASES, encoding="utf-8")
    results = [run_case(case, Backend(mutant, mutants.MUTANTS[mutant]), OracleReference())
               for case in load_cases([tmp_path / "cases.yaml"])]
    assert [r.status for r in results] == ["fail", "fail"]
    assert all(r.details["relation"]["what"] == what and words in r.details["relation"]["sentence"] for r in results)
    [group] = failure_groups([r.to_dict() for r in results])
    assert group.pattern == what and group.count == 2 and words in group.example


def test_same_padding_split_the_wrong_way_is_one_group_at_every_stride(tmp_path: Path):
    """At stride 1 the bug shifts the output (the shift detector sees it); at stride 2 it is no shift. The
    recomputed hypothesis names both, so the bug is one group, whatever the stride and layout."""
    (tmp_path / "cases.yaml").write_text("""
sweeps:
  - base: {input: [1, 8, 9, 3], kernel: [2, 2], channel_multiplier: 2, out_channels: 6, padding: SAME}
    grid: {strides: [[1, 1], [2, 2], [2, 1]], data_format: [NHWC, NCHW]}
""", encoding="utf-8")
    results = [run_case(case, Backend("same_split_before", mutants.same_split_before), OracleReference())
               for case in load_cases([tmp_path / "cases.yaml"])]
    assert [r.status for r in results] == ["fail"] * 6
    sentences = [r.details["relation"]["sentence"] for r in results]
    assert all("padding with its top and bottom and left and right swapped" in s for s in sentences[:2])  # stride 1
    assert all("padding with its left and right swapped" in s for s in sentences[2:])  # stride 2: rows unpadded
    assert "top 1, bottom 0, left 1, right 0 where TensorFlow pads top 0, bottom 1, left 0, right 1" in sentences[0]
    [group] = failure_groups([r.to_dict() for r in results])
    assert group.pattern == "padding on the wrong sides" and group.count == 6


# --- a kernel read the wrong way: recognized by recomputing it (conformance.judging.hypotheses) ---------
def _reading(read: Callable[[np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    """The NumPy backend with its depthwise filter read by `read`."""
    def conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format=None, dilations=None):
        return separable_conv2d(input, read(np.asarray(depthwise_filter)), pointwise_filter, strides, padding,
                                data_format, dilations)
    return conv


@pytest.mark.parametrize("kernel", [[3, 3], [2, 3]])
@pytest.mark.parametrize("name, function, what", [
    ("kernel_transposed", mutants.kernel_transposed, "transposed kernel"),
    ("rotated", _reading(lambda dw: dw[::-1, ::-1]), "kernel rotated 180°"),
    ("rows flipped", _reading(lambda dw: dw[::-1]), "kernel rows flipped"),
    ("columns flipped", _reading(lambda dw: dw[:, ::-1]), "kernel columns flipped"),
])
def test_a_kernel_read_the_wrong_way_is_named_in_both_layouts(tmp_path: Path, kernel, name, function, what):
    (tmp_path / "cases.yaml").write_text(f"""
cases:
  - {{input: [2, 9, 8, 3], kernel: {kernel}, channel_multiplier: 2, out_channels: 5, padding: SAME}}
  - {{input: [1, 7, 9, 2], kernel: {kernel}, channel_multiplier: 1, out_channels: 4, padding: VALID,
     strides: [2, 1], data_format: NCHW, dtype: float16}}
""", encoding="utf-8")
    cases = load_cases([tmp_path / "cases.yaml"])
    results = [run_case(case, Backend(name, function), OracleReference()) for case in cases]
    assert [r.status for r in results] == ["fail", "fail"]
    assert [r.details["relation"]["what"] for r in results] == [what, what]
    [group] = failure_groups([r.to_dict() for r in results])
    assert group.pattern == what
    assert [run_case(case, Backend("numpy", separable_conv2d), OracleReference()).status for case in cases] == \
        ["pass", "pass"]


def test_no_variant_is_claimed_where_the_kernel_cannot_tell_or_the_output_is_something_else(tmp_path: Path):
    (tmp_path / "cases.yaml").write_text(CASES, encoding="utf-8")
    case = load_cases([tmp_path / "cases.yaml"])[0]
    inputs = materialize(case)
    tolerance = Tolerance.for_case(case)
    symmetric = dataclasses.replace(inputs, depthwise_filter=np.ones_like(inputs.depthwise_filter))
    right = compute_oracle(case, symmetric).output
    assert recomputed_relation(case, symmetric, right + 1.0, right, tolerance) is None  # every variant is the truth
    reference = compute_oracle(case, inputs).output
    assert recomputed_relation(case, inputs, reference, reference, tolerance) is None  # the output is right
    assert recomputed_relation(case, inputs, 0.5 * reference, reference, tolerance) is None  # another bug
