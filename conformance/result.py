"""The frozen `Result` of one case x backend: the record written to results.json and rendered elsewhere."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class _Value(str, Enum):
    """A str enum whose members print, format and serialize (JSON, f-strings) as their plain values."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Status(_Value):
    """What a result says about the backend on one case. xfail: fails as the backend's expectations file
    says it will; xpass: listed there but now passes (fails the gate in strict mode); nondeterministic:
    repeats of the case (--repeat) were not bitwise equal; crash: the backend's process died; timeout: it
    did not answer in time."""

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    CRASH = "crash"
    TIMEOUT = "timeout"
    NONDETERMINISTIC = "nondeterministic"
    XPASS = "xpass"
    XFAIL = "xfail"
    SKIP = "skip"


class Kind(_Value):
    """What happened on one case, as a fixed vocabulary (Result.kind): what tools group and compare
    failures by (shrink's "same failure", the report's failure patterns), never the message text, which is
    for people and may be reworded. NONE ("") for a passing or skipped result."""

    NONE = ""
    # The output of a valid case, judged by conformance.judging.compare (status fail, or error for NOT_ARRAY).
    NOT_ARRAY = "not_array"  # the backend returned something that is not an array
    SHAPE = "shape"  # an array of the wrong shape
    DTYPE = "dtype"  # an array of the wrong dtype
    NONFINITE = "nonfinite"  # a NaN/Inf where the reference has none, or the other way round
    ELEMENT = "element"  # some element over its limit (or not bitwise exact on exact integer data)
    BIAS = "bias"  # every element within its limit, but the errors lean one way (systematic bias)
    ENERGY = "energy"  # every element within its limit, but too much error energy (the classic check)
    RMS = "rms"  # float16/bfloat16: RMS of the errors in expected rounding errors over its limit
    ERROR_RATIO = "error_ratio"  # within the tolerance, but over --max-error-ratio times TensorFlow's error
    # A case the contract forbids (status fail).
    ACCEPTED_FORBIDDEN = "accepted_forbidden"  # returned a result instead of rejecting the input
    WRONG_ERROR_MESSAGE = "wrong_error_message"  # rejected, but the message does not match the case's pattern
    # No result from the backend: it raised on a valid case, or (any case) it did not judge the input.
    REJECTED_VALID = "rejected_valid"  # raised on valid input (status error)
    CRASH = "crash"  # its process died (status crash, whatever the case expects)
    TIMEOUT = "timeout"  # no answer in time (status timeout, whatever the case expects)
    ABORTED = "aborted"  # gave up: MemoryError, SystemExit, KeyboardInterrupt (status error)
    COMMAND_FAILED = "command_failed"  # a cmd: backend exited non-zero, not with the rejection code (status error)
    # The statuses that say it all.
    NONDETERMINISTIC = "nondeterministic"  # repeats were not bitwise equal (status nondeterministic)
    XPASS = "xpass"  # listed as expected to fail, but passes (status xpass)
    # No verdict on the backend (status error, Result.fault set).
    REFERENCE_UNAVAILABLE = "reference_unavailable"  # no reference to judge with (a missing golden entry, ...)
    HARNESS = "harness"  # the harness itself failed on the case


class ReferenceStatus(_Value):
    """TensorFlow's health on one case (Result.reference_status; conformance.judging.reference). NONE ("")
    on a record without one (the reference was never built: a skip, a harness fault, a lost result)."""

    NONE = ""
    OK = "ok"  # TensorFlow agrees with the oracle (or, on an error case, rejects the input too)
    REFUSED = "refused"  # TensorFlow raised on a valid case: the backend is judged against the oracle
    MISMATCH = "mismatch"  # TensorFlow disagrees with the oracle (or accepts input the contract forbids)
    NONDETERMINISTIC = "nondeterministic"  # two TensorFlow runs differ
    NOT_RUN = "not_run"  # TensorFlow not used (--reference oracle, a skip, malformed ranks)
    CRASH = "crash"  # TensorFlow's process died or hung on the case


