"""The frozen `Result` of one case x backend: the record written to results.json and rendered elsewhere."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# xfail: fails as the backend's expectations file says it will; xpass: listed there but now passes (fails
# the gate in strict mode); nondeterministic: repeats of the case (--repeat) were not bitwise equal.
STATUSES = ("pass", "fail", "error", "crash", "timeout", "nondeterministic", "xpass", "xfail", "skip")
FAILING_STATUSES = ("fail", "error", "crash", "timeout", "nondeterministic", "xpass")
# The only statuses that let a gate be green. Anything else, a status this version does not know
# included (a newer tool's, or a hand-edited file's), fails: what cannot be judged is never a pass.
PASSING_STATUSES = ("pass", "xfail", "skip")
# A result that judged the backend: a skip judged nothing.
JUDGED_STATUSES = tuple(s for s in STATUSES if s != "skip")

# Why a result is not a verdict on the backend (Result.fault): "" it is one; "harness": the harness itself
# failed on this case (a broken pipe, a full disk, a bug): the run exits 3; "input": a file the run was
# given is unusable for this case (a malformed golden entry): the run exits 2. Either way `status` is
# `error`, never a pass.
FAULTS = ("", "harness", "input")


def is_failing(status: str) -> bool:
    return status not in PASSING_STATUSES


@dataclass(frozen=True)
class Result:
    case: str  # the case id
    backend: str
    status: str  # one of STATUSES; crash: the backend's process died; timeout: it did not answer in time
    message: str = ""
    expect: str = "result"  # "result" or "error"
    reference: str = ""  # what the backend was compared with: tensorflow, oracle, golden or contract
    reference_status: str = ""  # TensorFlow's health on this case: ok, refused, mismatch, crash, ...
    reference_detail: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # failures only: error maps for the HTML report
    parameters: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    reproducer: str = ""
    fault: str = ""  # one of FAULTS

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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


# The JSON form of each field's annotation: the Python types it may hold, and how a message names them.
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "str": ((str,), "a string"), "float": ((int, float), "a number"), "dict[str, Any]": ((dict,), "an object")}


def _is(value: Any, annotation: str) -> bool:
    types, _ = _TYPES[annotation]
    return isinstance(value, types) and not isinstance(value, bool)


class RecordError(ValueError):
    """A results record that is not one: the caller names the file and line."""
