"""Run one case against one backend and judge it: `run_case` returns a `Result`, it never raises.

Whose fault each outcome is decides its status (conformance.execution.faults): only an exception raised by the
backend's own code is a rejection (a pass on a case that expects an error); a crash, a timeout, a
MemoryError/SystemExit/KeyboardInterrupt and any other non-zero `cmd:` exit are failures whatever the case
expects; a fault of the harness is `error` with `fault: harness`, never a verdict on the backend.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shlex
import time
import traceback
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from conformance.cases.case import Case
from conformance.cases.data import Inputs, materialize, numpy_dtype
from conformance.execution.backends import BACKPROP_ATTRIBUTE, Backend
from conformance.execution.external import CommandFailed
from conformance.execution.faults import (
    ABORTS,
    NOT_A_REJECTION,
    REJECTION_ORIGINS,
    BackendAborted,
    BackendCrash,
    BackendTimeout,
    BackwardUnsupported,
    HarnessFault,
)
from conformance.judging.accuracy import relative_accuracy
from conformance.judging.backward import GRADIENTS, compare_gradients, gradient_tolerance
from conformance.judging.compare import Comparison, compare
from conformance.judging.golden import GoldenError
from conformance.judging.hypotheses import recomputed_relation
from conformance.judging.outputs import as_judged, as_judged_gradients
from conformance.judging.reference import Reference
from conformance.judging.references import ReferenceSource
from conformance.judging.subnormals import flushed_oracle, flushed_tolerance
from conformance.judging.tolerance import Tolerance
from conformance.result import Kind, ReferenceStatus, Result, Status

NO_BACKPROP = (f"no backward pass: the backend's function has no `backprop` attribute and its module no "
               f"{BACKPROP_ATTRIBUTE} (docs/backends.md, 'The backward pass')")


def reproducer(case: Case, backend: str, options: Sequence[str] = ()) -> str:
    """The command that runs this case alone with the run's options, into a folder of its own (so that it
    never overwrites the full run's reports)."""
    return shlex.join(["sepconv-conformance", "run", "--cases", case.origin.file, "--backend", backend,
                       "--id", case.id, *options])


@lru_cache(maxsize=4)
def prepare(case: Case, reference: ReferenceSource) -> tuple[Inputs, Reference]:
    """Inputs and reference for a case, kept for the next backends of the same case (the cache is keyed
    by the source too: two runs in one process never share references). Raises GoldenError when a golden
    entry is missing or bad, HarnessFault when TensorFlow's process cannot be reached."""
    inputs = materialize(case)
    return inputs, reference.reference(case, inputs)


def _call(backend: Backend, case: Case, inputs: Inputs) -> object:
    # Copies: a backend that writes into its inputs must not corrupt the reference or the next backend.
    tensors = [inputs.input.copy(), inputs.depthwise_filter.copy(), inputs.pointwise_filter.copy()]
    extra = {"case_id": case.id} if getattr(backend.fn, "accepts_case_id", False) else {}  # a cmd: backend's
    if case.mode == "backward":
        assert backend.backprop is not None and inputs.output_gradient is not None
        return backend.backprop(*tensors, inputs.output_gradient.copy(), case.operator_strides, case.operator_padding,
                                data_format=case.data_format, dilations=list(case.rates), **extra)
    return backend.fn(*tensors, case.operator_strides, case.operator_padding, data_format=case.data_format,
                      dilations=list(case.rates), **extra)


def _describe(error: BaseException) -> str:
    return f"{getattr(error, 'type_name', type(error).__name__)}: {error}"


def _judge_error_case(case: Case, output: object, raised: BaseException | None) -> tuple[Status, Kind, str]:
    if raised is not None:  # rejecting is what this case expects
        message = _describe(raised)
        if case.error_pattern and not re.search(case.error_pattern, message):
            return (Status.FAIL, Kind.WRONG_ERROR_MESSAGE,
                    f"raised, but the message does not match /{case.error_pattern}/: {message}")
        return Status.PASS, Kind.NONE, f"rejected: {message}"
    shape = list(np.shape(output)) if isinstance(output, np.ndarray) else type(output).__name__
    return Status.FAIL, Kind.ACCEPTED_FORBIDDEN, f"accepted input the contract forbids (returned {shape})"


def skipped(case: Case, backend: str, reason: str, options: Sequence[str] = ()) -> Result:
    """The record of a case not run on a backend, and why."""
    return Result(case=case.id, backend=backend, status=Status.SKIP, message=reason, expect=case.expect,
                  reference_status=ReferenceStatus.NOT_RUN, parameters=case.parameters(),
                  reproducer=reproducer(case, backend, options))


