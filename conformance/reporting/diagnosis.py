"""Failure groups that explain themselves: which bugs a red run holds, and what triggers each.

Every failing result gets a *pattern*: its relation to the reference where one fits every element
(conformance.judging.detectors: "shifted by (1, 1)", "constant channels", ...), else where its error is,
coarsely (some channels, a border, some rows or columns, some images, everywhere, statistics only,
non-finite values), or, for a failure without values,
its kind (crash, wrong shape, raised on valid input, ...). One backend's failures with one status and one
pattern form a group, so the variants of one bug (the last channel at O=7 and at O=13, with or without a
few rows under the limit) land in one group instead of one per row and column combination.

For each group, *contrasts* name the case parameters that separate its members from the same backend's
passing cases: the feature values most over-represented among the members, each with its share there and
among the passing cases ("100% stride 2x2 (12% of passing)"). A trigger shows as a value every member has
and few passing cases have. The features are the axes hardware bugs live on (conformance.reporting.features).

Each group carries one reproducer (its smallest member's, the quickest to debug) and one `shrink` line.
Works on results.json records (plain dicts), so `run`, `report` and `merge` all get the same groups."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from conformance.reporting.features import FEATURES
from conformance.result import Kind, is_failing

# A contrast is worth naming when most members have the value and clearly fewer passing cases do.
MIN_MEMBER_SHARE = 0.5
MIN_LEAD = 0.3  # member share minus passing share
MAX_CONTRASTS = 3

PATTERN_WORDS: dict[str, str] = {
    Kind.NOT_ARRAY: "returned no array", Kind.SHAPE: "wrong output shape", Kind.DTYPE: "wrong output dtype",
    Kind.NONFINITE: "NaN/Inf where the reference has none (or the reverse)",
    Kind.ERROR_RATIO: "error over --max-error-ratio times TensorFlow's",
    Kind.ACCEPTED_FORBIDDEN: "accepted input the contract forbids",
    Kind.WRONG_ERROR_MESSAGE: "rejected with a message that does not match the case's pattern",
    Kind.REJECTED_VALID: "raised on valid input", Kind.CRASH: "the backend's process died",
    Kind.TIMEOUT: "no answer in time", Kind.ABORTED: "gave up (MemoryError, SystemExit, ...)",
    Kind.COMMAND_FAILED: "the command failed", Kind.NONDETERMINISTIC: "repeats differ bitwise",
    Kind.XPASS: "listed as expected to fail, but passes", Kind.REFERENCE_UNAVAILABLE: "no reference to judge by",
    Kind.HARNESS: "a fault of the harness (not a verdict on the backend)",
    Kind.BIAS: "statistics only: a systematic bias", Kind.ENERGY: "statistics only: too much error energy",
    Kind.RMS: "statistics only: too much error energy (root mean square)",
    Kind.ELEMENT: "elements over their limit",  # where no map says where (a filter gradient)
}


@dataclass(frozen=True)
class Contrast:
    feature: str
    value: str
    members: float  # share of the group's members with this value
    others: float  # share of the cases contrasted with (the backend's passing ones, or its other failures)
    against: str = "passing"  # what the cases contrasted with are

    def __str__(self) -> str:
        return f"{self.members:.0%} {self.feature} {self.value} ({self.others:.0%} of {self.against})"


@dataclass(frozen=True)
class FailureGroup:
    backend: str
    status: str
    pattern: str
    cases: tuple[str, ...]  # the members' case ids, smallest case first
    example: str  # the smallest member's relation to the reference, or exactly where its error is, or ""
    contrasts: tuple[Contrast, ...]
    reproducer: str  # the smallest member's
    shrink: str

    @property
    def count(self) -> int:
        return len(self.cases)

    contrasted: str = "passing"  # what the contrasts are against: "passing", "other failures" or "" (nothing)

    @property
    def trigger(self) -> str:
        if self.contrasts:
            return "; ".join(map(str, self.contrasts))
        if not self.contrasted:
            return "every case of this backend fails this way: nothing to contrast with"
        return f"no parameter separates them from the {self.contrasted} cases"

    def headline(self) -> str:
        """One line: how many, what, where, and what triggers it."""
        return f"[{self.backend}] {self.count} {self.status}: {self.pattern}; {self.trigger}"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "status": self.status, "pattern": self.pattern, "count": self.count,
                "cases": list(self.cases), "example": self.example, "contrasts": [str(c) for c in self.contrasts],
                "trigger": self.trigger, "reproducer": self.reproducer, "shrink": self.shrink}


def _axis_words(axis: str, where: dict[str, Any]) -> str:
    names = {"N": "images of the batch", "H": "rows", "W": "columns", "C": "channels"}
    size, ranges = where["of"], where["ranges"]
    last, first = ranges[-1][1] == size - 1, ranges[0][0] == 0
    edge = "the last" if last and not first else "the first" if first and not last else "the first and last" \
        if first and last and len(ranges) > 1 else "some"
    return f"{edge} {names.get(axis, axis)}"


def pattern_of(record: dict[str, Any]) -> str:
    """What a failing result's error is (its relation to the reference) or where it is, coarsely enough that
    one bug's variants share the words; a backward case's names the gradient that is off first."""
    gradient = (record.get("details") or {}).get("gradient")
    return f"{gradient}: {_pattern(record)}" if isinstance(gradient, str) else _pattern(record)


def _pattern(record: dict[str, Any]) -> str:
    kind = record.get("kind") or ""
    details = record.get("details") or {}
    if kind == Kind.NONFINITE:
        return PATTERN_WORDS[kind]
    if details.get("kind") == "statistics":  # every element within its limit, a tensor-level check failed
        return PATTERN_WORDS[kind] if kind in (Kind.BIAS, Kind.ENERGY, Kind.RMS) else \
            "statistics only: a tensor-level check failed (bias or error energy)"  # an old record: not guessed
    if "pattern" not in details:
        if kind:
            return PATTERN_WORDS.get(kind, kind)  # a kind this version does not know: as it is
        return (record.get("message") or "").split(":")[0][:80] or "no message"  # a record older than `kind`
    if "relation" in details:  # a relation to the reference names the bug better than where it is
        return str(details["relation"]["what"])
    pattern = details["pattern"]
    partial = {axis: where for axis, where in pattern.items() if 0 < where["count"] < where["of"]}
    if details.get("border") and all(pattern[a]["count"] == pattern[a]["of"] for a in "HW"):
        return "a border around rows and columns"
    if "C" in partial:  # a channel bug is a channel bug whatever a few rows under their limit say
        return _axis_words("C", partial["C"])
    spatial = [_axis_words(a, partial[a]) for a in "HW" if a in partial]
    if spatial:
        return " and ".join(spatial)
    if "N" in partial:
        return _axis_words("N", partial["N"])
    return "everywhere (all images, rows, columns and channels)"


def location(pattern: dict[str, Any], border: int | None = None) -> str:
    """Exactly where one failure's over-limit elements are, in words: 'channels last only', 'rows first
    only; columns 0..2 (of 9)', 'only a border 1 wide around rows and columns'."""
    names = {"N": "batch", "H": "rows", "W": "columns", "C": "channels"}
    parts = []
    spatial_everywhere = all(pattern[a]["count"] == pattern[a]["of"] for a in "HW")
    if border and spatial_everywhere:
        parts.append(f"only a border {border} wide around rows and columns")
    for axis, where in pattern.items():
        count, size, ranges = where["count"], where["of"], where["ranges"]
        if count in (0, size):
            continue
        if ranges == [[size - 1, size - 1]]:
            text = "last only"
        elif ranges == [[0, 0]]:
            text = "first only"
        elif ranges == [[0, 0], [size - 1, size - 1]]:
            text = "first and last only"
        elif len(ranges) == 1 and ranges[0][1] == size - 1:
            text = f">= {ranges[0][0]} (of {size})"
        elif len(ranges) == 1:
            text = f"{ranges[0][0]}..{ranges[0][1]} (of {size})"
        else:
            text = f"{count} of {size}, scattered"
        parts.append(f"{names.get(axis, axis)} {text}")
    return "; ".join(parts) or "everywhere (all batches, rows, columns and channels)"


