"""Run a set of case files against backends through the pytest plugin: what `run` does, reusable by the
commands built on it (fuzz, selftest). Returns our exit code; results land in `out`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from conformance.backends import resolve_backend
from conformance.exitcodes import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_NONCONFORMING, EXIT_OK, EXIT_USAGE
from conformance.loader import load_cases

# pytest's exit codes -> ours. 5 (no tests collected) means a selection matched nothing: a usage error,
# never a green gate.
PYTEST_EXIT = {0: EXIT_OK, 1: EXIT_NONCONFORMING, 2: EXIT_INTERRUPTED, 3: EXIT_INTERNAL, 4: EXIT_USAGE,
               5: EXIT_USAGE}


@dataclass(frozen=True)
class RunOptions:
    cases: Sequence[str]
    backends: Sequence[str] = ("numpy",)
    out: str = "reports"
    reference: str = "tensorflow"
    golden: str | None = None
    keyword: str | None = None
    case_ids: Sequence[str] = ()
    workers: str | None = None
    shard: str | None = None
    timeout: float | None = None
    isolate: bool = True
    resume: bool = False
    expectations: Sequence[str] = ()
    strict_expectations: bool = True
    repeat: int = 1
    exitfirst: bool = False
    quiet: bool = False
    extra: Sequence[str] = field(default_factory=tuple)  # further pytest arguments

    def pytest_arguments(self) -> list[str]:
        arguments = [*self.cases, "-p", "no:sepconv_conformance", "-p", "conformance.plugin",
                     "--report-dir", self.out, "--reference", self.reference,
                     "-o", f"cache_dir={Path(self.out) / '.pytest_cache'}",  # so --lf works per report folder
                     "-W", "ignore::pytest.PytestAssertRewriteWarning",
                     "-rN"]  # our summary lists failures with their reproducers; pytest's would repeat them
        for spec in self.backends:
            arguments += ["--backend", spec]
        for case_id in self.case_ids:
            arguments += ["--id", case_id]
        for file in self.expectations:
            arguments += ["--expectations", file]
        optional = {"-k": self.keyword, "--shard": self.shard, "--golden": self.golden,
                    "--case-timeout": None if self.timeout is None else str(self.timeout),
                    "--repeat": str(self.repeat) if self.repeat != 1 else None}
        for flag, value in optional.items():
            if value is not None:
                arguments += [flag, value]
        if self.workers:
            arguments += ["-n", self.workers, "--dist", "loadgroup"]
        flags = {"--resume": self.resume, "--no-isolate": not self.isolate, "-x": self.exitfirst,
                 "-q": self.quiet, "--no-strict-expectations": not self.strict_expectations}
        arguments += [flag for flag, on in flags.items() if on]
        return [*arguments, *self.extra]


def run_suite(options: RunOptions) -> int:
    """Validate the case files and backends first (CaseFileError, BackendError: the caller reports them),
    then run pytest with our plugin."""
    import pytest

    load_cases(options.cases)  # invalid files stop here, with every problem listed
    for spec in options.backends:
        resolve_backend(spec)
    return PYTEST_EXIT.get(int(pytest.main(options.pytest_arguments())), EXIT_INTERNAL)