STATUSES = tuple(s.value for s in Status)
FAILING_STATUSES = tuple(s.value for s in (Status.FAIL, Status.ERROR, Status.CRASH, Status.TIMEOUT,
                                           Status.NONDETERMINISTIC, Status.XPASS))
# The only statuses that let a gate be green. Anything else, a status this version does not know
# included (a newer tool's, or a hand-edited file's), fails: what cannot be judged is never a pass.
PASSING_STATUSES = tuple(s.value for s in (Status.PASS, Status.XFAIL, Status.SKIP))
# A result that judged the backend: a skip judged nothing.
JUDGED_STATUSES = tuple(s for s in STATUSES if s != Status.SKIP)
KINDS = tuple(k.value for k in Kind)

# Why a result is not a verdict on the backend (Result.fault): "" it is one; "harness": the harness itself
# failed on this case (a broken pipe, a full disk, a bug): the run exits 3; "input": a file the run was
# given is unusable for this case (a malformed golden entry): the run exits 2. Either way `status` is
# `error`, never a pass.
FAULTS = ("", "harness", "input")


def is_failing(status: str) -> bool:
    """Whether a status fails the gate: any status but pass, xfail and skip, an unknown one included."""
    return status not in PASSING_STATUSES


@dataclass(frozen=True)
class Result:
    case: str  # the case id
    backend: str
    status: str  # one of STATUSES (Status); crash: the backend's process died; timeout: it did not answer in time
    message: str = ""
    expect: str = "result"  # "result" or "error"
    reference: str = ""  # what the backend was compared with: tensorflow, oracle, golden or contract
    reference_status: str = ""  # TensorFlow's health on this case (ReferenceStatus): ok, refused, mismatch, ...
    reference_detail: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # failures only: error maps for the HTML report
    parameters: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    reproducer: str = ""
    fault: str = ""  # one of FAULTS
    # What happened (Kind): what tools classify by, never `message`. A plain string in the record; "" on a
    # passing or skipped result, and on records written before the field existed.
    kind: str = ""
    # Where a backend's rejection came from (faults.REJECTION_ORIGINS): "runtime" (the runtime itself
    # refused), "adapter" (an adapter's own check: the runtime cannot express the input),
    # "accepted_by_runtime" (the runtime accepted what the contract forbids; the adapter refused it after);
    # "" where the backend does not say, or nothing was rejected.
    rejected_by: str = ""

    def __post_init__(self) -> None:
        # Enum members (Status, Kind, ReferenceStatus) are stored as their plain values: the record is the
        # same whichever the caller passed, and serializes everywhere (JSON, YAML, pickle, XML).
        for name in ("status", "kind", "reference_status"):
            value = getattr(self, name)
            if isinstance(value, Enum):
                object.__setattr__(self, name, value.value)

    def to_dict(self) -> dict[str, Any]:
        """The record as a dict: its own dict, metrics, details and parameters are new, what they hold is
        shared (a failure's error maps are large; dataclasses.asdict deep-copied every value of them)."""
        return {item.name: _copied(getattr(self, item.name)) for item in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        """Raises RecordError when `data` is not a result record (missing or mistyped fields)."""
        if not isinstance(data, dict):
            raise RecordError(f"expected a JSON object, got {type(data).__name__}")
        for name in ("case", "backend", "status"):
            if name not in data:
                raise RecordError(f"field {name!r} is missing")
        for item in dataclasses.fields(cls):
            if item.name in data and not _is(data[item.name], str(item.type)):
                raise RecordError(f"field {item.name!r} must be {_TYPES[str(item.type)][1]}, "
                                  f"got {str(data[item.name])[:80]!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _copied(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


# The JSON form of each field's annotation: the Python types it may hold, and how a message names them.
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "str": ((str,), "a string"), "float": ((int, float), "a number"), "dict[str, Any]": ((dict,), "an object")}


def _is(value: Any, annotation: str) -> bool:
    types, _ = _TYPES[annotation]
    return isinstance(value, types) and not isinstance(value, bool)


class RecordError(ValueError):
    """A results record that is not one: the caller names the file and line."""
