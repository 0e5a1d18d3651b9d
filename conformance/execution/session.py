"""Run a set of case files against backends through the pytest plugin: what `run` does, reusable by the
commands built on it (fuzz, selftest). Returns our exit code; results land in `out`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.exitcodes import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_NOTHING_JUDGED, EXIT_USAGE
from conformance.cases.loader import load_cases

# pytest's exit codes -> ours, for a session that ended before the plugin judged anything: a usage error
# (4), an interrupt (2), an internal error (3), no case file (5). A 0 or 1 without our verdict is never
# trusted: the harness did not reach one.
PYTEST_EXIT = {2: EXIT_INTERRUPTED, 3: EXIT_INTERNAL, 4: EXIT_USAGE, 5: EXIT_NOTHING_JUDGED}


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
    max_case_memory: str | None = None
    max_error_ratio: float | None = None
    exitfirst: bool = False
    quiet: bool = False
    extra: Sequence[str] = field(default_factory=tuple)  # further pytest arguments

    def pytest_arguments(self) -> list[str]:
        arguments = [*self.cases, "-p", "no:sepconv_conformance", "-p", "conformance.execution.plugin",
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
                    "--case-timeout": None if self.timeout is None else repr(self.timeout),
                    "--repeat": str(self.repeat) if self.repeat != 1 else None,
                    "--max-case-memory": self.max_case_memory,
                    "--max-error-ratio": None if self.max_error_ratio is None else repr(self.max_error_ratio)}
        for flag, value in optional.items():
            if value is not None:
                arguments += [flag, value]
        if self.workers:
            arguments += ["-n", self.workers, "--dist", "loadgroup"]
        flags = {"--resume": self.resume, "--no-isolate": not self.isolate, "-x": self.exitfirst,
                 "-q": self.quiet, "--no-strict-expectations": not self.strict_expectations}
        arguments += [flag for flag, on in flags.items() if on]
        return [*arguments, *self.extra]


class _ExitCode:
    """Picks up the plugin's verdict (our exit code) when the session ends."""

    def __init__(self) -> None:
        self.code: int | None = None

    def pytest_unconfigure(self, config: Any) -> None:
        from conformance.execution.plugin import EXIT_CODE

        self.code = config.stash.get(EXIT_CODE, None)


def run_suite(options: RunOptions) -> int:
    """Validate the case files first (CaseFileError: the caller reports it), then run pytest with our
    plugin; backends are loaded by the plugin, in child processes."""
    import pytest

    load_cases(options.cases)  # invalid files stop here, with every problem listed
    holder = _ExitCode()
    status = int(pytest.main(options.pytest_arguments(), plugins=[holder]))
    return holder.code if holder.code is not None else PYTEST_EXIT.get(status, EXIT_INTERNAL)
