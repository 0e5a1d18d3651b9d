"""TensorFlow's references computed in a child process of its own, so that TensorFlow aborting or hanging
on one case is that case's reference `crash` (the backend is then judged against the oracle or the
contract), never the end of the run. The isolated member of conformance.judging.references' sources."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from conformance.cases.case import Case
from conformance.cases.data import Inputs
from conformance.execution.faults import DEFAULT_TIMEOUT_S, BackendCrash, BackendTimeout
from conformance.execution.isolation import IsolatedBackend
from conformance.judging import references
from conformance.judging.reference import Reference, build_reference
from conformance.judging.references import ReferenceSource
from conformance.result import ReferenceStatus

REFERENCE_SPEC = "conformance.judging.reference:build_reference"
REFERENCE_ROLE = "TensorFlow's reference process"


class IsolatedTensorFlowReference:
    """TensorFlow in a child process, started at the first case. `environment`: the child's whole
    environment (the harness's as it was before any backend was imported)."""

    name = "tensorflow"

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S, environment: Mapping[str, str] | None = None):
        self.process = IsolatedBackend(REFERENCE_SPEC, timeout, REFERENCE_ROLE,
                                       dict(environment) if environment is not None else None)

    def reference(self, case: Case, inputs: Inputs) -> Reference:
        try:
            reference: Reference = self.process(case, inputs, True)
        except (BackendCrash, BackendTimeout) as error:
            fallback = build_reference(case, inputs, use_tensorflow=False)
            return Reference(fallback.source, ReferenceStatus.CRASH, str(error), oracle=fallback.oracle)
        return reference

    def close(self) -> None:
        self.process.close()


def open_reference(name: str, golden: str | None = None, isolate: bool = True,
                   timeout: float = DEFAULT_TIMEOUT_S, environment: Mapping[str, str] | None = None
                   ) -> ReferenceSource:
    """The source for a --reference choice: TensorFlow isolated unless `isolate` is False."""
    if name == "tensorflow" and isolate:
        return IsolatedTensorFlowReference(timeout, environment)
    return references.open_reference(name, golden)


@contextlib.contextmanager
def opened_reference(name: str, golden: str | None = None, isolate: bool = True) -> Iterator[ReferenceSource]:
    """A source for the time of a block (selftest, shrink, golden build, export), closed after it."""
    source = open_reference(name, golden, isolate)
    try:
        yield source
    finally:
        source.close()
