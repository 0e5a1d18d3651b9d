"""Run one case against one backend and judge it: `run_case` returns a `Result`, it never raises for
anything the backend does."""

from __future__ import annotations

import hashlib
import re
import shlex
import time
from functools import lru_cache

import numpy as np

from conformance.backends import Backend
from conformance.case import Case
from conformance.compare import compare
from conformance.data import Inputs, materialize, numpy_dtype
from conformance.golden import GoldenError, GoldenStore
from conformance.isolation import BackendCrash, BackendTimeout, IsolatedBackend
from conformance.reference import Reference, build_reference
from conformance.result import Result
from conformance.tolerance import Tolerance

# What a backend may raise without ending the run: a sys.exit() inside a backend is its failure, not ours.
BACKEND_EXCEPTIONS = (Exception, SystemExit)


def reproducer(case: Case, backend: str) -> str:
    return shlex.join(["sepconv-conformance", "run", "--cases", case.origin.file, "--backend", backend,
                       "--id", case.id])


REFERENCE_SPEC = "conformance.reference:build_reference"
_reference_process: IsolatedBackend | None = None


def isolate_reference(spec: str | None = REFERENCE_SPEC) -> None:
    """Compute TensorFlow references in a child process (None: in this one), so that TensorFlow aborting
    on one case is that case's `crash`, not the end of the run."""
    global _reference_process
    if _reference_process is not None:
        _reference_process.close()
    _reference_process = IsolatedBackend(spec) if spec else None
    prepare.cache_clear()


@lru_cache(maxsize=4)
def prepare(case: Case, use_tensorflow: bool = True, golden: str | None = None) -> tuple[Inputs, Reference]:
    """Inputs and reference for a case, kept for the next backends of the same case. With `golden` (a
    folder of golden entries) the reference is read from there and TensorFlow is never imported;
    raises GoldenError when the entry is missing or bad, BackendCrash when TensorFlow's process dies."""
    inputs = materialize(case)
    if golden is not None:
        return inputs, GoldenStore(golden).read(case, inputs)
    if use_tensorflow and _reference_process is not None:
        return inputs, _reference_process(case, inputs, use_tensorflow)
    return inputs, build_reference(case, inputs, use_tensorflow)


def _call(backend: Backend, case: Case, inputs: Inputs) -> object:
    # Copies: a backend that writes into its inputs must not corrupt the reference or the next backend.
    return backend.fn(inputs.input.copy(), inputs.depthwise_filter.copy(), inputs.pointwise_filter.copy(),
                      case.operator_strides, case.operator_padding, data_format=case.data_format,
                      dilations=list(case.rates))


def _describe(error: BaseException) -> str:
    return f"{getattr(error, 'type_name', type(error).__name__)}: {error}"


def _judge_error_case(case: Case, output: object, raised: BaseException | None) -> tuple[str, str]:
    if raised is not None:  # rejecting is what this case expects
        message = _describe(raised)
        if case.error_pattern and not re.search(case.error_pattern, message):
            return "fail", f"raised, but the message does not match /{case.error_pattern}/: {message}"
        return "pass", f"rejected: {message}"
    shape = list(np.shape(output)) if isinstance(output, np.ndarray) else type(output).__name__
    return "fail", f"accepted input the contract forbids (returned {shape})"


def skipped(case: Case, backend: str, reason: str) -> Result:
    """The record of a case not run on a backend, and why."""
    return Result(case=case.id, backend=backend, status="skip", message=reason,
                  expect="error" if case.expect_error else "result", reference_status="not_run",
                  parameters=case.parameters(), reproducer=reproducer(case, backend))


def _outcome(backend: Backend, case: Case, inputs: Inputs) -> tuple[object, BaseException | None]:
    """What one call gave: (output, None), or (None, what it raised). Crashes and hangs propagate.
    Array-likes (a TensorFlow tensor, a list) are converted here, so that repeats compare their values."""
    try:
        output = _call(backend, case, inputs)
    except (BackendCrash, BackendTimeout):
        raise
    except BACKEND_EXCEPTIONS as error:
        return None, error
    if not isinstance(output, np.ndarray) and hasattr(output, "__array__"):
        try:
            output = np.asarray(output)
        except Exception:  # noqa: BLE001 - left as is: compare reports the type
            pass
    return output, None


def _fingerprint(output: object, raised: BaseException | None) -> bytes:
    """Bitwise identity of an outcome: the output's dtype, shape and bytes, or the kind of exception."""
    if raised is not None:
        return f"raised {getattr(raised, 'type_name', type(raised).__name__)}".encode()
    if isinstance(output, np.ndarray) and output.dtype != object:
        content = hashlib.sha256(np.ascontiguousarray(output).view(np.uint8).reshape(-1)).digest()
        return f"{output.dtype}{output.shape}".encode() + content
    return f"returned {type(output).__name__}".encode()


