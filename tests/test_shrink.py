"""`sepconv-conformance shrink`: failure signatures from real verdicts, a padding bug in a big layer
shrunk to a handful of pixels and channels, error cases that keep breaking the same rule, crashes
shrunk through the isolated child, and the written case file as a loadable reproducer."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance.cases.case import Case
from conformance.cases.loader import load_file
from conformance.cli import main
from conformance.execution.backends import Backend, resolve_backend
from conformance.execution.runner import run_case
from conformance.exitcodes import EXIT_OK, EXIT_USAGE
from conformance.impls import mutants
from conformance.judging.references import OracleReference, TensorFlowReference
from conformance.result import Kind, Result
from conformance.tools.shrink import ShrinkError, shrink, signature
from tests.conftest import THREE_BUGS, needs_tensorflow

BASE = {"input": (2, 6, 5, 3), "kernel": (3, 3), "channel_multiplier": 2, "out_channels": 4, "strides": (2, 1),
        "rates": (1, 1), "padding": "SAME", "data_format": "NHWC", "dtype": "float32"}


def _raises(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("no kernel for this shape")


def _returns_a_list(*args: Any, **kwargs: Any) -> Any:
    return [1.0]


def _accepts_anything(input: Any, depthwise_filter: Any, pointwise_filter: Any, *args: Any, **kwargs: Any) -> Any:
    return np.zeros((1, 1, 1, np.shape(pointwise_filter)[-1]), np.asarray(input).dtype)


@pytest.mark.parametrize("fn, changes, expected", [
    (mutants.correct, {}, None),
    (mutants.extra_row, {}, ("fail", Kind.SHAPE)),
    (mutants.same_split_before, {}, ("fail", Kind.ELEMENT)),
    (mutants.same_split_before, {"data": "integers"}, ("fail", Kind.ELEMENT)),
    (mutants.nonfinite_flushed, {"data": "nonfinite", "input": (1, 8, 8, 4)}, ("fail", Kind.NONFINITE)),
    (mutants.additive_bias, {"input": (2, 16, 16, 8), "out_channels": 16}, ("fail", Kind.BIAS)),
    (mutants.rate_with_stride, {"rates": (2, 2), "strides": (2, 2), "expect_error": True},
     ("fail", Kind.ACCEPTED_FORBIDDEN)),
    (_raises, {}, ("error", Kind.REJECTED_VALID)),
    (_returns_a_list, {}, ("error", Kind.NOT_ARRAY)),
])
def test_signatures_classify_real_verdicts(fn, changes, expected):
    result = run_case(Case(**(BASE | changes)), Backend(fn.__name__, fn), OracleReference())
    found = signature(result)
    assert (found and found[:2]) == expected, result.message


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def _shrink(case_file: Path, case_id: str, spec: str, out: Path, *extra: str) -> int:
    return main(["shrink", "--cases", str(case_file), "--id", case_id, "--backend", spec, "--out", str(out), *extra])


@needs_tensorflow
def test_a_padding_bug_in_a_big_layer_shrinks_to_a_handful_of_pixels_and_channels(tmp_path, capsys):
    source = _write(tmp_path / "big.yaml", """
        cases:
          - {name: big, input: [4, 28, 28, 32], kernel: [3, 3], channel_multiplier: 2, out_channels: 32,
             padding: SAME, strides: [2, 2]}
        """)
    original = load_file(source)[0]
    spec, out = "conformance.impls.mutants:same_split_before", tmp_path / "shrunk.yaml"
    assert _shrink(source, original.id, spec, out) == EXIT_OK
    [shrunk] = load_file(out)  # a valid case file holding one case
    n, h, w, c = shrunk.input
    # A handful: the search keeps the failure's pattern too (it stops where the pattern would change).
    assert n == 1 and h * w <= 4 and c == 1 and shrunk.channel_multiplier <= 2 and shrunk.out_channels <= 2
    assert shrunk.name == "big_shrunk" and "shrunk" in shrunk.tags
    mutant = resolve_backend(spec)
    tensorflow = TensorFlowReference()
    found = signature(run_case(original, mutant, tensorflow))
    assert found == signature(run_case(shrunk, mutant, tensorflow)) and found is not None
    assert found[:2] == ("fail", Kind.ELEMENT)
    assert run_case(shrunk, resolve_backend("numpy"), TensorFlowReference()).status == "pass"
    text = out.read_text()
    assert f"# Reproduce: sepconv-conformance run --cases {out} --backend {spec} --id {shrunk.id}" in text
    printed = capsys.readouterr().out
    assert "before: input 4x28x28x32" in printed and f"after:  input 1x{h}x{w}x1" in printed


def test_a_case_from_a_results_file_shrinks_with_its_failing_backend(tmp_path, small, capsys):
    """Shrink's reading of a results file; judged by the oracle (the test above shrinks against TensorFlow)."""
    spec, reports = "conformance.impls.mutants:kernel_transposed", tmp_path / "reports"
    assert main(["run", "--cases", str(small), "--backend", spec, "--backend", "numpy", "--out", str(reports),
                 "--reference", "oracle", "-q"]) != EXIT_OK
    case_id = load_file(small)[0].id
    out = tmp_path / "shrunk.yaml"
    assert main(["shrink", "--results", str(reports), "--id", case_id, "--out", str(out),
                 "--reference", "oracle"]) == EXIT_OK
    [shrunk] = load_file(out)
    assert signature(run_case(shrunk, resolve_backend(spec), OracleReference()))[:2] == ("fail", Kind.ELEMENT)
    assert f"shrink: {case_id} on {spec}" in capsys.readouterr().out


