"""`sepconv-conformance shrink`: the smallest case that still fails the same way.

"The same way" is a failure signature: the status, the result's kind (conformance.result.Kind: shape,
dtype, non-finite mismatch, an element over its limit or not bitwise exact, bias, energy, RMS, raised on
valid input, returned no array, accepted forbidden input, wrong error message, crash, timeout, ...) and its
failure group's pattern (conformance.reporting.diagnosis: "shifted by (1, 1)", "constant channels", "the
first rows", ...), never the message text, which may be reworded. The pattern keeps the search on one bug:
a backend with two bugs does not drift from the one being shrunk to the other. The search is greedy: for each
dimension in turn (batch, height, width, channels, multiplier, out channels, kernel, strides, rates,
explicit padding, then simpler data: integers, float32, NHWC, seed 0) it tries smaller values, smallest
first, and keeps the first candidate that fails with the same signature; passes repeat until none
shrinks. Candidates the contract forbids (or, for an error case, that stop breaking the same rule) are
skipped without running. The backend runs in a child process (a crash is a result, not the end of the
shrinker) and TensorFlow in another, as in `run`.

Then the boundaries: for each dimension the search made smaller, the values above the smallest case are
tried one by one (at most BOUNDARY_STEPS, past the original value too) until one stops failing that way,
so "out_channels 7 fails, 8 passes" shows a trigger (O % 8 != 0) that the smallest case alone would hide.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from conformance.cases import contract
from conformance.cases.case import Case
from conformance.execution.faults import DEFAULT_TIMEOUT_S, seconds_argument
from conformance.exitcodes import EXIT_INTERNAL, EXIT_OK, usage_error
from conformance.judging.references import ReferenceSource, add_reference_argument
from conformance.reporting.diagnosis import pattern_of
from conformance.reporting.results_file import ResultsFileError, load_results
from conformance.result import Kind, Result, is_failing

HELP = "shrink a failing case to the smallest case that still fails the same way; write it as a case file"
SMALL_VALUES = 4  # every value 1..4 is tried before the halving points: parity matters for padding
BOUNDARY_STEPS = 16  # values tried above the smallest case, per dimension
Signature = tuple[str, str, str]  # (status, kind, pattern)
# Kinds that are no verdict on the backend: nothing to shrink.
UNSHRINKABLE = {Kind.REFERENCE_UNAVAILABLE: "its reference is unavailable",
                Kind.HARNESS: "the harness failed on it"}


class ShrinkError(Exception):
    """Bad input to shrink: a case that cannot be found, rebuilt, or does not fail."""


def signature(result: Result) -> Signature | None:
    """(status, kind, pattern) of a failing result; None when it passes. The message plays no part: two
    failures worded differently are the same failure when these are. A record without a kind (written
    before kinds existed) gets no pattern either: it is never classified by its message."""
    if not is_failing(result.status):
        return None
    return str(result.status), str(result.kind), pattern_of(result.to_dict()) if result.kind else ""


def _smaller(value: int, low: int = 1) -> list[int]:
    """Candidates below `value`, smallest first: low .. low+3, then value/4, value/2, value-2, value-1."""
    points = set(range(low, low + SMALL_VALUES)) | {value // 4, value // 2, value - 2, value - 1}
    return sorted(v for v in points if low <= v < value)


def _with_input(case: Case, axis: int, value: int) -> Case:
    sizes = list(case.input)
    sizes[axis] = value
    return dataclasses.replace(case, input=(sizes[0], sizes[1], sizes[2], sizes[3]))


def _pair(values: tuple[int, ...], axis: int, value: int) -> tuple[int, int]:
    pair = [values[0], values[1]]
    pair[axis] = value
    return pair[0], pair[1]


def _candidates(case: Case) -> Iterator[tuple[str, Case]]:
    """(what changed, candidate) pairs, one dimension after the other, smaller values first."""
    for axis, name in enumerate(("batch", "height", "width", "channels")):
        for value in _smaller(case.input[axis]):
            yield f"{name} {value}", _with_input(case, axis, value)
    for value in _smaller(case.channel_multiplier):
        yield f"multiplier {value}", dataclasses.replace(case, channel_multiplier=value)
    for value in _smaller(case.out_channels):
        yield f"out_channels {value}", dataclasses.replace(case, out_channels=value)
    for axis, name in enumerate(("kernel height", "kernel width")):
        for value in _smaller(case.kernel[axis]):
            yield f"{name} {value}", dataclasses.replace(case, kernel=_pair(case.kernel, axis, value))
    if len(case.strides) == 2:
        for axis in (0, 1):
            for value in _smaller(case.strides[axis]):
                yield f"stride {value}", dataclasses.replace(case, strides=_pair(case.strides, axis, value))
    for axis in (0, 1):
        for value in _smaller(case.rates[axis]):
            yield f"rate {value}", dataclasses.replace(case, rates=_pair(case.rates, axis, value))
    if not isinstance(case.padding, str):
        flat = [p for pair in case.padding for p in pair]
        for index, amount in enumerate(flat):
            for value in _smaller(amount, low=0) if amount > 0 else ():
                changed = flat[:index] + [value] + flat[index + 1:]
                pairs = tuple((changed[i], changed[i + 1]) for i in range(0, len(changed), 2))  # 2 or 4 pairs
                yield f"padding {changed}", dataclasses.replace(case, padding=pairs)
    simpler: tuple[tuple[str, object], ...] = (("data", "integers"), ("dtype", "float32"), ("data_format", "NHWC"),
                                               ("seed", 0))
    for field, simple in simpler:
        if getattr(case, field) != simple:
            yield f"{field} {simple}", dataclasses.replace(case, **{field: simple})  # type: ignore[arg-type]


def _admissible(candidate: Case, broken_fields: frozenset[str]) -> bool:
    """A valid case stays valid (with an exact integer range for integers, and data the backward pass takes
    for a backward case); an error case keeps breaking the same rules and no other."""
    from conformance.cases.data import (
        integer_range,  # NumPy: imported when shrinking, not with the CLI
    )
    from conformance.cases.loader import BACKWARD_DATA

    fields = frozenset(field for field, _ in contract.violations(candidate))
    if fields != broken_fields:
        return False
    if candidate.mode == "backward" and candidate.data not in BACKWARD_DATA:
        return False
    return candidate.expect_error or candidate.data != "integers" or integer_range(candidate) >= 1


# The dimensions whose boundary is looked for: name, value, and the case with another value.
DIMENSIONS: tuple[tuple[str, Callable[[Case], int], Callable[[Case, int], Case]], ...] = (
    ("batch", lambda c: c.input[0], lambda c, v: _with_input(c, 0, v)),
    ("height", lambda c: c.input[1], lambda c, v: _with_input(c, 1, v)),
    ("width", lambda c: c.input[2], lambda c, v: _with_input(c, 2, v)),
    ("channels", lambda c: c.input[3], lambda c, v: _with_input(c, 3, v)),
    ("multiplier", lambda c: c.channel_multiplier, lambda c, v: dataclasses.replace(c, channel_multiplier=v)),
    ("out_channels", lambda c: c.out_channels, lambda c, v: dataclasses.replace(c, out_channels=v)),
    ("kernel height", lambda c: c.kernel[0], lambda c, v: dataclasses.replace(c, kernel=_pair(c.kernel, 0, v))),
    ("kernel width", lambda c: c.kernel[1], lambda c, v: dataclasses.replace(c, kernel=_pair(c.kernel, 1, v))),
    ("rate height", lambda c: c.rates[0], lambda c, v: dataclasses.replace(c, rates=_pair(c.rates, 0, v))),
    ("rate width", lambda c: c.rates[1], lambda c, v: dataclasses.replace(c, rates=_pair(c.rates, 1, v))),
)


@dataclasses.dataclass
class Outcome:
    case: Case  # the smallest failing case found
    signature: Signature
    message: str
    tried: int  # candidates run
    accepted: int  # candidates that became the new smallest
    skipped: int  # candidates not run: the contract forbids them
    boundaries: list[str] = dataclasses.field(default_factory=list)  # "out_channels 7 fails, 8 passes"


Judge = Callable[[Case], Result]


def shrink(original: Case, judge: Judge, max_candidates: int = 1000,
           progress: Callable[[str], None] = lambda line: None) -> Outcome:
    """Greedy search from `original` (which must fail); `judge(case)` returns its Result."""
    first = judge(original)
    target = signature(first)
    if target is None:
        raise ShrinkError(f"{original.id} passes on this backend: nothing to shrink")
    if target[1] in UNSHRINKABLE:
        raise ShrinkError(f"{original.id}: {UNSHRINKABLE[Kind(target[1])]} ({first.message}); nothing to shrink")
    broken = frozenset(field for field, _ in contract.violations(original))
    current, message = original, first.message
    seen: set[str] = {original.id}  # candidates already run (a deterministic backend gives the same answer)
    tried = accepted = skipped = 0
    improved = True
    while improved and tried < max_candidates:
        improved = False
        for change, candidate in _candidates(current):
            if tried >= max_candidates:
                break
            if candidate.id in seen:
                continue
            if not _admissible(candidate, broken):
                skipped += 1
                continue
            seen.add(candidate.id)
            tried += 1
            result = judge(candidate)
            if signature(result) == target:
                current, message, accepted, improved = candidate, result.message, accepted + 1, True
                progress(f"shrink: {change}: still fails ({_sizes(current)})")
                break  # restart from the first dimension of the smaller case
    outcome = Outcome(current, target, message, tried, accepted, skipped)
    _find_boundaries(outcome, original, judge, broken, max_candidates)
    return outcome


def _find_boundaries(outcome: Outcome, original: Case, judge: Judge, broken: frozenset[str],
                     max_candidates: int) -> None:
    """For each dimension shrunk, the first value above the smallest case that no longer fails the same
    way (module docstring); each candidate run counts in `outcome.tried`."""
    for name, value, changed in DIMENSIONS:
        if value(outcome.case) == value(original):
            continue  # not shrunk: the failure did not move along this dimension
        for size in range(value(outcome.case) + 1, value(outcome.case) + BOUNDARY_STEPS + 1):
            candidate = changed(outcome.case, size)
            if outcome.tried >= max_candidates or not _admissible(candidate, broken):
                break
            outcome.tried += 1
            found = signature(judge(candidate))
            if found != outcome.signature:
                what = "passes" if found is None else f"fails differently ({found[1]}: {found[2]})"
                outcome.boundaries.append(f"{name} {size - 1} fails, {size} {what}")
                break


def _described(found: Signature) -> str:
    return f"{found[0]} ({found[1]}: {found[2]})" if found[2] else f"{found[0]} ({found[1]})"


def _sizes(case: Case) -> str:
    n, h, w, c = case.input
    padding = case.padding if isinstance(case.padding, str) else [list(p) for p in case.padding]
    return (f"input {n}x{h}x{w}x{c}, kernel {case.kernel[0]}x{case.kernel[1]}, M {case.channel_multiplier}, "
            f"O {case.out_channels}, strides {list(case.strides)}, rates {list(case.rates)}, padding {padding}, "
            f"{case.data_format} {case.dtype} {case.data}{_applied(case)}")


def _applied(case: Case) -> str:
    """The padding TensorFlow applies and the output's size (valid cases)."""
    if case.expect_error:
        return ""
    g = contract.geometry(case)
    return (f"; TensorFlow pads top {g.pad_top}, bottom {g.pad_bottom}, left {g.pad_left}, right {g.pad_right}; "
            f"output {case.input[0]}x{g.out_h}x{g.out_w}x{case.out_channels}")