def _expects_error(record: dict[str, Any]) -> bool:
    return bool((record.get("parameters") or {}).get("expect_error"))


def _size(record: dict[str, Any]) -> int:
    """How big a case is, to pick a group's smallest member: N*H*W times its widest channel count."""
    parameters = record.get("parameters") or {}
    try:
        n, h, w, c = parameters.get("input") or (0, 0, 0, 0)
        widest = max(c * (parameters.get("channel_multiplier") or 1), parameters.get("out_channels") or 1)
        return int(n * h * w * widest)
    except (TypeError, ValueError):  # a hand-edited file: any member may represent the group
        return 0


def _shares(records: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    counts: Counter[tuple[str, str]] = Counter()
    for record in records:
        parameters = record.get("parameters") or {}
        for feature, read in FEATURES.items():
            value = read(parameters)
            if value is not None:
                counts[(feature, value)] += 1
    return {key: n / len(records) for key, n in counts.items()} if records else {}


def contrasts(members: list[dict[str, Any]], others: list[dict[str, Any]],
              against: str = "passing") -> tuple[Contrast, ...]:
    """The feature values that most separate `members` from `others` (strongest first); none without others."""
    if not others:
        return ()
    inside, outside = _shares(members), _shares(others)
    found = []
    for (feature, value), share in inside.items():
        lead = share - outside.get((feature, value), 0.0)
        if share >= MIN_MEMBER_SHARE and lead >= MIN_LEAD:
            found.append((lead, share, Contrast(feature, value, share, outside.get((feature, value), 0.0), against)))
    found.sort(key=lambda item: (-item[0], -item[1], item[2].feature))
    chosen: list[Contrast] = []
    for _, _, contrast in found:  # one value per feature: "SAME" and "not VALID" say the same thing
        if all(c.feature != contrast.feature for c in chosen):
            chosen.append(contrast)
    return tuple(chosen[:MAX_CONTRASTS])


def _alike(records: list[dict[str, Any]], expects: set[bool]) -> list[dict[str, Any]]:
    """The records that expect what a group's members expect (an error, or a result)."""
    return [r for r in records if len(expects) > 1 or _expects_error(r) in expects]


def failure_groups(records: list[dict[str, Any]], results_path: str = "results.json") -> list[FailureGroup]:
    """Every failing result in a group (largest first); none is left out."""
    members: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    passing: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if is_failing(record["status"]):
            members[(record["backend"], record["status"], pattern_of(record))].append(record)
        elif record["status"] == "pass":
            passing[record["backend"]].append(record)
    groups = []
    for (backend, status, pattern), group in members.items():
        group.sort(key=lambda r: (_size(r), r["case"]))
        smallest = group[0]
        details = smallest.get("details") or {}
        example = (details["relation"]["sentence"] if "relation" in details
                   else location(details["pattern"], details.get("border")) if "pattern" in details else "")
        # Against passing cases that expect what the members expect (a wrong value is never an error case's);
        # where none passes, against the backend's other failures: what sets this way of failing apart.
        expects = {_expects_error(r) for r in group}
        others, against = _alike(passing[backend], expects), "passing"
        if not others:
            others, against = _alike([r for key, other in members.items()
                                      if key[0] == backend and key != (backend, status, pattern) for r in other],
                                     expects), "other failures"
        groups.append(FailureGroup(
            backend, status, pattern, tuple(r["case"] for r in group), example, contrasts(group, others, against),
            smallest.get("reproducer") or "",
            f"sepconv-conformance shrink --results {results_path} --id {smallest['case']} --backend {backend}"
            + (" --reference oracle" if smallest.get("reference") == "oracle" else ""),
            against if others else ""))
    groups.sort(key=lambda g: (-g.count, g.backend, g.status, g.pattern))
    return groups
