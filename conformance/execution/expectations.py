"""Per-backend expectations: cases known to fail (`xfail`) or not to be run (`skip`), each with a reason.

    version: 1
    backend: cupy            # optional: the backend this file is about (used when several are run)
    expectations:
      - cases: "*_bfloat16_nonfinite*"   # glob on case ids; a list of globs is fine too
        tags: [contract, dilation]       # optional: the case has all of these tags
        dtypes: [bfloat16]               # optional: the case has one of these dtypes
        status: xfail                    # or skip
        reason: NaN propagation differs in the bf16 path (ticket 123)

An entry matches a case when every condition it gives holds (at least one is required). The first
matching entry wins. An `xfail` case that fails is recorded as `xfail`; one that passes is `xpass`, which
fails the gate in strict mode (the default: a fixed bug must be taken off the list). An entry that matches
no case of the bank is a warning: it is stale or mistyped.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.cases.case import DTYPES, Case
from conformance.cases.loader import CaseFileError, Problem, read_yaml
from conformance.result import Kind, Result, Status, is_failing

FORMAT_VERSION = 1
OUTCOMES = (Status.XFAIL.value, Status.SKIP.value)  # what an entry may say
ENTRY_KEYS = ("cases", "tags", "dtypes", "status", "reason")


@dataclass(frozen=True)
class Expectation:
    status: str  # xfail or skip
    reason: str
    origin: str  # file:line, for warnings and messages
    case_globs: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ()

    def matches(self, case: Case) -> bool:
        return ((not self.case_globs or any(fnmatch.fnmatchcase(case.id, g) for g in self.case_globs))
                and set(self.tags) <= set(case.tags)
                and (not self.dtypes or case.dtype in self.dtypes))


@dataclass(frozen=True)
class Expectations:
    entries: tuple[Expectation, ...] = ()
    backend: str | None = None  # whom the file is about, when it says
    source: str = ""

    def lookup(self, case: Case) -> Expectation | None:
        return next((e for e in self.entries if e.matches(case)), None)

    def unmatched(self, cases: Iterable[Case]) -> list[Expectation]:
        """Entries that match none of `cases`: stale or mistyped."""
        cases = list(cases)
        return [e for e in self.entries if not any(e.matches(c) for c in cases)]


def _strings(value: Any, field: str, choices: Sequence[str] | None = None) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{field}: expected a string or a non-empty list of strings, got {value!r}")
    if choices is not None and (bad := [v for v in values if v not in choices]):
        raise ValueError(f"{field}: unknown {', '.join(bad)}; choose from {', '.join(choices)}")
    return tuple(values)


def _entry(raw: Any, origin: str) -> Expectation:
    if not isinstance(raw, dict):
        raise ValueError(f"expected a mapping with keys {', '.join(ENTRY_KEYS)}, got {raw!r}")
    if unknown := sorted(set(raw) - set(ENTRY_KEYS)):
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(ENTRY_KEYS)}")
    if raw.get("status") not in OUTCOMES:
        raise ValueError(f"status: expected one of {', '.join(OUTCOMES)}, got {raw.get('status')!r}")
    reason = raw.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("reason: every entry needs one (why is this case expected to fail?)")
    conditions = {k: raw[k] for k in ("cases", "tags", "dtypes") if k in raw}
    if not conditions:
        raise ValueError("give at least one of cases, tags, dtypes (an entry must not match everything)")
    return Expectation(status=raw["status"], reason=reason.strip(), origin=origin,
                       case_globs=_strings(conditions["cases"], "cases") if "cases" in conditions else (),
                       tags=_strings(conditions["tags"], "tags") if "tags" in conditions else (),
                       dtypes=_strings(conditions["dtypes"], "dtypes", DTYPES) if "dtypes" in conditions else ())


def load_expectations(path: str | Path) -> Expectations:
    """Parse and validate an expectations file; raises CaseFileError listing every problem with its line."""
    path_text = str(path)
    document = read_yaml(path)
    problems: list[Problem] = []
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise CaseFileError([Problem(path_text, 1, "", "expected a mapping with keys version, backend, "
                                                       "expectations")])

    def line_of(key: str) -> int:
        return getattr(document, "lines", {}).get(key, getattr(document, "line", 1))

    if unknown := sorted(set(document) - {"version", "backend", "expectations"}):
        problems += [Problem(path_text, line_of(k), k, "unknown key; known: version, backend, expectations")
                     for k in unknown]
    if document.get("version", FORMAT_VERSION) != FORMAT_VERSION:
        problems.append(Problem(path_text, line_of("version"), "version",
                                f"unsupported version {document['version']!r} (this tool reads {FORMAT_VERSION})"))
    backend = document.get("backend")
    if backend is not None and not isinstance(backend, str):
        problems.append(Problem(path_text, line_of("backend"), "backend", f"expected a backend name, got {backend!r}"))
    raw_entries = document.get("expectations") or []
    if not isinstance(raw_entries, list):
        problems.append(Problem(path_text, line_of("expectations"), "expectations", "expected a list of entries"))
        raw_entries = []
    entries = []
    for number, raw in enumerate(raw_entries, 1):
        line = getattr(raw, "line", line_of("expectations"))
        try:
            entries.append(_entry(raw, f"{path_text}:{line}"))
        except ValueError as error:
            problems.append(Problem(path_text, line, f"expectations[{number}]", str(error)))
    if problems:
        raise CaseFileError(problems)
    return Expectations(tuple(entries), backend, path_text)


def apply_expectation(result: Result, expectation: Expectation | None, strict: bool = True) -> Result:
    """The result as the expectations file sees it: a listed failure is `xfail` (its kind kept: how it
    failed); a listed case that passes is `xpass` (kind xpass, strict) or a `pass` with a note (not strict)."""
    if expectation is None or expectation.status != Status.XFAIL or result.status == Status.SKIP:
        return result
    if result.fault:
        return result  # the harness or an input file failed, not the backend: no expectation covers that
    note = f"expected to fail ({expectation.origin}: {expectation.reason})"
    if is_failing(result.status):
        return dataclasses.replace(result, status=Status.XFAIL, message=f"{note}; {result.status}: {result.message}")
    if strict:
        return dataclasses.replace(result, status=Status.XPASS, kind=Kind.XPASS,
                                   message=f"{note}, but it passes: take it off the list")
    return dataclasses.replace(result, message=f"{note}, but it passes")