def _elements(case: Case) -> int:
    n, h, w, c = case.input
    return n * h * w * c


# --- command line -----------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--cases", metavar="FILE", help="case file (or folder) holding the failing case")
    source.add_argument("--results", metavar="PATH",
                        help="a results.json (or the folder holding it) of `run` or `fuzz` with the failure")
    parser.add_argument("--id", required=True, metavar="CASE_ID", help="the failing case's id")
    parser.add_argument("--backend", metavar="SPEC",
                        help="the failing backend (with --results: default, the one that failed the case)")
    parser.add_argument("--out", default="shrunk.yaml", metavar="FILE",
                        help="where the smallest case is written (default shrunk.yaml)")
    add_reference_argument(parser, ("tensorflow", "oracle"))
    parser.add_argument("--timeout", type=seconds_argument, metavar="SECONDS",
                        help=f"limit on one backend call (default {DEFAULT_TIMEOUT_S:g}); a hang is the `timeout` "
                             "signature")
    parser.add_argument("--no-isolate", action="store_true", help="call the backend in this process")
    parser.add_argument("--max-candidates", type=int, default=1000, metavar="N",
                        help="stop after running N candidates (default 1000)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _from_results(path: Path, case_id: str, backend: str | None) -> tuple[Case, str]:
    from conformance.cases.case_yaml import ParameterError, case_from_parameters

    path = path / "results.json" if path.is_dir() else path
    try:
        records = load_results(path)["results"]
    except ResultsFileError as error:
        raise ShrinkError(f"--results: {error}") from None
    mine = [r for r in records if r["case"] == case_id]
    if not mine:
        raise ShrinkError(f"--results {path}: no result for case {case_id}")
    if backend is None:
        failing = sorted({r["backend"] for r in mine if is_failing(r["status"])})
        if len(failing) != 1:
            raise ShrinkError(f"--results {path}: case {case_id} failed on {len(failing)} backends "
                              f"({', '.join(failing) or 'none'}); say which with --backend")
        backend = failing[0]
    try:
        case = case_from_parameters(mine[0].get("parameters") or {})
    except ParameterError as error:
        raise ShrinkError(f"--results {path}: case {case_id}: {error}") from None
    if case.id != case_id:
        raise ShrinkError(f"--results {path}: the parameters of {case_id} make the id {case.id}")
    return case, backend


def _from_cases(path: str, case_id: str) -> Case:
    from conformance.cases.loader import load_cases

    found = [c for c in load_cases([path]) if c.id == case_id]
    if not found:
        raise ShrinkError(f"--cases {path}: no case with id {case_id} (see `sepconv-conformance list`)")
    return found[0]


def _judge(spec: str, source: ReferenceSource, timeout: float, isolate: bool) -> tuple[Judge, Callable[[], None]]:
    """How to judge a candidate, and how to stop the backend's child process afterwards."""
    from conformance.execution.isolation import IsolatedBackend, load_backend
    from conformance.execution.runner import run_case

    backend = load_backend(spec, timeout, isolate)
    close = backend.fn.close if isinstance(backend.fn, IsolatedBackend) else (lambda: None)
    return (lambda case: run_case(case, backend, source)), close


def _write(outcome: Outcome, original: Case, spec: str, out: Path, elapsed: float) -> Case:
    from conformance.cases.case_yaml import write_case_file
    from conformance.cases.loader import load_file

    case = outcome.case
    # The source's tags (bench, selftest, network...) describe the source, not this small case.
    case = dataclasses.replace(case, tags=("shrunk",), description=f"shrunk from {original.id} ({_sizes(original)})")
    reproducer = f"sepconv-conformance run --cases {out} --backend {spec} --id {case.id}"
    write_case_file(out, [case], [
        f"Shrunk by sepconv-conformance shrink: {outcome.tried} candidates run in {elapsed:.1f} s.",
        f"Backend: {spec}; failure: {_described(outcome.signature)}: {outcome.message}",
        *(f"Boundary: {b}" for b in outcome.boundaries),
        f"Before: {_sizes(original)} ({_elements(original)} input elements)",
        f"After:  {_sizes(case)} ({_elements(case)} input elements)",
        f"Reproduce: {reproducer}"])
    written = load_file(out)  # what we wrote must load, and be the same case
    assert [c.id for c in written] == [case.id], (written, case.id)
    return written[0]


def _renamed(original: Case, judge: Judge) -> Case:
    """The case to shrink under its new name (`shrunk`, so it cannot collide with its source in a bank).
    The data depend on the id, so the renamed case is kept only if it fails like the original."""
    renamed = dataclasses.replace(original, name=f"{original.name}_shrunk" if original.name else "shrunk")
    target = signature(judge(original))
    if target is None:
        raise ShrinkError(f"{original.id} passes on this backend: nothing to shrink")
    return renamed if signature(judge(renamed)) == target else original


def execute(args: argparse.Namespace) -> int:
    from conformance.cases.loader import CaseFileError
    from conformance.execution.backends import BackendError
    from conformance.execution.reference_process import opened_reference
    from conformance.judging.reference import reference_unusable

    if reason := reference_unusable(args.reference):
        return usage_error("shrink", reason)
    if args.max_candidates < 1 or (args.timeout is not None and args.timeout <= 0):
        return usage_error("shrink", "--max-candidates and --timeout must be positive")
    if args.no_isolate and args.timeout is not None:
        return usage_error("shrink", "--timeout needs an isolated backend (drop --no-isolate)")
    timeout = DEFAULT_TIMEOUT_S if args.timeout is None else args.timeout
    try:
        if args.results:
            original, spec = _from_results(Path(args.results), args.id, args.backend)
        else:
            if not args.backend:
                return usage_error("shrink", "--backend SPEC is required with --cases")
            original, spec = _from_cases(args.cases, args.id), args.backend
    except ShrinkError as error:
        return usage_error("shrink", str(error))
    except CaseFileError as error:
        return usage_error("shrink", f"invalid case file(s):\n{error}")
    start = time.perf_counter()
    with opened_reference(args.reference) as source:
        try:
            judge, close_backend = _judge(spec, source, timeout, not args.no_isolate)
        except BackendError as error:
            return usage_error("shrink", str(error))
        try:
            print(f"shrink: {original.id} on {spec}", flush=True)
            log = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
            outcome = shrink(_renamed(original, judge), judge, args.max_candidates, log)
        except ShrinkError as error:
            return usage_error("shrink", str(error))
        finally:
            close_backend()
    elapsed = time.perf_counter() - start
    try:
        written = _write(outcome, original, spec, Path(args.out), elapsed)
    except (OSError, CaseFileError, AssertionError) as error:
        return usage_error("shrink", f"cannot write {args.out}: {error}", EXIT_INTERNAL)
    print(f"shrink: {_described(outcome.signature)}: {outcome.message}")
    print(f"  before: {_sizes(original)}  [{_elements(original)} input elements]")
    print(f"  after:  {_sizes(outcome.case)}  [{_elements(outcome.case)} input elements]")
    print(f"  boundaries: {'; '.join(outcome.boundaries) or 'none found within ' + str(BOUNDARY_STEPS) + ' steps'}")
    print(f"  {outcome.tried} candidates run ({outcome.accepted} smaller, {outcome.skipped} skipped as "
          f"forbidden) in {elapsed:.1f} s")
    print(f"wrote {args.out}; reproduce: sepconv-conformance run --cases {args.out} --backend {spec} "
          f"--id {written.id}")
    return EXIT_OK
