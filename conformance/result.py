"""The frozen `Result` of one case x backend: the record written to results.json and rendered elsewhere."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# xfail: fails as the backend's expectations file says it will; xpass: listed there but now passes (fails
# the gate in strict mode); nondeterministic: repeats of the case (--repeat) were not bitwise equal.
STATUSES = ("pass", "fail", "error", "crash", "timeout", "nondeterministic", "xpass", "xfail", "skip")
FAILING_STATUSES = ("fail", "error", "crash", "timeout", "nondeterministic", "xpass")


@dataclass(frozen=True)
class Result:
    case: str  # the case id
    backend: str
    status: str  # one of STATUSES; crash: the backend's process died; timeout: it did not answer in time
    message: str = ""
    expect: str = "result"  # "result" or "error"
    reference: str = ""  # what the backend was compared with: tensorflow, oracle or contract
    reference_status: str = ""  # TensorFlow's health on this case: ok, refused, mismatch, ...
    reference_detail: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # failures only: error maps for the HTML report
    parameters: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    reproducer: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
