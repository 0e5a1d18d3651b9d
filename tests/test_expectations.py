"""Per-backend expectations: xfail, xpass (strict or not), skip, stale entries, and bad files."""

from __future__ import annotations

import json

import pytest

from conformance.cases.loader import CaseFileError
from conformance.execution.expectations import Expectation, apply_expectation, load_expectations
from conformance.result import Kind, Result
from tests.conftest import WRONG_BACKEND, cli_here

ENTRY = Expectation(status="xfail", reason="known", origin="e.yaml:3", case_globs=("*",))


def test_apply_expectation_turns_failures_into_xfail_and_passes_into_xpass():
    failed = Result(case="c", backend="b", status="fail", message="error 3x the limit")
    assert apply_expectation(failed, ENTRY).status == "xfail"
    assert "error 3x the limit" in apply_expectation(failed, ENTRY).message
    passed = Result(case="c", backend="b", status="pass")
    assert apply_expectation(passed, ENTRY).status == "xpass"
    lenient = apply_expectation(passed, ENTRY, strict=False)
    assert lenient.status == "pass" and "but it passes" in lenient.message
    assert apply_expectation(failed, None) is failed


@pytest.mark.parametrize(("text", "line", "problem"), [
    ("expectations:\n  - cases: '*'\n    status: xfail\n", 2, "reason: every entry needs one"),
    ("expectations:\n  - cases: '*'\n    status: maybe\n    reason: r\n", 2, "status: expected one of xfail, skip"),
    ("expectations:\n  - status: skip\n    reason: r\n", 2, "give at least one of cases, tags, dtypes"),
    ("expectations:\n  - dtypes: [float8]\n    status: skip\n    reason: r\n", 2, "dtypes: unknown float8"),
    ("version: 1\nbackned: numpy\n", 2, "backned: unknown key"),
    ("expectations:\n  - cases: '*'\n    status: skip\n    reason: r\n    why: x\n", 2, "unknown key(s) why"),
])
def test_bad_expectations_files_name_the_line_and_field(tmp_path, text, line, problem):
    path = tmp_path / "e.yaml"
    path.write_text(text)
    with pytest.raises(CaseFileError) as caught:
        load_expectations(path)
    assert f"{path}:{line}:" in str(caught.value) and problem in str(caught.value)