def _outcome(backend: Backend, case: Case, inputs: Inputs) -> tuple[object, BaseException | None]:
    """What one call gave: (output, None), or (None, the rejection it raised). Everything that is not a
    rejection propagates: crashes, hangs, harness faults, and a backend giving up (ABORTS) as
    BackendAborted. Outputs are normalized (conformance.judging.outputs), so repeats compare their values."""
    try:
        output = _call(backend, case, inputs)
    except NOT_A_REJECTION:
        raise
    except ABORTS as error:
        raise BackendAborted(type(error).__name__, str(error)) from None
    except Exception as error:  # noqa: BLE001 - the backend's own code raised: a rejection
        return None, error
    return (as_judged_gradients(output) if case.mode == "backward" else as_judged(output)), None


def _fingerprint(output: object, raised: BaseException | None) -> bytes:
    """Bitwise identity of an outcome: the output's dtype, shape and bytes, or the kind of exception."""
    if raised is not None:
        return f"raised {getattr(raised, 'type_name', type(raised).__name__)}".encode()
    if isinstance(output, tuple):  # a backward pass's gradients
        return b"|".join(_fingerprint(part, None) for part in output)
    if isinstance(output, np.ndarray) and output.dtype != object:
        content = hashlib.sha256(np.ascontiguousarray(output).tobytes()).digest()
        return f"{output.dtype}{output.shape}".encode() + content
    return f"returned {type(output).__name__}".encode()


def _nondeterminism(first: tuple[object, BaseException | None], later: tuple[object, BaseException | None],
                    repeat: int) -> str:
    """Say how repeat `repeat` differs from the first call."""
    (output, raised), (other, other_raised) = first, later
    if isinstance(output, tuple) and isinstance(other, tuple) and len(output) == len(other) == len(GRADIENTS):
        for name, part, other_part in zip(GRADIENTS, output, other):
            if _fingerprint(part, None) != _fingerprint(other_part, None):
                return f"{name}: " + _nondeterminism((part, None), (other_part, None), repeat)
    if raised is not None or other_raised is not None or not isinstance(output, np.ndarray) \
            or not isinstance(other, np.ndarray) or output.shape != other.shape or output.dtype != other.dtype:
        describe = [_describe(r) if r is not None else f"{type(o).__name__} {np.shape(o)}"  # type: ignore[call-overload]
                    for o, r in (first, later)]
        return f"call {repeat} gave {describe[1]}, call 1 gave {describe[0]}"
    a, b = np.ascontiguousarray(output), np.ascontiguousarray(other)
    differs = a.view(np.uint8).reshape(a.size, -1) != b.view(np.uint8).reshape(b.size, -1)
    positions = np.flatnonzero(differs.any(axis=1))
    index = [int(i) for i in np.unravel_index(int(positions[0]), a.shape)]
    return (f"call {repeat} differs bitwise from call 1 at {positions.size} of {a.size} elements; first at "
            f"{index}: {a.flat[positions[0]]!r} vs {b.flat[positions[0]]!r}")


def _subnormal_verdict(preserved: Comparison, case: Case, inputs: Inputs, output: np.ndarray,
                       tolerance: Tolerance, declared: str | None) -> Comparison:
    """On a subnormal case: judged as preserving (`preserved`, the ordinary verdict) or as flushing
    (conformance.judging.subnormals), as the backend declares, else either; metrics.subnormals says which it did."""
    dtype = numpy_dtype(case.dtype)
    oracle = flushed_oracle(case, inputs)
    flushed = compare(output, oracle.output, oracle.output, oracle.bound, flushed_tolerance(tolerance, dtype), 1,
                      dtype, case.data_format)
    did = "preserved" if preserved.passed else "flushed" if flushed.passed else "neither"
    chosen = flushed if declared == "flush" or (declared is None and did == "flushed") else preserved
    note = f"; declared subnormals: {declared}" if declared and not chosen.passed else ""
    return dataclasses.replace(chosen, reason=chosen.reason + note,
                               metrics=chosen.metrics | {"subnormals": did, "subnormal_policy": declared or "either"})


def run_case(case: Case, backend: Backend, reference: ReferenceSource, repeat: int = 1, options: Sequence[str] = (),
             max_error_ratio: float | None = None) -> Result:
    """Judge one case on one backend; never raises (a fault of the harness is a result with
    `fault: harness`). With repeat > 1 the backend is called that many times and any bitwise difference
    between the calls is the status `nondeterministic`. `options`: the run's options for the reproducer;
    `max_error_ratio`: fail a passing case whose error is more than that many times TensorFlow's."""
    start = time.perf_counter()
    try:
        result = _run_case(case, backend, reference, repeat, options, max_error_ratio)
    except Exception as error:  # noqa: BLE001 - a bug of ours: recorded, never a lost result nor a pass
        result = harness_fault(case, backend.name, error, options)
    return dataclasses.replace(result, duration_s=time.perf_counter() - start)


