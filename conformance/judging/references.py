"""Where a case's expected output comes from: one interface, three sources.

Like Hypothesis's ExampleDatabase, the rest of the harness sees only `ReferenceSource`: `reference(case,
inputs)` gives the `Reference` a backend is judged against (with TensorFlow's health and the oracle), and
`close()` releases what the source holds. The sources:

- `TensorFlowReference`: TensorFlow's output, checked by the float64 oracle (conformance.judging.reference).
  In this process here; conformance.execution.reference_process runs it in a child process instead, so
  that TensorFlow aborting on a case is that case's `crash`, not the end of the run.
- `OracleReference`: the float64 oracle alone (`--reference oracle`).
- `GoldenReference`: TensorFlow's results stored by `golden build` (`--reference golden`), no TensorFlow.

Sources hold no module state: two runs in one process (fuzz, selftest, tests) each open their own.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Protocol

from conformance.cases.case import Case
from conformance.cases.data import Inputs
from conformance.judging.golden import GoldenStore
from conformance.judging.reference import Reference, build_reference

REFERENCES = ("tensorflow", "oracle", "golden")
REFERENCE_HELP = {"tensorflow": "TensorFlow, checked against the float64 oracle (default)",
                  "oracle": "the float64 oracle alone",
                  "golden": "stored TensorFlow results (--golden DIR), no TensorFlow needed"}


class ReferenceSource(Protocol):
    name: str  # one of REFERENCES

    def reference(self, case: Case, inputs: Inputs) -> Reference: ...

    def close(self) -> None: ...

    def __hash__(self) -> int: ...  # by identity: the runner caches references per (case, source)


class OracleReference:
    name = "oracle"

    def reference(self, case: Case, inputs: Inputs) -> Reference:
        return build_reference(case, inputs, use_tensorflow=False)

    def close(self) -> None:
        pass


class TensorFlowReference:
    """TensorFlow in this process (a TensorFlow abort ends the process: the run uses the isolated one)."""

    name = "tensorflow"

    def reference(self, case: Case, inputs: Inputs) -> Reference:
        return build_reference(case, inputs, use_tensorflow=True)

    def close(self) -> None:
        pass


class GoldenReference:
    """Golden entries in `folder`; reading one raises GoldenError when it is missing or malformed (the runner
    records that as an input fault of the case)."""

    name = "golden"

    def __init__(self, folder: str):
        self.folder = folder
        self.store = GoldenStore(folder)

    def reference(self, case: Case, inputs: Inputs) -> Reference:
        return self.store.read(case, inputs)

    def close(self) -> None:
        pass


def open_reference(name: str, golden: str | None = None) -> ReferenceSource:
    """The in-process source for a --reference choice (and --golden DIR)."""
    if name == "golden":
        if golden is None:
            raise ValueError("--reference golden needs --golden DIR")
        return GoldenReference(golden)
    if name == "tensorflow":
        return TensorFlowReference()
    if name == "oracle":
        return OracleReference()
    raise ValueError(f"--reference {name}: must be one of {', '.join(REFERENCES)}")


def add_reference_argument(parser: argparse.ArgumentParser, choices: Sequence[str] = REFERENCES) -> None:
    """`--reference` for a command that supports `choices` (and `--golden DIR` where golden is one)."""
    parser.add_argument("--reference", choices=tuple(choices), default="tensorflow",
                        help="what results are judged against: "
                             + "; ".join(f"{c}: {REFERENCE_HELP[c]}" for c in choices))
    if "golden" in choices:
        parser.add_argument("--golden", metavar="DIR", help="golden references (with --reference golden)")
