"""The verdict on a result set: one rule for `run`, `--resume`, `merge` and `report`.

A gate is green only when it is earned: the result set is complete (the run was neither interrupted nor
stopped short, and holds every result it expected), no result is a fault of the harness or of an input
file, every status is a passing one (an unknown status fails), and at least one case was judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conformance.exitcodes import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_NONCONFORMING,
    EXIT_NOTHING_JUDGED,
    EXIT_OK,
    EXIT_USAGE,
)
from conformance.result import JUDGED_STATUSES, Result, is_failing

# How a run ended, as results.json records it (run.completion).
COMPLETE = "complete"  # every selected result was computed (or resumed)
STOPPED = "stopped"  # stopped on purpose before the end (-x / --maxfail after a failure)
INTERRUPTED = "interrupted"  # Ctrl-C or a signal
INTERNAL_ERROR = "internal_error"  # the harness itself failed (pytest INTERNALERROR, a crashed worker)
COMPLETIONS = (COMPLETE, STOPPED, INTERRUPTED, INTERNAL_ERROR)


@dataclass(frozen=True)
class Verdict:
    exit_code: int
    sentence: str  # the last line of the terminal summary

    @property
    def conforms(self) -> bool:
        return self.exit_code == 0


def judge(results: Sequence[Result], expected: int | None = None, completion: str = COMPLETE) -> Verdict:
    """The exit code and sentence for `results`; `expected`: how many results the run set out to have
    (None: unknown, taken as complete)."""
    count = len(results)
    failing = [r for r in results if is_failing(r.status)]
    harness = sum(r.fault == "harness" for r in results)
    inputs = sum(r.fault == "input" for r in results)
    unknown = sorted({r.status for r in results if r.status not in JUDGED_STATUSES + ("skip",)})
    of = f"{count} of {expected}" if expected is not None else str(count)
    if completion == INTERRUPTED:
        return Verdict(EXIT_INTERRUPTED, f"INTERRUPTED after {of} results: no verdict")
    if completion not in COMPLETIONS or completion == INTERNAL_ERROR:
        return Verdict(EXIT_INTERNAL, f"HARNESS FAULT: the run ended as {completion!r} after {of} results: no verdict")
    if harness:
        return Verdict(EXIT_INTERNAL, f"HARNESS FAULT on {harness} results: no verdict on those "
                                      f"(DOES NOT CONFORM as it stands: {len(failing)} failing results)")
    if inputs:
        return Verdict(EXIT_USAGE, f"UNUSABLE INPUT on {inputs} results (see their messages): no verdict on those")
    if unknown:
        return Verdict(EXIT_NONCONFORMING, f"DOES NOT CONFORM: unknown status(es) {', '.join(unknown)} "
                                           f"({len(failing)} failing results)")
    if failing:
        stopped = " (stopped at the first failure)" if completion == STOPPED else ""
        return Verdict(EXIT_NONCONFORMING, f"DOES NOT CONFORM: {len(failing)} failing results{stopped}")
    if expected is not None and count < expected:
        return Verdict(EXIT_INTERNAL, f"INCOMPLETE: {of} results: the missing ones were never judged")
    if completion == STOPPED:
        return Verdict(EXIT_INTERNAL, f"INCOMPLETE: stopped early after {of} results")
    if not any(r.status in JUDGED_STATUSES for r in results):
        what = "no case selected" if not count else f"all {count} results skipped"
        return Verdict(EXIT_NOTHING_JUDGED, f"NOTHING JUDGED: {what}; that is not a pass")
    return Verdict(EXIT_OK, "CONFORMS")