def harness_fault(case: Case, backend: str, error: Exception, options: Sequence[str] = ()) -> Result:
    """The record of a bug of ours on a case (`error`, `fault: harness`): no verdict on the backend."""
    where = traceback.extract_tb(error.__traceback__)[-1]
    return Result(case=case.id, backend=backend, status=Status.ERROR, fault="harness", kind=Kind.HARNESS,
                  message=f"harness fault (internal): {_describe(error)} at {where.filename}:{where.lineno}",
                  expect=case.expect, parameters=case.parameters(), reproducer=reproducer(case, backend, options))


def _run_case(case: Case, backend: Backend, source: ReferenceSource, repeat: int, options: Sequence[str],
              max_error_ratio: float | None) -> Result:
    if backend.support is not None and (reason := backend.support.reason_to_skip(case)):
        return skipped(case, backend.name, reason, options)
    if case.mode == "backward" and backend.backprop is None:
        return skipped(case, backend.name, NO_BACKPROP, options)
    repro = reproducer(case, backend.name, options)
    try:
        inputs, reference = prepare(case, source)
    except GoldenError as error:  # no reference: this case cannot be judged, never a pass
        return Result(case=case.id, backend=backend.name, status=Status.ERROR, fault="input",
                      kind=Kind.REFERENCE_UNAVAILABLE, message=f"reference: {error}", expect=case.expect,
                      reference=source.name, parameters=case.parameters(), reproducer=repro)
    except HarnessFault as error:  # TensorFlow's process could not be reached: no reference either
        return Result(case=case.id, backend=backend.name, status=Status.ERROR, fault="harness",
                      kind=Kind.REFERENCE_UNAVAILABLE, message=f"reference: {error}", expect=case.expect,
                      parameters=case.parameters(), reproducer=repro)
    common: dict[str, Any] = {"case": case.id, "backend": backend.name, "expect": case.expect,
                              "reference": reference.source, "reference_status": reference.status,
                              "reference_detail": reference.detail, "parameters": case.parameters(),
                              "reproducer": repro}
    try:  # a crash, a hang or a backend giving up is never a pass, not even for an error case
        first = _outcome(backend, case, inputs)
        first_fingerprint = _fingerprint(*first) if repeat > 1 else b""
        for call in range(2, repeat + 1):
            later = _outcome(backend, case, inputs)
            if _fingerprint(*later) != first_fingerprint:
                return Result(status=Status.NONDETERMINISTIC, kind=Kind.NONDETERMINISTIC,
                              message=_nondeterminism(first, later, call), **common)
    except BackendCrash as error:
        return Result(status=Status.CRASH, kind=Kind.CRASH, message=str(error), **common)
    except BackendTimeout as error:
        return Result(status=Status.TIMEOUT, kind=Kind.TIMEOUT, message=str(error), **common)
    except BackendAborted as error:  # CommandFailed: a cmd: backend's exit code other than the rejection's
        kind = Kind.COMMAND_FAILED if isinstance(error, CommandFailed) else Kind.ABORTED
        return Result(status=Status.ERROR, kind=kind, message=f"the backend gave up instead of judging the input "
                                                              f"(not a rejection): {error}", **common)
    except HarnessFault as error:
        return Result(status=Status.ERROR, fault="harness", kind=Kind.HARNESS, message=str(error), **common)
    except BackwardUnsupported as error:  # a cmd: program without a backward call: not run, with the reason
        return skipped(case, backend.name, f"no backward pass: {error}", options)
    output, raised = first
    if raised is not None:
        common["rejected_by"] = REJECTION_ORIGINS.get(getattr(raised, "type_name", type(raised).__name__), "")
    if case.expect_error:
        status, kind, message = _judge_error_case(case, output, raised)
        return Result(status=status, kind=kind, message=message, **common)
    if raised is not None:  # a backend that raises on valid input is a finding
        return Result(status=Status.ERROR, kind=Kind.REJECTED_VALID,
                      message=f"raised on valid input: {_describe(raised)}", metrics=dict(reference.metrics), **common)
    if case.mode == "backward":
        return _judge_gradients(case, backend, reference, output, common)
    return _judge_output(case, backend, inputs, reference, output, max_error_ratio, common)


