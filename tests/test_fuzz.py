"""`sepconv-conformance fuzz`: deterministic draws across every axis, valid and forbidden cases told apart
by the contract, a run that reports like `run`, and failures saved as a loadable case file that fails
again."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conformance.cases import contract
from conformance.cases.case import DATA_FORMATS, DISTRIBUTIONS, DTYPES
from conformance.cases.case_yaml import write_case_file
from conformance.cases.data import integer_range
from conformance.cases.loader import load_cases, load_file
from conformance.cli import main
from conformance.execution.backends import resolve_backend
from conformance.execution.runner import run_case
from conformance.exitcodes import EXIT_NONCONFORMING, EXIT_OK, EXIT_USAGE
from conformance.judging.references import OracleReference
from conformance.result import is_failing
from conformance.tools.fuzz import CASES_FILE, FAILURES_FILE, VIOLATIONS, draw_cases
from tests.conftest import needs_tensorflow


def test_same_seed_same_cases_other_seed_other_cases():
    assert draw_cases(50, seed=7) == draw_cases(50, seed=7)
    assert [c.id for c in draw_cases(50, seed=7)] != [c.id for c in draw_cases(50, seed=8)]


def test_draws_cover_every_axis_valid_and_forbidden_apart(tmp_path):
    cases = draw_cases(400, seed=1, invalid_fraction=0.25)
    valid = [c for c in cases if not c.expect_error]
    invalid = [c for c in cases if c.expect_error]
    assert all(not contract.violations(c) for c in valid)
    assert all(contract.violations(c) for c in invalid)
    assert 0.15 < len(invalid) / len(cases) < 0.35
    assert {c.dtype for c in valid} == set(DTYPES) and {c.data_format for c in valid} == set(DATA_FORMATS)
    assert {c.data for c in valid} == set(DISTRIBUTIONS)
    assert {c.padding_kind for c in valid} == {"SAME", "VALID", "EXPLICIT"}
    assert {s for c in valid for s in c.spatial_strides} == {1, 2, 3}
    assert {r for c in valid for r in c.rates} == {1, 2, 3}
    assert {c.channel_multiplier for c in valid} == {1, 2, 3}
    assert {1, 2, 3, 4, 5} <= {k for c in valid for k in c.kernel}
    assert {c.tags[-1] for c in invalid} == set(VIOLATIONS)
    assert all(integer_range(c) >= 1 for c in valid if c.data == "integers")
    assert max(c.input[0] * c.input[1] * c.input[2] * c.input[3] for c in cases) <= 3 * 10 * 10 * 8  # small
    assert len({c.id for c in cases}) == len(cases)
    path = write_case_file(tmp_path / "drawn.yaml", cases)
    assert [c.id for c in load_cases([path])] == [c.id for c in cases]  # the loader agrees on every case


@needs_tensorflow
def test_fuzzing_a_correct_backend_conforms_and_saves_no_failure(tmp_path, capsys):
    out = tmp_path / "fuzz"
    assert main(["fuzz", "--backend", "numpy", "--count", "30", "--seed", "5", "--out", str(out), "-q"]) == EXIT_OK
    results = json.loads((out / "results.json").read_text())
    assert len(results["results"]) == 30 and results["summary"]["conforms"] is True
    assert (out / "junit.xml").is_file()
    assert load_file(out / FAILURES_FILE) == []
    assert f"none of 30 cases failed ({out / FAILURES_FILE} holds no case)" in capsys.readouterr().out


def test_failures_are_saved_as_a_case_file_that_fails_again(tmp_path, capsys):
    """Against the oracle: what is tested is fuzz's bookkeeping (the previous test judges against
    TensorFlow), and the saved cases are judged again here the same way."""
    out = tmp_path / "fuzz"
    spec = "conformance.impls.mutants:same_split_before"
    code = main(["fuzz", "--backend", spec, "--backend", "numpy", "--count", "40", "--seed", "2",
                 "--reference", "oracle", "--out", str(out), "-q"])
    assert code == EXIT_NONCONFORMING
    results = json.loads((out / "results.json").read_text())["results"]
    failing = Counter(r["case"] for r in results if is_failing(r["status"]))  # not the skipped backward cases
    assert failing and all(r["backend"] == spec for r in results if is_failing(r["status"]))
    saved = load_file(out / FAILURES_FILE)
    assert sorted(c.id for c in saved) == sorted(failing)
    drawn = {c.id: c for c in load_file(out / CASES_FILE)}
    mutant, numpy = resolve_backend(spec), resolve_backend("numpy")
    for case in saved:  # same parameters, hence the same data: it fails again, and only on the mutant
        assert case.parameters() | {"origin": ""} == drawn[case.id].parameters() | {"origin": ""}
        assert run_case(case, mutant, OracleReference()).status == "fail"
        assert run_case(case, numpy, OracleReference()).status == "pass"
    text = (out / FAILURES_FILE).read_text()
    assert f"sepconv-conformance shrink --cases {out / FAILURES_FILE} --id {saved[0].id} --backend {spec}" in text
    assert f"{len(saved)} of 40 cases failed" in capsys.readouterr().out


@pytest.mark.parametrize("arguments, reason", [
    (["--count", "0"], "--count"), (["--seed", "-1"], "--seed"), (["--invalid-fraction", "1.5"], "between 0 and 1"),
])
def test_bad_arguments_exit_2(tmp_path, capsys, arguments, reason):
    assert main(["fuzz", "--out", str(tmp_path), "--reference", "oracle", *arguments]) == EXIT_USAGE
    assert reason in capsys.readouterr().err


def test_an_unknown_backend_is_a_usage_error(tmp_path, capsys):
    assert main(["fuzz", "--backend", "no.such:fn", "--count", "3", "--out", str(tmp_path),
                 "--reference", "oracle"]) == EXIT_USAGE
    assert "no.such:fn" in capsys.readouterr().err
