"""The suite's two error rates, measured by `sepconv-conformance selftest`: every mutant of the zoo is
caught and every correct implementation passes, on the quick subset and on the bank (what CI gates on);
and the gate itself can fail, so a green selftest means something."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from conformance.cases.loader import load_cases
from conformance.cli import main
from conformance.exitcodes import EXIT_NONCONFORMING, EXIT_OK, EXIT_USAGE
from conformance.impls import backward_zoo, mutants
from conformance.impls.alternatives import ALTERNATIVES
from conformance.impls.mutants import MUTANTS
from conformance.tools import selftest
from tests.conftest import BANK, SMALL_CASE, bank_but_full_size, needs_tensorflow

# The backward pass's zoo, by the names the selftest gives its members.
BACKWARD_MUTANTS = {f"backward:{name}" for name in backward_zoo.BUGS}
BACKWARD_ALTERNATIVES = {f"backward:{name}" for name in backward_zoo.ALTERNATIVES}


def _selftest(tmp_path: Path, *arguments: str) -> tuple[int, dict]:
    report = tmp_path / "selftest.json"
    code = main(["selftest", "-q", "--json", str(report), *arguments])
    return code, json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}


def _members(report: dict, role: str) -> dict[str, dict]:
    return {m["name"]: m for m in report["members"] if m["role"] == role}


def _assert_proves_itself(report: dict) -> None:
    mutant_rows, correct_rows = _members(report, "mutant"), _members(report, "correct")
    assert set(mutant_rows) == {*MUTANTS, *BACKWARD_MUTANTS}
    assert {"numpy", "mutants_baseline", *ALTERNATIVES, *BACKWARD_ALTERNATIVES} == set(correct_rows)
    uncaught = [name for name, row in mutant_rows.items() if not row["ok"]]
    assert not uncaught, f"mutants no case catches: {uncaught}"
    false_alarms = {name: row["first_failures"] for name, row in correct_rows.items() if row["ok"] is not True}
    assert not false_alarms, f"correct implementations that fail: {false_alarms}"
    mutants = len(MUTANTS) + len(BACKWARD_MUTANTS)
    assert report["summary"] == {"mutants": mutants, "caught": mutants, "score": 1.0,
                                 "correct": len(correct_rows), "correct_passed": len(correct_rows), "passed": True}


def test_the_zoo_is_big_enough():
    assert len(MUTANTS) >= 15 and len(ALTERNATIVES) >= 4
    assert len(BACKWARD_MUTANTS) >= 10 and len(BACKWARD_ALTERNATIVES) >= 3  # the backward pass's own


@needs_tensorflow
def test_quick_subset_catches_every_mutant_and_passes_every_correct_implementation(tmp_path):
    code, report = _selftest(tmp_path, "--quick")
    assert code == EXIT_OK
    _assert_proves_itself(report)
    quick = [c for c in load_cases([BANK]) if "selftest" in c.tags]
    assert report["cases"] == len(quick) <= 20


def cupy_standin(*args, **kwargs):
    """The CuPy backend's pipeline with NumPy standing in for CuPy and its kernels, as a backend that loads
    anywhere (conformance.impls.cupy_backend itself refuses to load without CuPy and a CUDA device)."""
    from conformance.impls.cupy_backend import separable_conv2d_standin

    return separable_conv2d_standin(*args, **kwargs)


def cupy_standin_backprop(*args, **kwargs):
    """The CuPy backend's backward pipeline, NumPy standing in for CuPy and its two backward kernels."""
    from conformance.impls.cupy_backend import separable_conv2d_backprop_standin

    return separable_conv2d_backprop_standin(*args, **kwargs)


cupy_standin.backprop = cupy_standin_backprop


# Judged on the bank with the zoo's correct implementations, in the same pass of TensorFlow over it
# (tests/test_cupy_backend.py checks that those cases reach every part of the pipeline).
CUPY_STANDIN = selftest.Member("cupy-standin", f"{__name__}:cupy_standin", selftest.CORRECT)


