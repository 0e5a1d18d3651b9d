"""Run a set of case files against backends through the pytest plugin: what `run` does, reusable by the
commands built on it (fuzz, selftest). Returns our exit code; results land in `out`."""

from __future__ import annotations

from typing import Any

from conformance.cases.loader import load_cases
from conformance.execution.config import RunConfig
from conformance.exitcodes import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_NOTHING_JUDGED, EXIT_USAGE

# pytest's exit codes -> ours, for a session that ended before the plugin judged anything: a usage error
# (4), an interrupt (2), an internal error (3), no case file (5). A 0 or 1 without our verdict is never
# trusted: the harness did not reach one.
PYTEST_EXIT = {2: EXIT_INTERRUPTED, 3: EXIT_INTERNAL, 4: EXIT_USAGE, 5: EXIT_NOTHING_JUDGED}


class _ExitCode:
    """Picks up the plugin's verdict (our exit code) when the session ends."""

    def __init__(self) -> None:
        self.code: int | None = None

    def pytest_unconfigure(self, config: Any) -> None:
        from conformance.execution.plugin import EXIT_CODE

        self.code = config.stash.get(EXIT_CODE, None)


PLUGIN = "conformance.execution.plugin"


def run_suite(config: RunConfig) -> int:
    """Validate the case files first (CaseFileError: the caller reports it), then run pytest with our
    plugin; backends are loaded by the plugin, in child processes."""
    import pytest

    load_cases(config.cases)  # invalid files stop here, with every problem listed
    holder = _ExitCode()
    status = int(pytest.main(config.pytest_arguments(PLUGIN), plugins=[holder]))
    return holder.code if holder.code is not None else PYTEST_EXIT.get(status, EXIT_INTERNAL)
