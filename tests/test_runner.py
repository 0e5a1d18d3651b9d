"""run_case judges whatever a backend does and returns a Result; it never raises for the backend."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from conformance.cases.case import Case
from conformance.execution.backends import Backend
from conformance.execution.external import CommandFailed
from conformance.execution.faults import BackendCrash, BackendTimeout, HarnessFault
from conformance.execution.runner import run_case
from conformance.impls import mutants
from conformance.impls.numpy_backend import separable_conv2d
from conformance.judging.oracle import compute_oracle
from conformance.judging.reference import REFERENCE_STATUSES, Reference
from conformance.judging.references import GoldenReference, OracleReference
from conformance.reporting.results_file import load_results, results_of
from conformance.result import (
    FAILING_STATUSES,
    JUDGED_STATUSES,
    PASSING_STATUSES,
    STATUSES,
    Kind,
    RecordError,
    ReferenceStatus,
    Result,
    Status,
    is_failing,
)

CASE = Case(input=(2, 5, 6, 3), kernel=(3, 3), channel_multiplier=2, out_channels=4, strides=(1, 1),
            rates=(1, 1), padding="SAME", data_format="NHWC", dtype="float32")


def judged(fn) -> tuple[str, str]:
    """How run_case judges what `fn` does: the harness's mechanics, so against the oracle (no TensorFlow)."""
    result = run_case(CASE, Backend("under_test", fn), OracleReference())
    return result.status, result.message


def test_sys_exit_inside_a_backend_is_its_error_not_the_end_of_the_run():
    def exits(*args, **kwargs):
        raise SystemExit(3)
    status, message = judged(exits)
    assert status == "error" and "SystemExit" in message


def test_raising_on_valid_input_is_an_error():
    def raises(*args, **kwargs):
        raise RuntimeError("device lost")
    assert judged(raises) == ("error", "raised on valid input: RuntimeError: device lost")


def test_non_array_result_is_an_error():
    status, message = judged(lambda *args, **kwargs: [[1.0]])
    assert status == "error" and "not an array" in message


def test_array_likes_are_accepted():
    class Wrapped:
        def __init__(self, array):
            self.array = array

        def __array__(self, dtype=None, copy=None):
            return self.array
    assert judged(lambda *a, **k: Wrapped(separable_conv2d(*a, **k)))[0] == "pass"


def test_a_backend_that_writes_into_its_inputs_cannot_corrupt_the_reference():
    def scribbles(x, dw, pw, *args, **kwargs):
        result = separable_conv2d(x, dw, pw, *args, **kwargs)
        x[...], dw[...], pw[...] = np.nan, np.nan, np.nan
        return result
    assert judged(scribbles)[0] == "pass"
    assert judged(separable_conv2d)[0] == "pass"


# --- kinds: what happened, as a fixed vocabulary (Result.kind), on every result the runner builds ----------------
def kind_of(fn, case: Case = CASE, **options) -> tuple[str, str]:
    result = run_case(case, Backend("under_test", fn), OracleReference(), **options)
    assert type(result.status) is str and type(result.kind) is str  # plain strings in the record
    return result.status, result.kind


ERROR_CASE = dataclasses.replace(CASE, strides=(2, 2), rates=(2, 2), expect_error=True)


def _raise(error: BaseException):
    def fn(*args, **kwargs):
        raise error
    return fn


def _scaled_last_element(factor: float):
    def fn(*args, **kwargs):
        out = separable_conv2d(*args, **kwargs)
        out.flat[-1] *= factor
        return out
    return fn


def _flaky():
    calls = []

    def fn(*args, **kwargs):
        calls.append(1)
        out = separable_conv2d(*args, **kwargs)
        if len(calls) % 2 == 0:
            out.view(np.uint32).flat[0] ^= 1  # the last bit of one element
        return out
    return fn