def test_a_forbidden_case_keeps_breaking_the_same_rule(tmp_path):
    source = _write(tmp_path / "error.yaml", """
        cases:
          - {input: [3, 17, 15, 12], kernel: [5, 3], channel_multiplier: 3, out_channels: 9, padding: SAME,
             strides: [2, 3], rates: [2, 3], expect: error}
        """)
    out = tmp_path / "shrunk.yaml"
    assert _shrink(source, load_file(source)[0].id, "conformance.impls.mutants:rate_with_stride", out,
                   "--reference", "oracle") == EXIT_OK
    [shrunk] = load_file(out)  # the loader accepts it only if it still breaks the contract
    assert shrunk.expect_error and max(shrunk.rates) > 1 and max(shrunk.strides) > 1
    assert shrunk.input == (1, 1, 1, 1) and shrunk.out_channels == 1 and shrunk.channel_multiplier == 1


def test_padding_of_four_pairs_shrinks_as_four_pairs(tmp_path):
    """Explicit padding of an error case may give all four dimensions' pairs: each candidate changes one
    number and keeps the four pairs (two would be another case, which the loader refuses as an error case)."""
    source = _write(tmp_path / "error.yaml", """
        cases:
          - {input: [2, 7, 6, 3], kernel: [3, 3], channel_multiplier: 2, out_channels: 4,
             padding: [[0, 0], [2, 1], [1, 1], [1, 2]], expect: error}
        """)
    out = tmp_path / "shrunk.yaml"
    assert _shrink(source, load_file(source)[0].id, f"{__name__}:_accepts_anything", out, "--reference",
                   "oracle") == EXIT_OK
    [shrunk] = load_file(out)
    assert shrunk.expect_error and len(shrunk.padding) == 4 and shrunk.padding[3] != (0, 0)
    assert shrunk.padding[:3] == ((0, 0), (0, 0), (0, 0)) and shrunk.input == (1, 1, 1, 1)


def test_a_crash_shrinks_through_the_isolated_child(tmp_path):
    backend = _write(tmp_path / "crashy.py", """
        import os
        import numpy as np
        from conformance.impls.mutants import correct

        def conv(input, *args, **kwargs):
            if np.asarray(input).shape[3] >= 3:  # NHWC channels: a kernel that faults on wide tiles
                os.abort()
            return correct(input, *args, **kwargs)
        """)
    source = _write(tmp_path / "cases.yaml", """
        cases:
          - {input: [2, 3, 3, 4], kernel: [2, 2], channel_multiplier: 2, out_channels: 2, padding: SAME}
        """)
    out = tmp_path / "shrunk.yaml"
    # Every candidate that crashes costs a fresh child; the boundary search (all of them crash) is cut short.
    assert _shrink(source, load_file(source)[0].id, f"{backend}:conv", out, "--reference", "oracle",
                   "--max-candidates", "24") == EXIT_OK
    [shrunk] = load_file(out)
    assert shrunk.input == (1, 1, 1, 3) and shrunk.kernel == (1, 1) and shrunk.out_channels == 1
    assert "failure: crash (crash: the backend's process died)" in out.read_text()


def test_a_passing_case_is_a_usage_error(tmp_path, small, capsys):
    out = tmp_path / "shrunk.yaml"
    assert _shrink(small, load_file(small)[0].id, "numpy", out, "--reference", "oracle") == EXIT_USAGE
    assert "passes on this backend: nothing to shrink" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("arguments, reason", [
    (["--id", "nope", "--backend", "numpy"], "no case with id nope"),
    (["--id", "x"], "--backend SPEC is required"),
    (["--id", "ID", "--backend", "no.such:fn"], "cannot be imported"),
])
def test_bad_input_exits_2_with_the_reason(tmp_path, small, capsys, arguments, reason):
    arguments = [load_file(small)[0].id if a == "ID" else a for a in arguments]
    assert main(["shrink", "--cases", str(small), "--reference", "oracle", *arguments]) == EXIT_USAGE
    assert reason in capsys.readouterr().err


def test_results_without_the_case_or_with_two_failing_backends(tmp_path, capsys):
    results = tmp_path / "results.json"
    record = {"case": "c1", "status": "fail", "parameters": {}}
    results.write_text(json.dumps({"results": [record | {"backend": "a"}, record | {"backend": "b"}]}))
    assert main(["shrink", "--results", str(results), "--id", "c2", "--reference", "oracle"]) == EXIT_USAGE
    assert "no result for case c2" in capsys.readouterr().err
    assert main(["shrink", "--results", str(results), "--id", "c1", "--reference", "oracle"]) == EXIT_USAGE
    assert "failed on 2 backends (a, b)" in capsys.readouterr().err