def test_run_with_expectations_xfail_skip_and_stale_entries(small, tmp_path):
    (tmp_path / "wrong.py").write_text(WRONG_BACKEND)
    expectations = tmp_path / "wrong.yaml"
    expectations.write_text("""
version: 1
expectations:
  - cases: "n1_h6w5_c3_*"
    status: xfail
    reason: last element scaled (ticket 7)
  - cases: "n1_h5w5_c2_*"
    status: skip
    reason: hangs the driver
  - cases: "n9_*"
    status: xfail
    reason: a stale entry
""")
    done = cli_here("run", "--cases", str(small), "--backend", "wrong.py:off_by_a_bit", "--expectations",
               str(expectations), "--reference", "oracle", "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"warning: expectations entry {expectations}:10: matches no case" in done.stdout
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    by_status = {r["status"]: r for r in document["results"]}
    assert set(by_status) == {"xfail", "skip"}
    assert "ticket 7" in by_status["xfail"]["message"] and "hangs the driver" in by_status["skip"]["message"]
    assert document["run"]["expectation_warnings"]


def test_a_listed_case_that_passes_fails_the_gate_unless_not_strict(small, tmp_path):
    expectations = tmp_path / "numpy.yaml"
    expectations.write_text("backend: numpy\nexpectations:\n  - cases: 'n1_h6w5_c3_*'\n    status: xfail\n"
                            "    reason: was broken\n")
    strict = cli_here("run", "--cases", str(small), "--expectations", str(expectations), "--reference", "oracle",
                 "--out", "out", cwd=tmp_path)
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "XPASS" in strict.stdout and "take it off the list" in strict.stdout
    lenient = cli_here("run", "--cases", str(small), "--expectations", str(expectations), "--reference", "oracle",
                  "--no-strict-expectations", "--out", "out2", cwd=tmp_path)
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr


def test_an_expectations_file_for_another_backend_is_not_applied(small, tmp_path):
    expectations = tmp_path / "other.yaml"
    expectations.write_text("backend: cupy\nexpectations:\n  - cases: '*'\n    status: skip\n    reason: r\n")
    done = cli_here("run", "--cases", str(small), "--expectations", str(expectations), "--reference", "oracle",
               "--out", "out", cwd=tmp_path)
    assert done.returncode == 0
    statuses = json.loads((tmp_path / "out" / "results.json").read_text())["summary"]["statuses"]
    assert statuses == {"pass": 2}


def test_bad_expectations_file_is_a_usage_error(small, tmp_path):
    expectations = tmp_path / "bad.yaml"
    expectations.write_text("expectations:\n  - cases: '*'\n    status: xfail\n")
    done = cli_here("run", "--cases", str(small), "--expectations", str(expectations), "--reference", "oracle",
               "--out", "out", cwd=tmp_path)
    assert done.returncode == 2 and f"{expectations}:2" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_every_expectations_file_for_a_backend_applies_in_order(small, tmp_path):
    (tmp_path / "wrong.py").write_text(WRONG_BACKEND)
    common = tmp_path / "common.yaml"
    common.write_text("expectations:\n  - cases: 'n1_h5w5_c2_*'\n    status: skip\n    reason: shared list\n")
    own = tmp_path / "own.yaml"
    own.write_text("backend: wrong.py:off_by_a_bit\nexpectations:\n  - cases: 'n1_h6w5_c3_*'\n    status: xfail\n"
                   "    reason: own list\n")
    done = cli_here("run", "--cases", str(small), "--backend", "wrong.py:off_by_a_bit", "--expectations", str(common),
               "--expectations", str(own), "--reference", "oracle", "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["summary"]["statuses"] == {"skip": 1, "xfail": 1}
    assert "common.yaml" in document["run"]["expectations"]["wrong.py:off_by_a_bit"]


@pytest.mark.parametrize("fault", ["input", "harness"])
def test_a_fault_of_the_harness_or_an_input_is_never_covered_by_an_expectation(fault):
    broken = Result(case="c", backend="b", status="error", message="reference: no golden entry for c", fault=fault,
                    kind=Kind.REFERENCE_UNAVAILABLE if fault == "input" else Kind.HARNESS)
    assert apply_expectation(broken, ENTRY) is broken


def test_xpass_has_its_kind_and_xfail_keeps_the_failures_kind():
    failed = Result(case="c", backend="b", status="fail", kind=Kind.BIAS, message="systematic bias")
    assert (apply_expectation(failed, ENTRY).status, apply_expectation(failed, ENTRY).kind) == ("xfail", "bias")
    passed = Result(case="c", backend="b", status="pass")
    xpass = apply_expectation(passed, ENTRY)
    assert (xpass.status, xpass.kind) == ("xpass", Kind.XPASS) and type(xpass.kind) is str
    assert apply_expectation(passed, ENTRY, strict=False).kind == Kind.NONE


def test_a_reworded_message_does_not_change_how_a_fault_is_treated():
    """Whether a result is a fault is a field (fault, kind), never read from the message: a backend's
    failure whose message happens to start with "reference:" is still covered by the expectation."""
    lookalike = Result(case="c", backend="b", status="error", kind=Kind.REJECTED_VALID,
                       message="reference: the backend's own words")
    assert apply_expectation(lookalike, ENTRY).status == "xfail"
    unavailable = Result(case="c", backend="b", status="error", kind=Kind.REFERENCE_UNAVAILABLE, fault="input",
                         message="worded any way at all")
    assert apply_expectation(unavailable, ENTRY) is unavailable


def test_an_expected_failure_is_reported_with_its_reason_not_a_traceback(small, tmp_path, monkeypatch):
    """pytest would format an xfail's traceback, parsing the source of each frame (about 0.1 s per expected
    failure); the report carries the reason, as a failure's carries its description."""
    class Recorder:
        def __init__(self) -> None:
            self.longreprs: list[object] = []

        def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
            if hasattr(report, "wasxfail"):
                self.longreprs.append(report.longrepr)

    (tmp_path / "wrong.py").write_text(WRONG_BACKEND)
    (tmp_path / "wrong.yaml").write_text("expectations:\n  - cases: 'n1_h6w5_c3_*'\n    status: xfail\n"
                                          "    reason: ticket 7\n")
    monkeypatch.chdir(tmp_path)
    recorder = Recorder()
    code = pytest.main(["-q", "-p", "no:cacheprovider", "--cases", str(small), "--backend", "wrong.py:off_by_a_bit",
                        "--expectations", "wrong.yaml", "--reference", "oracle", "--report-dir", "out"],
                       plugins=[recorder])
    assert code == 0 and recorder.longreprs
    assert all(isinstance(text, str) and text.startswith("expected to fail (wrong.yaml:2: ticket 7)")
               for text in recorder.longreprs), recorder.longreprs
