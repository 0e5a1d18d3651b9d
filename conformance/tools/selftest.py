"""`sepconv-conformance selftest`: the suite proves itself on its own zoo.

Every mutant (conformance.impls.mutants: a realistic bug) must fail at least one case, and every correct
implementation (the bundled NumPy backend, the mutants' bug-free baseline and conformance.impls.alternatives, which
round differently) must pass every case. Exit 0 only with a mutation score of 100% and no correct
implementation failing; 1 otherwise; 2 for bad usage.

The loop is case-major: a case's inputs and reference (TensorFlow, checked against the oracle) are
computed once (runner.prepare's cache), then every zoo member runs on it, in this process (the zoo is our
own code). Members added with --mutant/--alternative run in a child process each, as `run` runs backends,
so a crash or a hang (--timeout) is that member's result on the case, not the end of the selftest. With
-n N, chunks of cases go to N worker processes. A case whose reference could not be computed (TensorFlow
crashed, no golden entry) judges no one: it is reported as unjudged, never counted as a catch or a false
alarm.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from conformance.cases.case import Case
from conformance.execution.backends import Backend
from conformance.execution.faults import DEFAULT_TIMEOUT_S, seconds_argument
from conformance.exitcodes import EXIT_INTERNAL, EXIT_NONCONFORMING, EXIT_OK, EXIT_USAGE, usage_error
from conformance.judging.references import add_reference_argument
from conformance.result import Result, is_failing

HELP = ("prove the suite: every mutant in the zoo must fail some case and every correct implementation "
        "must pass them all")
QUICK_TAG = "selftest"  # cases tagged so form --quick: a small subset that still catches every mutant
SHOWN_IDS = 3  # catching (or failing) case ids shown per row
REASON_CHARS = 110
MUTANT, CORRECT = "mutant", "correct"


@dataclass(frozen=True)
class Member:
    """One zoo implementation: `role` says whether it must fail some case (mutant) or pass all (correct)."""

    name: str
    spec: str  # backend spec, resolvable in any process
    role: str
    isolated: bool = False  # run in a child process (members from the command line)


@dataclass(frozen=True)
class Outcome:
    """One member on one case, reduced to what the table needs."""

    case: str
    member: str
    status: str  # pass, skip (outside the member's declared support) or a failing status
    message: str
    judged: bool  # False: the case's reference was unavailable, so the result says nothing about the member
    fault: str = ""  # Result.fault: the harness or an input failed on this case (never a verdict)
    dtype: str = ""
    margin: float = 0.0  # the largest error/limit ratio of a passing result (per element, bias, energy, RMS)


# The metrics that are ratios to a limit: a passing result keeps each of them at or below 1.
MARGIN_METRICS = ("max_error_in_limits", "bias_in_limits", "energy_in_limits", "rms_in_limits")


def _margin(result: Result) -> float:
    return max([float(result.metrics.get(name) or 0.0) for name in MARGIN_METRICS])


@dataclass
class Tally:
    member: Member
    seen: int = 0  # cases the member ran on
    judged: int = 0  # of those, the ones that say something about it (not skipped, a reference to compare)
    failures: list[Outcome] = field(default_factory=list)
    margins: dict[str, tuple[float, str]] = field(default_factory=dict)  # dtype -> (worst margin, its case)

    @property
    def ok(self) -> bool:
        """Caught (a mutant) or passed everything (a correct implementation), on at least one judged case."""
        return bool(self.failures) if self.member.role == MUTANT else self.judged > 0 and not self.failures


def zoo_members() -> list[Member]:
    """The bundled zoo: every mutant, and the correct implementations."""
    from conformance.impls import backward_zoo
    from conformance.impls.alternatives import ALTERNATIVES
    from conformance.impls.mutants import MUTANTS

    members = [Member(name, f"conformance.impls.mutants:{name}", MUTANT) for name in MUTANTS]
    members.append(Member("numpy", "numpy", CORRECT))
    members.append(Member("mutants_baseline", "conformance.impls.mutants:correct", CORRECT))
    members += [Member(name, f"conformance.impls.alternatives:{name}", CORRECT) for name in ALTERNATIVES]
    # The backward pass's own (they run on backward cases only).
    for names, role in ((backward_zoo.BUGS, MUTANT), (backward_zoo.ALTERNATIVES, CORRECT)):
        members += [Member(f"backward:{name}", f"conformance.impls.backward_zoo:{name}", role) for name in names]
    return members


def _judged(result: Result) -> bool:
    """Whether a result says something about the member: not when the case had no reference, nor when
    the member declared the case unsupported (skip)."""
    return result.status != "skip" and not result.fault


def _backend(member: Member, timeout: float) -> Backend:
    """A zoo member as a backend: the bundled ones in this process (they are ours, and many: a child each
    would double the selftest's time); members from the command line are loaded like any run's backend
    (conformance.execution.isolation.load_backend), each call in a child process of its own."""
    from conformance.execution.backends import resolve_backend
    from conformance.execution.isolation import load_backend

    backend = load_backend(member.spec, timeout) if member.isolated else resolve_backend(member.spec)
    return dataclasses.replace(backend, name=member.name)


def run_cases(cases: Sequence[Case], members: Sequence[Member], reference: str = "tensorflow",
              golden: str | None = None, progress: bool = False,
              timeout: float = DEFAULT_TIMEOUT_S) -> list[Outcome]:
    """Run every member on every case, case-major, in this process (isolated members in their own)."""
    from conformance.execution import runner
    from conformance.execution.isolation import IsolatedBackend
    from conformance.execution.reference_process import opened_reference

    backends = [(m, _backend(m, timeout)) for m in members]
    outcomes = []
    step = max(1, len(cases) // 10)
    try:
        # TensorFlow aborting on a case must be that case's reference crash, not the end of the selftest.
        with opened_reference(reference, golden) as source:
            for number, case in enumerate(cases, 1):
                for member, backend in backends:
                    result = runner.run_case(case, backend, source)
                    failing = is_failing(result.status)
                    outcomes.append(Outcome(case.id, member.name,
                                            result.status if failing or result.status == "skip" else "pass",
                                            result.message if failing else "", _judged(result), result.fault,
                                            case.dtype, 0.0 if failing else _margin(result)))
                if progress and (number % step == 0 or number == len(cases)):
                    print(f"selftest: {number}/{len(cases)} cases", file=sys.stderr, flush=True)
    finally:
        for _, backend in backends:
            if isinstance(backend.fn, IsolatedBackend):
                backend.fn.close()
    return outcomes


def run_parallel(cases: Sequence[Case], members: Sequence[Member], reference: str, golden: str | None,
                 workers: int, progress: bool, timeout: float = DEFAULT_TIMEOUT_S) -> list[Outcome]:
    """Cases dealt round-robin into chunks (expensive network layers spread out), one process per worker."""
    if workers <= 1 or len(cases) < 2:
        return run_cases(cases, members, reference, golden, progress, timeout)
    chunks = [list(cases[i::workers * 4]) for i in range(min(len(cases), workers * 4))]
    outcomes: list[Outcome] = []
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(run_cases, chunk, members, reference, golden, False, timeout) for chunk in chunks]
        for number, future in enumerate(futures, 1):
            outcomes += future.result()
            if progress:
                print(f"selftest: {number}/{len(chunks)} chunks", file=sys.stderr, flush=True)
    return outcomes


def tally(members: Sequence[Member], outcomes: Sequence[Outcome]) -> list[Tally]:
    tallies = {m.name: Tally(m) for m in members}
    for outcome in outcomes:
        entry = tallies[outcome.member]
        entry.seen += 1
        if outcome.judged:
            entry.judged += 1
            if outcome.status != "pass":
                entry.failures.append(outcome)
            elif outcome.margin > entry.margins.get(outcome.dtype, (-1.0, ""))[0]:
                entry.margins[outcome.dtype] = (outcome.margin, outcome.case)
    return list(tallies.values())


def worst_margins(tallies: Sequence[Tally]) -> dict[str, dict[str, Any]]:
    """Per dtype, the correct implementations' largest error/limit ratio on a passing case: how close the
    tolerance model came to a false alarm (1 would be one)."""
    worst: dict[str, dict[str, Any]] = {}
    for t in tallies:
        if t.member.role != CORRECT:
            continue
        for dtype, (margin, case) in t.margins.items():
            if margin > worst.get(dtype, {"margin": -1.0})["margin"]:
                worst[dtype] = {"margin": margin, "member": t.member.name, "case": case}
    return dict(sorted(worst.items()))


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= REASON_CHARS else text[:REASON_CHARS - 3] + "..."


def render_table(tallies: Sequence[Tally]) -> list[str]:
    """One row per mutant (caught? by how many cases; the first one and why; the next few) and one per
    correct implementation (passed? how many failures; the first and why; the next few)."""
    width = max([len(t.member.name) for t in tallies] + [7])
    indent = " " * (width + 19)
    lines = []
    for role, title, verdict, count in ((MUTANT, "MUTANT", "CAUGHT", "CASES"),
                                        (CORRECT, "CORRECT", "PASSED", "FAILING")):
        rows = [t for t in tallies if t.member.role == role]
        if not rows:
            continue
        lines.append(f"{title:<{width}}  {verdict:<6}  {count:>7}  "
                     + ("FIRST CATCHING CASE: REASON" if role == MUTANT else "FIRST FAILING CASE: REASON"))
        for t in rows:
            # A member that skips most cases (narrow declared support) passes on few: say on how many.
            judged = "" if t.judged == t.seen else f" (judged on {t.judged} of {t.seen} cases)"
            first = (f"{t.failures[0].case}: {t.failures[0].status}: {_short(t.failures[0].message)}"
                     if t.failures else f"-{judged}" if t.judged else "- (no case judged)")
            lines.append(f"{t.member.name:<{width}}  {'yes' if t.ok else 'NO':<6}  {len(t.failures):>7}  {first}")
            if len(t.failures) > 1:
                more = len(t.failures) - SHOWN_IDS
                lines.append(indent + "also " + ", ".join(f.case for f in t.failures[1:SHOWN_IDS])
                             + (f" (+{more} more)" if more > 0 else ""))
        lines.append("")
    return lines


def summary(tallies: Sequence[Tally]) -> dict[str, Any]:
    mutants = [t for t in tallies if t.member.role == MUTANT]
    correct = [t for t in tallies if t.member.role == CORRECT]
    caught = sum(t.ok for t in mutants)
    passed = sum(t.ok for t in correct)
    return {"mutants": len(mutants), "caught": caught, "score": caught / len(mutants) if mutants else None,
            "correct": len(correct), "correct_passed": passed,
            "passed": caught == len(mutants) and passed == len(correct)}


def report_json(tallies: Sequence[Tally], cases: Sequence[Case], unjudged: Sequence[str], reference: str,
                duration: float) -> dict[str, Any]:
    return {"format_version": 1, "reference": reference, "cases": len(cases), "unjudged_cases": list(unjudged),
            "duration_s": duration, "summary": summary(tallies), "worst_margins": worst_margins(tallies),
            "members": [{"name": t.member.name, "spec": t.member.spec, "role": t.member.role,
                         "ok": t.ok, "cases": t.seen, "judged": t.judged, "failing": len(t.failures),
                         "failing_cases": [f.case for f in t.failures],
                         "first_failures": [{"case": f.case, "status": f.status, "message": f.message}
                                            for f in t.failures[:SHOWN_IDS]]} for t in tallies]}


# --- command line -----------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", action="append", metavar="PATH",
                        help="case file or folder (repeatable; default: the bundled bank)")
    parser.add_argument("--quick", action="store_true",
                        help=f"only the cases tagged `{QUICK_TAG}`: a small subset that still catches every "
                             "bundled mutant")
    parser.add_argument("--skip-tag", action="append", default=[], metavar="TAG",
                        help="leave out the cases with this tag (repeatable), e.g. bench (the full-size layers)")
    add_reference_argument(parser)
    parser.add_argument("--mutant", action="append", default=[], metavar="SPEC",
                        help="also run this backend as a mutant: it must fail some case (repeatable)")
    parser.add_argument("--alternative", action="append", default=[], metavar="SPEC",
                        help="also run this backend as a correct implementation: it must pass every case")
    parser.add_argument("--no-zoo", action="store_true",
                        help="run only the members given with --mutant/--alternative")
    parser.add_argument("--json", metavar="FILE", help="also write the table and the catch lists as JSON")
    parser.add_argument("--timeout", type=seconds_argument, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help=f"limit on one call of a --mutant/--alternative member (default {DEFAULT_TIMEOUT_S:g}); "
                             "a hang is that member's `timeout` on the case")
    parser.add_argument("-n", "--workers", type=int, default=1, metavar="N",
                        help="worker processes (default 1)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _members(args: argparse.Namespace) -> list[Member]:
    zoo = [] if args.no_zoo else zoo_members()
    added = ([Member(spec, spec, MUTANT, isolated=True) for spec in args.mutant]
             + [Member(spec, spec, CORRECT, isolated=True) for spec in args.alternative])
    in_zoo = sorted({m.spec for m in added} & {m.spec for m in zoo})
    if in_zoo:
        raise ValueError(f"--mutant/--alternative: {', '.join(in_zoo)} already in the zoo")
    specs = [m.spec for m in added]
    twice = sorted({s for s in specs if specs.count(s) > 1})
    if twice:
        raise ValueError(f"--mutant/--alternative: {', '.join(twice)} given twice")
    return zoo + added



def execute(args: argparse.Namespace) -> int:
    from conformance.cases.loader import CaseFileError, load_cases
    from conformance.cases.selection import default_bank
    from conformance.execution.backends import BackendError, resolve_backend
    from conformance.judging.reference import reference_unusable

    if reason := reference_unusable(args.reference, args.golden):
        return usage_error("selftest", reason)
    if args.workers < 1:
        return usage_error("selftest", f"-n {args.workers}: must be at least 1")
    if args.timeout <= 0:
        return usage_error("selftest", f"--timeout {args.timeout:g}: must be positive")
    try:
        members = _members(args)
        for member in members:
            resolve_backend(member.spec)
        cases = load_cases(args.cases or [str(default_bank())])
    except (ValueError, BackendError) as error:
        return usage_error("selftest", str(error))
    except CaseFileError as error:
        return usage_error("selftest", f"invalid case file(s):\n{error}")
    if not members:
        return usage_error("selftest", "nothing to run: --no-zoo without --mutant or --alternative")
    if args.quick:
        cases = [c for c in cases if QUICK_TAG in c.tags]
    cases = [c for c in cases if not set(args.skip_tag) & set(c.tags)]
    if not cases:
        why = f" (no case is tagged `{QUICK_TAG}`)" if args.quick else ""
        return usage_error("selftest", f"no case selected{why}")
    golden = args.golden if args.reference == "golden" else None
    start = time.perf_counter()
    outcomes = run_parallel(cases, members, args.reference, golden, args.workers, not args.quiet, args.timeout)
    duration = time.perf_counter() - start
    tallies = tally(members, outcomes)
    unjudged = sorted({o.case for o in outcomes if not o.judged and o.status != "skip"})  # no reference
    verdict = summary(tallies)
    selection = (" (--quick)" if args.quick else "") + "".join(f" (--skip-tag {t})" for t in args.skip_tag)
    print(f"selftest: {len(cases)} cases{selection}, {verdict['mutants']} mutants, "
          f"{verdict['correct']} correct implementations, reference {args.reference}, {duration:.1f} s")
    if unjudged:
        print(f"  {len(unjudged)} cases unjudged (no reference): {', '.join(unjudged[:SHOWN_IDS])}"
              + (", ..." if len(unjudged) > SHOWN_IDS else ""))
    print()
    print("\n".join(render_table(tallies)))
    score = f"{verdict['caught']}/{verdict['mutants']}" + (
        f" = {100 * verdict['score']:.0f}%" if verdict["score"] is not None else "")
    print(f"mutation score: {score}; correct implementations passing: "
          f"{verdict['correct_passed']}/{verdict['correct']}")
    for dtype, worst in worst_margins(tallies).items():
        print(f"  worst margin of a correct implementation, {dtype}: {worst['margin']:.2f} of the limit "
              f"({worst['member']} on {worst['case']})")
    faults = sorted({o.fault for o in outcomes if o.fault})
    for fault in faults:  # the suite cannot vouch for itself while the harness fails under it
        print(f"  {sum(o.fault == fault for o in outcomes)} results with a fault ({fault}), no verdict: "
              + next(o.message for o in outcomes if o.fault == fault)[:REASON_CHARS])
    print("SELFTEST PASSED" if verdict["passed"] and not faults else "SELFTEST FAILED")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report_json(tallies, cases, unjudged, args.reference, duration), indent=1),
                        encoding="utf-8")
    if faults:
        return EXIT_INTERNAL if "harness" in faults else EXIT_USAGE
    return EXIT_OK if verdict["passed"] else EXIT_NONCONFORMING