# --- the signature is (status, kind): the message plays no part -------------------------------------------
def _result(case: str, status: str, kind: str, message: str) -> Result:
    return Result(case=case, backend="b", status=status, kind=kind, message=message)


def test_a_reworded_message_is_the_same_failure():
    before = _result("c", "fail", Kind.ELEMENT, "error 3.1x the limit at [0, 1, 2, 0]: expected 1, got 2")
    after = _result("c", "fail", Kind.ELEMENT, "element [0, 0, 0, 1] is off by 7 limits (reworded)")
    assert signature(before) == signature(after) == ("fail", "element", "elements over their limit")
    # Messages that once classified differently (a prefix) classify by kind alone now.
    assert signature(_result("c", "fail", Kind.BIAS, "error energy, or so it says"))[:2] == ("fail", "bias")
    assert signature(_result("c", "error", Kind.REJECTED_VALID, "reference: looks like a reference problem")) \
        == ("error", "rejected_valid", "raised on valid input")
    assert signature(_result("c", "fail", Kind.SHAPE, "same words")) != signature(
        _result("c", "fail", Kind.ELEMENT, "same words"))
    assert signature(_result("c", "pass", Kind.NONE, "rejected: ValueError")) is None
    assert signature(_result("c", "xpass", Kind.XPASS, "expected to fail, but it passes"))[:2] == ("xpass", "xpass")
    old = Result.from_dict({"case": "c", "backend": "b", "status": "fail", "message": "error 3x the limit"})
    assert signature(old) == ("fail", "", "")  # a record written before `kind`: unclassified, never guessed


def test_shrinking_follows_the_kind_whatever_the_messages_say():
    """Every candidate's message is different; the kind decides which are the same failure."""
    original = Case(**(BASE | {"input": (1, 9, 5, 3)}))

    def judge(case: Case) -> Result:
        height = case.input[1]
        if height < 3:
            return _result(case.id, "fail", Kind.SHAPE, f"{case.id}: the same words as below")
        return _result(case.id, "fail", Kind.ELEMENT, f"{case.id}: height {height}, worded anew each time")
    outcome = shrink(original, judge)
    assert outcome.case.input[1] == 3 and outcome.signature == ("fail", "element", "elements over their limit")
    assert outcome.message.startswith(outcome.case.id)


@pytest.mark.parametrize("kind, fault, words", [
    (Kind.REFERENCE_UNAVAILABLE, "input", "its reference is unavailable"),
    (Kind.HARNESS, "harness", "the harness failed on it"),
])
def test_no_verdict_on_the_backend_is_nothing_to_shrink(kind, fault, words):
    broken = Result(case="c", backend="b", status="error", kind=kind, fault=fault, message="whatever it says")
    with pytest.raises(ShrinkError, match=f"{words} \\(whatever it says\\); nothing to shrink"):
        shrink(Case(**BASE), lambda case: broken)


# --- shrink keeps the failure: one bug of two, and the boundary that shows its trigger ---------------------
TWO_BUG_CASES = """
cases:
  - {input: [1, 8, 8, 3], kernel: [3, 3], channel_multiplier: 2, out_channels: 7, padding: SAME}
  - {input: [1, 8, 8, 3], kernel: [3, 3], channel_multiplier: 2, out_channels: 7, padding: SAME, strides: [2, 2]}
"""


def test_shrink_stays_on_one_bug_and_reports_the_boundary_of_its_trigger(tmp_path, capsys):
    (tmp_path / "bugs.py").write_text(THREE_BUGS, encoding="utf-8")
    cases = _write(tmp_path / "cases.yaml", TWO_BUG_CASES)
    spec = f"{tmp_path / 'bugs.py'}:conv"
    last_channel, both = (c.id for c in load_file(cases))
    assert _shrink(cases, last_channel, spec, tmp_path / "a.yaml", "--reference", "oracle", "-q") == EXIT_OK
    out = capsys.readouterr().out
    assert "(element: constant channels)" in out and "boundaries: out_channels 7 fails, 8 passes" in out, out
    assert "TensorFlow pads top" in out and "; output 1x" in out  # the padding applied and the output size
    # The SAME-at-stride-2 bug, in a case that also has the last-channel bug: it stays the bug shrunk.
    backend = resolve_backend(spec)
    original = signature(run_case(load_file(cases)[1], backend, OracleReference()))
    assert _shrink(cases, both, spec, tmp_path / "b.yaml", "--reference", "oracle", "-q") == EXIT_OK
    [shrunk] = load_file(tmp_path / "b.yaml")
    assert original is not None and original[2].startswith("everywhere")
    assert signature(run_case(shrunk, backend, OracleReference())) == original