@pytest.mark.parametrize("fn, case, expected", [
    (separable_conv2d, CASE, ("pass", Kind.NONE)),
    (lambda *a, **k: [[1.0]], CASE, ("error", Kind.NOT_ARRAY)),
    (lambda *a, **k: separable_conv2d(*a, **k)[:1], CASE, ("fail", Kind.SHAPE)),
    (lambda *a, **k: separable_conv2d(*a, **k).astype(np.float64), CASE, ("fail", Kind.DTYPE)),
    (_scaled_last_element(1.01), CASE, ("fail", Kind.ELEMENT)),
    (_scaled_last_element(np.nan), CASE, ("fail", Kind.NONFINITE)),
    (mutants.additive_bias, dataclasses.replace(CASE, input=(2, 16, 16, 8), out_channels=16), ("fail", Kind.BIAS)),
    (_raise(RuntimeError("device lost")), CASE, ("error", Kind.REJECTED_VALID)),
    (_raise(SystemExit(3)), CASE, ("error", Kind.ABORTED)),
    (_raise(MemoryError()), CASE, ("error", Kind.ABORTED)),
    (_raise(CommandFailed("exited with code 3")), CASE, ("error", Kind.COMMAND_FAILED)),
    (_raise(BackendCrash("killed by SIGSEGV")), CASE, ("crash", Kind.CRASH)),
    (_raise(BackendTimeout("no answer in 1 s")), CASE, ("timeout", Kind.TIMEOUT)),
    (_raise(HarnessFault("pipe", "broken")), CASE, ("error", Kind.HARNESS)),
    (_raise(ValueError("rate with stride")), ERROR_CASE, ("pass", Kind.NONE)),
    (mutants.rate_with_stride, ERROR_CASE, ("fail", Kind.ACCEPTED_FORBIDDEN)),
    (_raise(ValueError("something else")), dataclasses.replace(ERROR_CASE, error_pattern="stride"),
     ("fail", Kind.WRONG_ERROR_MESSAGE)),
    (_raise(BackendCrash("killed by SIGSEGV")), ERROR_CASE, ("crash", Kind.CRASH)),
])
def test_every_outcome_has_its_kind(fn, case, expected):
    assert kind_of(fn, case) == expected


def test_nondeterminism_and_harness_faults_have_their_kind():
    assert kind_of(_flaky(), repeat=2) == ("nondeterministic", Kind.NONDETERMINISTIC)
    internal = run_case(CASE, Backend("under_test", separable_conv2d, support=object()), OracleReference())
    assert (internal.status, internal.fault, internal.kind) == ("error", "harness", Kind.HARNESS)


def test_a_missing_golden_entry_is_reference_unavailable(tmp_path):
    result = run_case(CASE, Backend("under_test", separable_conv2d), GoldenReference(str(tmp_path)))
    assert (result.status, result.fault, result.kind) == ("error", "input", Kind.REFERENCE_UNAVAILABLE)


class _RoundedOracle:
    """A reference source standing in for TensorFlow with the oracle rounded to float32 (no TensorFlow)."""

    name = "tensorflow"

    def reference(self, case, inputs):
        oracle = compute_oracle(case, inputs)
        return Reference("tensorflow", ReferenceStatus.OK, output=oracle.output.astype(np.float32), oracle=oracle)

    def close(self):
        pass


def test_the_max_error_ratio_gate_has_its_kind():
    """TensorFlow as the reference (stood in for by the rounded oracle, so no TensorFlow is needed): a
    backend within the tolerance but with several times TensorFlow's error fails the gate."""

    def noisy(*args, **kwargs):  # two ulps off, alternating in sign: no bias, within every limit
        out = separable_conv2d(*args, **kwargs)
        away = np.where(np.arange(out.size).reshape(out.shape) % 2, np.inf, -np.inf).astype(out.dtype)
        return np.nextafter(np.nextafter(out, away), away)
    backend = Backend("under_test", noisy)
    assert run_case(CASE, backend, _RoundedOracle()).kind == Kind.NONE
    gated = run_case(CASE, backend, _RoundedOracle(), max_error_ratio=1.0)
    assert (gated.status, gated.kind) == ("fail", Kind.ERROR_RATIO), gated.message