def _nondeterminism(first: tuple[object, BaseException | None], later: tuple[object, BaseException | None],
                    repeat: int) -> str:
    """Say how repeat `repeat` differs from the first call."""
    (output, raised), (other, other_raised) = first, later
    if raised is not None or other_raised is not None or not isinstance(output, np.ndarray) \
            or not isinstance(other, np.ndarray) or output.shape != other.shape or output.dtype != other.dtype:
        describe = [_describe(r) if r is not None else f"{type(o).__name__} {np.shape(o)}"
                    for o, r in (first, later)]
        return f"call {repeat} gave {describe[1]}, call 1 gave {describe[0]}"
    a, b = np.ascontiguousarray(output), np.ascontiguousarray(other)
    differs = a.view(np.uint8).reshape(a.size, -1) != b.view(np.uint8).reshape(b.size, -1)
    positions = np.flatnonzero(differs.any(axis=1))
    index = [int(i) for i in np.unravel_index(int(positions[0]), a.shape)]
    return (f"call {repeat} differs bitwise from call 1 at {positions.size} of {a.size} elements; first at "
            f"{index}: {a.flat[positions[0]]!r} vs {b.flat[positions[0]]!r}")


def run_case(case: Case, backend: Backend, use_tensorflow: bool = True, golden: str | None = None,
             repeat: int = 1) -> Result:
    """Judge one case on one backend. With repeat > 1 the backend is called that many times and any
    bitwise difference between the calls is the status `nondeterministic`."""
    if backend.support is not None and (reason := backend.support.reason_to_skip(case)):
        return skipped(case, backend.name, reason)
    start = time.perf_counter()
    try:
        inputs, reference = prepare(case, use_tensorflow, golden)
    except (BackendCrash, GoldenError) as error:  # no reference: this case cannot be judged, never a pass
        crashed = isinstance(error, BackendCrash)
        return Result(case=case.id, backend=backend.name, status="crash" if crashed else "error",
                      message=f"reference: {error}", expect="error" if case.expect_error else "result",
                      reference="tensorflow" if crashed else "golden", reference_status="crash" if crashed else "",
                      parameters=case.parameters(), reproducer=reproducer(case, backend.name),
                      duration_s=time.perf_counter() - start)
    common = dict(case=case.id, backend=backend.name, expect="error" if case.expect_error else "result",
                  reference=reference.source, reference_status=reference.status,
                  reference_detail=reference.detail, parameters=case.parameters(),
                  reproducer=reproducer(case, backend.name) + (f" --repeat {repeat}" if repeat > 1 else ""))
    try:  # a crash or a hang is never a pass, not even for an error case
        first = _outcome(backend, case, inputs)
        first_fingerprint = _fingerprint(*first) if repeat > 1 else b""
        for call in range(2, repeat + 1):
            later = _outcome(backend, case, inputs)
            if _fingerprint(*later) != first_fingerprint:
                return Result(status="nondeterministic", message=_nondeterminism(first, later, call),
                              duration_s=time.perf_counter() - start, **common)
    except BackendCrash as error:
        return Result(status="crash", message=str(error), duration_s=time.perf_counter() - start, **common)
    except BackendTimeout as error:
        return Result(status="timeout", message=str(error), duration_s=time.perf_counter() - start, **common)
    output, raised = first
    if case.expect_error:
        status, message = _judge_error_case(case, output, raised)
        return Result(status=status, message=message, duration_s=time.perf_counter() - start, **common)
    if raised is not None:  # a backend that raises on valid input is a finding
        return Result(status="error", message=f"raised on valid input: {_describe(raised)}",
                      metrics=dict(reference.metrics), duration_s=time.perf_counter() - start, **common)
    assert reference.oracle is not None
    expected = reference.output if reference.output is not None else reference.oracle.output
    sides = 2 if reference.source == "tensorflow" else 1
    verdict = compare(output, expected, reference.oracle.output, reference.oracle.bound,
                      Tolerance.for_case(case), sides, numpy_dtype(case.dtype), case.data_format)
    status = "pass" if verdict.passed else "fail"
    if not isinstance(output, np.ndarray):
        status = "error"
    metrics = dict(reference.metrics) | verdict.metrics
    return Result(status=status, message=verdict.reason, metrics=metrics, details=verdict.details,
                  duration_s=time.perf_counter() - start, **common)