@needs_tensorflow
def test_bank_passes_every_correct_implementation_and_catches_every_mutant():
    """The whole bank but the full-size layers (tags bench and network: `selftest` on all of them takes
    about 6 minutes on 2 cores; docs/tolerance.md has that run), against TensorFlow.

    No false alarm: every correct implementation (and the CuPy stand-in pipeline) runs on every case,
    through the loop `selftest` runs (run_cases, tally), and passes each, every case judged. Every mutant
    caught: a catch is one case's verdict, whatever the other cases, and every mutant is caught on the
    quick subset (the previous test, also against TensorFlow), which is part of this selection; so the
    mutants are not run again here."""
    cases = bank_but_full_size()
    quick = {c.id for c in load_cases([BANK]) if selftest.QUICK_TAG in c.tags}
    assert quick and quick <= {c.id for c in cases}  # the catches of the quick subset are catches here
    zoo = [m for m in selftest.zoo_members() if m.role == selftest.CORRECT]
    assert {m.name for m in zoo} == {"numpy", "mutants_baseline", *ALTERNATIVES, *BACKWARD_ALTERNATIVES}
    correct = [*zoo, CUPY_STANDIN]
    outcomes = selftest.run_cases(cases, correct, "tensorflow")
    tallies = selftest.tally(correct, outcomes)
    false_alarms = {t.member.name: [(f.case, f.status, f.message) for f in t.failures[:3]]
                    for t in tallies if not t.ok}
    assert not false_alarms, f"correct implementations that fail: {false_alarms}"
    # Every case judged where the member has that pass: numpy and the CuPy stand-in have both; the forward
    # zoo no backward pass, so backward cases are skipped; the backward zoo runs backward cases only.
    backward = sum(c.mode == "backward" for c in cases)
    assert backward >= 50
    judged = {"numpy": len(cases), "cupy-standin": len(cases),
              **{m.name: backward for m in zoo if m.name.startswith("backward:")}}
    assert [(t.member.name, t.seen, t.judged) for t in tallies] == \
        [(m.name, len(cases), judged.get(m.name, len(cases) - backward)) for m in correct]
    assert selftest.summary(tallies) == {"mutants": 0, "caught": 0, "score": None, "correct": len(correct),
                                         "correct_passed": len(correct), "passed": True}


# --- the gate can fail ---------------------------------------------------------------------------------
def test_a_mutant_that_is_actually_correct_goes_uncaught_and_fails_the_gate(small, tmp_path, capsys):
    code, report = _selftest(tmp_path, "--cases", str(small), "--reference", "oracle", "--no-zoo",
                             "--mutant", "conformance.impls.mutants:correct", "--alternative", "numpy")
    assert code == EXIT_NONCONFORMING
    row = _members(report, "mutant")["conformance.impls.mutants:correct"]
    assert row["ok"] is False and row["failing"] == 0 and row["judged"] == 2
    assert report["summary"]["score"] == 0.0 and report["summary"]["passed"] is False
    out = capsys.readouterr().out
    assert "mutation score: 0/1 = 0%" in out and "SELFTEST FAILED" in out


def test_a_wrong_alternative_fails_the_gate_and_the_table_says_where(small, tmp_path, capsys):
    code, report = _selftest(tmp_path, "--cases", str(small), "--reference", "oracle", "--no-zoo",
                             "--alternative", "conformance.impls.mutants:same_split_before",
                             "--mutant", "conformance.impls.mutants:rate_with_stride")
    assert code == EXIT_NONCONFORMING
    wrong = _members(report, "correct")["conformance.impls.mutants:same_split_before"]
    case_id = load_cases([small])[0].id
    assert wrong["ok"] is False and wrong["failing_cases"] == [case_id]
    assert "the limit" in wrong["first_failures"][0]["message"]
    caught = _members(report, "mutant")["conformance.impls.mutants:rate_with_stride"]
    assert caught["ok"] is True and "accepted input the contract forbids" in caught["first_failures"][0]["message"]
    out = capsys.readouterr().out
    assert "conformance.impls.mutants:same_split_before" in out and case_id in out and "SELFTEST FAILED" in out


def test_cases_without_a_reference_judge_no_one(small, tmp_path):
    """An empty golden folder: every case is an input fault for every member (exit 2, the folder is
    unusable), no mutant counts as caught and no correct implementation as passing."""
    golden = tmp_path / "goldens"
    golden.mkdir()
    code, report = _selftest(tmp_path, "--cases", str(small), "--reference", "golden", "--golden", str(golden),
                             "--no-zoo", "--mutant", "conformance.impls.mutants:same_split_before",
                             "--alternative", "numpy")
    assert code == EXIT_USAGE
    assert len(report["unjudged_cases"]) == 2
    assert all(m["judged"] == 0 and m["ok"] is False for m in report["members"])


def test_workers_give_the_same_tallies(small, tmp_path):
    arguments = ["--cases", str(small), "--reference", "oracle", "--no-zoo",
                 "--mutant", "conformance.impls.mutants:extra_row",
                 "--mutant", "conformance.impls.mutants:rate_with_stride", "--alternative", "numpy"]
    serial = _selftest(tmp_path / "serial", *arguments)
    parallel = _selftest(tmp_path / "parallel", *arguments, "-n", "2")
    assert serial[0] == parallel[0] == EXIT_OK
    assert serial[1]["members"] == parallel[1]["members"]