def _judge_gradients(case: Case, backend: Backend, reference: Reference, output: object,
                     common: dict[str, Any]) -> Result:
    """A backward case: each gradient judged on its own (its reference, exact value and error model:
    conformance.judging.backward); the result fails if any does, and says which. Its top-level metrics are
    the worst gradient's; `metrics.gradients` holds each one's; the details (maps) are the worst failing
    gradient's, named in `details.gradient`."""
    assert reference.gradient_oracles is not None
    if not (isinstance(output, tuple) and len(output) == len(GRADIENTS)):
        return Result(status=Status.ERROR, kind=Kind.NOT_ARRAY, metrics=dict(reference.metrics), **common,
                      message=f"returned {type(output).__name__}, not the 3 gradients ({', '.join(GRADIENTS)})")
    accumulators = backend.support.accumulator if backend.support else None
    expected = None if reference.gradients is None else [reference.gradients[name] for name in GRADIENTS]
    verdicts = compare_gradients(case, output, expected, reference.gradient_oracles, accumulators)
    failing = [name for name, verdict in verdicts.items() if not verdict.passed]
    worst = max(verdicts, key=lambda name: (name in failing, verdicts[name].metrics.get("max_error_in_limits", 0.0)))
    metrics = dict(reference.metrics) | verdicts[worst].metrics | {
        "gradients": {name: {k: v for k, v in verdict.metrics.items() if k != "worst"} | {"passed": verdict.passed}
                      for name, verdict in verdicts.items()},
        "failing_gradients": failing, "accumulator": gradient_tolerance(case, worst, accumulators).accumulator}
    if not failing:
        return Result(status=Status.PASS, metrics=metrics, **common)
    error = next((verdicts[name] for name in failing if verdicts[name].kind == Kind.NOT_ARRAY), None)
    message = "; ".join(f"{name}: {verdicts[name].reason}" for name in failing)
    return Result(status=Status.ERROR if error else Status.FAIL, kind=(error or verdicts[worst]).kind, message=message,
                  metrics=metrics, details=verdicts[worst].details | {"gradient": worst} if verdicts[worst].details
                  else {}, **common)


def _judge_output(case: Case, backend: Backend, inputs: Inputs, reference: Reference, output: object,
                  max_error_ratio: float | None, common: dict[str, Any]) -> Result:
    """The verdict on a valid case's output: the tolerance model under the backend's declared numerics,
    then (where TensorFlow is the reference) its accuracy relative to TensorFlow's."""
    assert reference.oracle is not None
    support = backend.support
    expected = reference.output if reference.output is not None else reference.oracle.output
    sides = 2 if reference.source == "tensorflow" else 1
    tolerance = Tolerance.for_case(case, support.accumulator if support else None)
    verdict = compare(output, expected, reference.oracle.output, reference.oracle.bound, tolerance, sides,
                      numpy_dtype(case.dtype), case.data_format, reference.oracle.variance)
    if not isinstance(output, np.ndarray):
        return Result(status=Status.ERROR, kind=verdict.kind, message=verdict.reason, metrics=dict(reference.metrics),
                      **common)
    if case.data == "subnormal":
        verdict = _subnormal_verdict(verdict, case, inputs, output, tolerance, support.subnormals if support else None)
    status, kind, message = (Status.PASS if verdict.passed else Status.FAIL), verdict.kind, verdict.reason
    details = verdict.details
    relation = details.get("relation")
    # A failing 4-D output no detector explained, or explained as a shift (which may be padding on the wrong sides).
    if "shape" in details and (relation is None or relation["what"].startswith("shifted")):
        if found := recomputed_relation(case, inputs, output.astype(np.float64), expected, tolerance):
            details = details | {"relation": {"what": found[0], "sentence": found[1]}}
    metrics = dict(reference.metrics) | verdict.metrics | {"error_model": tolerance.describe(),
                                                           "accumulator": tolerance.accumulator}
    if verdict.passed and reference.output is not None:
        metrics |= relative_accuracy(output, reference.output, reference.oracle.output, reference.oracle.bound,
                                     tolerance)
        ratio = metrics["error_ratio_to_tensorflow"]
        if max_error_ratio is not None and ratio > max_error_ratio:
            status, kind = Status.FAIL, Kind.ERROR_RATIO
            message = (f"error {ratio:.3g}x TensorFlow's against the oracle (root mean square in units of u*B), "
                       f"over --max-error-ratio {max_error_ratio:g}")
    return Result(status=status, kind=kind, message=message, metrics=metrics, details=details, **common)