def test_the_kind_survives_a_reworded_message():
    """What tools compare is the kind, so a message may be reworded freely."""
    result = run_case(CASE, Backend("under_test", _scaled_last_element(1.01)), OracleReference())
    reworded = dataclasses.replace(result, message="something else entirely")
    assert reworded.kind == result.kind == Kind.ELEMENT


def test_the_record_of_a_failure_with_maps_holds_every_field_and_its_dicts_are_its_own():
    result = run_case(CASE, Backend("under_test", _scaled_last_element(1.01)), OracleReference())
    assert result.details  # error maps: nested lists, what a deep copy made slow
    record = result.to_dict()
    assert record == dataclasses.asdict(result)
    record["metrics"]["extra"] = record["details"]["extra"] = None  # a reader changing its record
    assert "extra" not in result.details and "extra" not in result.metrics


def test_json_text_writes_non_finite_floats_as_strings_wherever_they_sit():
    from conformance.files import json_text

    clean = {"maps": [[0.5, 1.0], [2.0, -3.0]], "n": 3, "t": (1, 2)}
    assert json_text(clean, indent=1) == json.dumps(clean, indent=1)
    nested = {"maps": [[0.5, float("nan")], [float("inf"), -float("inf")]], "shape": (2, 2)}
    assert json.loads(json_text(nested)) == {"maps": [[0.5, "nan"], ["inf", "-inf"]], "shape": [2, 2]}


# --- the record: enums are stored as plain strings; records without `kind` (older versions) still load -------
def test_enum_members_are_stored_as_plain_strings_and_serialize_as_before():
    result = Result(case="c", backend="b", status=Status.FAIL, kind=Kind.SHAPE, reference_status=ReferenceStatus.OK)
    assert [type(v) for v in (result.status, result.kind, result.reference_status)] == [str, str, str]
    assert result == Result(case="c", backend="b", status="fail", kind="shape", reference_status="ok")
    record = json.loads(json.dumps(result.to_dict()))
    assert (record["status"], record["kind"], record["reference_status"]) == ("fail", "shape", "ok")
    assert f"{Status.XPASS} {Kind.NONE!s}|{Kind.ELEMENT:>8}" == "xpass | element"
    assert json.dumps([Status.PASS, Kind.BIAS, ReferenceStatus.CRASH]) == '["pass", "bias", "crash"]'


def test_the_status_tuples_come_from_the_enum():
    assert STATUSES == ("pass", "fail", "error", "crash", "timeout", "nondeterministic", "xpass", "xfail", "skip")
    assert set(FAILING_STATUSES) | set(PASSING_STATUSES) == set(STATUSES)
    assert not set(FAILING_STATUSES) & set(PASSING_STATUSES)
    assert JUDGED_STATUSES == tuple(s for s in STATUSES if s != "skip")
    assert is_failing("a status of a newer version") and not is_failing(Status.XFAIL)
    assert REFERENCE_STATUSES == ("ok", "refused", "mismatch", "nondeterministic", "not_run", "crash")
    assert ReferenceStatus.NONE == "" and Kind.NONE == ""


def test_a_record_without_kind_still_loads(tmp_path):
    old = {"case": "c", "backend": "b", "status": "fail", "message": "error 3x the limit at [0, 0, 0, 0]",
           "expect": "result", "reference": "oracle", "reference_status": "not_run", "reference_detail": "",
           "metrics": {}, "details": {}, "parameters": {}, "duration_s": 0.5, "reproducer": "", "fault": ""}
    assert Result.from_dict(old).kind == ""
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"run": {}, "results": [old]}), encoding="utf-8")
    [loaded] = results_of(load_results(path))
    assert (loaded.status, loaded.kind, loaded.message) == ("fail", "", old["message"])
    assert Result.from_dict(old | {"kind": "element"}).kind == "element"
    assert Result.from_dict(old | {"kind": "a kind of a newer version"}).kind == "a kind of a newer version"
    with pytest.raises(RecordError, match="field 'kind' must be a string"):
        Result.from_dict(old | {"kind": 3})