MISBEHAVING = """
import ctypes
import time

from conformance.impls.numpy_backend import separable_conv2d


def segfaults(*args, **kwargs):
    ctypes.string_at(0)  # reads address 0: SIGSEGV


def hangs(input, *args, **kwargs):
    if input.shape == (1, 6, 5, 3):  # SMALL_CASE; the other case comes after the timeout, in a fresh child
        time.sleep(3600)
    return separable_conv2d(input, *args, **kwargs)


def correct(*args, **kwargs):
    return separable_conv2d(*args, **kwargs)
"""


def test_a_member_that_crashes_or_hangs_is_judged_and_the_selftest_goes_on(small, tmp_path, capsys):
    """Command-line members run in a child process: a segfault is a crash (a catch, for a mutant) and a
    hang is a timeout (a false alarm, for an alternative); the members after them are still judged, and so
    is the hung member on the next case (it hangs on one case only: each hang costs the whole --timeout)."""
    (tmp_path / "misbehaving.py").write_text(MISBEHAVING)
    module = str(tmp_path / "misbehaving.py")
    code, report = _selftest(tmp_path, "--cases", str(small), "--reference", "oracle", "--no-zoo", "--timeout", "3",
                             "--mutant", f"{module}:segfaults", "--alternative", f"{module}:hangs",
                             "--alternative", f"{module}:correct")
    assert code == EXIT_NONCONFORMING
    crashed = _members(report, "mutant")[f"{module}:segfaults"]
    assert crashed["ok"] is True and {f["status"] for f in crashed["first_failures"]} == {"crash"}
    assert "signal" in crashed["first_failures"][0]["message"]
    hung = _members(report, "correct")[f"{module}:hangs"]
    assert hung["ok"] is False and hung["failing"] == 1 and hung["judged"] == 2
    assert [f["status"] for f in hung["first_failures"]] == ["timeout"]
    fine = _members(report, "correct")[f"{module}:correct"]
    assert fine["ok"] is True and fine["judged"] == 2
    assert "SELFTEST FAILED" in capsys.readouterr().out


NARROW = """
from conformance.impls.numpy_backend import separable_conv2d

SUPPORTS = {"dtypes": ["float64"]}


def float64_only(*args, **kwargs):
    return separable_conv2d(*args, **kwargs)
"""


def test_the_table_says_on_how_many_cases_a_narrow_member_was_judged(small, tmp_path, capsys):
    """Cases outside a member's declared support are skipped, not judged: it passes on what it was judged
    on, and the table and the JSON say how little that was."""
    (tmp_path / "narrow.py").write_text(NARROW)
    spec = f"{tmp_path / 'narrow.py'}:float64_only"
    cases = small.read_text() + SMALL_CASE.split("cases:\n", 1)[1].replace("padding: SAME", "padding: VALID\n"
                                                                             "    dtype: float64")
    small.write_text(cases)
    code, report = _selftest(tmp_path, "--cases", str(small), "--reference", "oracle", "--no-zoo",
                             "--alternative", spec, "--alternative", "numpy")
    assert code == EXIT_OK
    narrow, full = _members(report, "correct")[spec], _members(report, "correct")["numpy"]
    assert (narrow["ok"], narrow["cases"], narrow["judged"]) == (True, 3, 1)
    assert (full["cases"], full["judged"]) == (3, 3)
    assert report["unjudged_cases"] == []  # a skip is not a missing reference
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert rows[spec].rstrip().endswith("- (judged on 1 of 3 cases)")
    assert rows["numpy"].rstrip().endswith("-")


@pytest.mark.parametrize("arguments, reason", [
    (["--mutant", "no.such.module:fn"], "cannot be imported"),
    (["--mutant", "conformance.impls.mutants:extra_row"], "already in the zoo"),
    (["--no-zoo", "--mutant", "numpy", "--alternative", "numpy"], "given twice"),
    (["--no-zoo"], "nothing to run"),
    (["--quick", "--no-zoo", "--alternative", "numpy"], "no case is tagged"),
    (["--reference", "golden"], "--golden DIR"),
    (["-n", "0"], "at least 1"),
    (["--timeout", "0"], "finite number of seconds > 0"),
])
def test_usage_errors_exit_2_with_the_reason(case_file, tmp_path, capsys, arguments, reason):
    cases = case_file(SMALL_CASE)
    assert main(["selftest", "--cases", str(cases), "--reference", "oracle", *arguments]) == EXIT_USAGE
    assert reason in capsys.readouterr().err


# --- what the numerical mutants do ----------------------------------------------------------------------
@pytest.mark.parametrize("wide, narrow", [(np.float32, np.float16), (np.float32, ml_dtypes.bfloat16),
                                          (np.float64, np.float32), (np.longdouble, np.float64)])
def test_toward_zero_is_the_largest_magnitude_value_not_beyond_the_exact_one(wide, narrow):
    rng = np.random.default_rng(0)
    exact = (rng.standard_normal(2000) * 10.0 ** rng.integers(-3, 3, 2000)).astype(wide)
    # Perturbed within an ulp of the narrow type, so that (even from float64 to longdouble) most values
    # fall between two narrow values.
    values = exact * (1 + rng.uniform(-1, 1, 2000).astype(wide) * wide(ml_dtypes.finfo(narrow).eps))
    truncated = mutants._toward_zero(values, np.dtype(narrow))
    assert truncated.dtype == np.dtype(narrow)
    back = truncated.astype(wide)
    assert np.all(np.abs(back) <= np.abs(values)) and np.all(np.sign(back) * np.sign(values) >= 0)
    away = np.nextafter(truncated, np.where(values > 0, np.inf, -np.inf).astype(narrow)).astype(wide)
    assert np.all(np.abs(away) > np.abs(values))  # the next value away from zero overshoots: no skipped ulp
    nearest = values.astype(narrow)
    assert np.any(truncated != nearest)
    assert np.all((truncated == nearest) | (np.abs(nearest.astype(wide)) > np.abs(values)))


def test_subnormals_are_flushed_and_normals_kept():
    for dtype in (np.float16, ml_dtypes.bfloat16, np.float32, np.float64):
        info = ml_dtypes.finfo(dtype)
        values = np.array([info.smallest_normal, info.smallest_subnormal, -info.smallest_subnormal, 1.5,
                           np.inf, np.nan], dtype=dtype)
        flushed = mutants._flush_subnormals(values, np.dtype(dtype)).astype(np.float64)
        assert flushed[0] == float(info.smallest_normal) and flushed[3] == 1.5 and np.isinf(flushed[4])
        assert flushed[1] == 0 and flushed[2] == 0 and np.signbit(flushed[2]) and np.isnan(flushed[5])


def test_row_wraparound_reads_the_neighbouring_rows_through_the_halo():
    image = np.arange(1, 7, dtype=np.float32).reshape(1, 2, 3, 1)  # rows [1 2 3], [4 5 6]
    padded = mutants._wraparound_padded(image, (0, 0, 1, 1), np.float32)[0, :, :, 0]
    assert padded.tolist() == [[0, 1, 2, 3, 4], [3, 4, 5, 6, 0]]


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_rounding_in_float32_gives_the_dtypes_own_bits(dtype):
    """_Rounding's float32 arithmetic rounds as converting to the dtype and back does, bit for bit: random
    bit patterns below the overflow threshold, signed zeros, subnormals and ties; and beyond it, infinity."""
    rng = np.random.default_rng(7)
    values = rng.integers(0, 2**32, 1 << 14, dtype=np.uint64).astype(np.uint32).view(np.float32)
    limit = 65504.0 if dtype == np.float16 else float(np.finfo(np.float32).max)
    ties = np.float32(1 + 2.0 ** -11) * np.arange(1, 9, dtype=np.float32)  # halfway between float16 values
    values = np.concatenate([values[np.isfinite(values) & (np.abs(values) <= limit)], ties, -ties,
                             np.float32([0.0, -0.0, 2.0 ** -25, -2.0 ** -25, 3 * 2.0 ** -25, 2.0 ** -14])])
    rounded = values.copy()
    mutants._Rounding(np.dtype(dtype), rounded.shape + (1,), overflow=False)(rounded[:, None])
    assert rounded.view(np.uint32).tolist() == values.astype(dtype).astype(np.float32).view(np.uint32).tolist()
    if dtype == np.float16:
        big = np.float32([65519.0, 65520.0, -70000.0])
        mutants._Rounding(np.dtype(dtype), (3, 1), overflow=True)(big[:, None])
        assert big.tolist() == [65504.0, np.inf, -np.inf]


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_the_running_sum_rounds_every_product_and_sum_as_the_dtype_does(dtype):
    """_running_sum_in_dtype against the dtype's own scalar arithmetic, one product and one add at a time."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((5, 40)).astype(dtype), rng.standard_normal((40, 3)).astype(dtype)
    expected = np.empty((5, 3), dtype)
    for row in range(5):
        for column in range(3):
            total = x[row, 0] * w[0, column]
            for k in range(1, 40):
                total = total + x[row, k] * w[k, column]
            expected[row, column] = total
    got = mutants._running_sum_in_dtype(x, w)
    assert got.dtype == np.dtype(dtype) and got.tobytes() == expected.tobytes()
