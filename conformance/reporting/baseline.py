"""What changed between a baseline run and this one: new failures, fixes, failures still there, and passing
results that moved closer to their limits, result by result.

Results are matched by case id. A backend is compared with the baseline's backend of the same spec, or,
when each run has one backend left over, with that one: two builds of one backend usually live at
different paths (`build-a/backend.py:conv`, `build-b/backend.py:conv`), and matching on the spec would find
nothing in common. Both builds' versions are kept for the page, the terminal and the Markdown summary."""

from __future__ import annotations

import math
from typing import Any

from conformance.result import is_failing

CLOSER_FACTOR = 1.25  # a passing case "moved closer" when its margin grew by 25% ...
CLOSER_FLOOR = 0.001  # ... and by at least 0.1% of its limit (below that: noise of any rounding change)


def metric(x: Any) -> float:
    """A metric as a float ("inf"/"nan" strings included); NaN when absent."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def margin(record: dict[str, Any]) -> float:
    """How close a result is to failing: the largest of its element, bias and energy ratios to their limits."""
    metrics = record.get("metrics") or {}
    values = [metric(metrics.get(k)) for k in ("max_error_in_limits", "bias_in_limits", "energy_in_limits")]
    values = [v for v in values if not math.isnan(v)]
    return max(values) if values else math.nan


def _backends(records: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["backend"] for r in records))


def backend_pairs(now: list[str], before: list[str]) -> dict[str, str]:
    """Which baseline backend each of this run's backends is compared with (module docstring)."""
    pairs = {b: b for b in now if b in before}
    left_now = [b for b in now if b not in pairs]
    left_before = [b for b in before if b not in pairs.values()]
    if len(left_now) == 1 and len(left_before) == 1:
        pairs[left_now[0]] = left_before[0]
    return pairs


def baseline_diff(records: list[dict[str, Any]], baseline: dict[str, Any],
                  versions_now: dict[str, Any] | None = None) -> dict[str, Any]:
    """Per result of this run (`records`, which get a `change` key), what the baseline's matching result
    says: lists of newly failing, fixed and closer-to-the-limit entries, counts of the rest, and which
    backend was compared with which, with both versions. `versions_now`: this run's backend versions."""
    pairs = backend_pairs(_backends(records), _backends(baseline["results"]))
    old = {(r["case"], r["backend"]): r for r in baseline["results"]}
    matched = set()
    newly_failing, fixed, closer = [], [], []
    still_failing = 0
    for index, record in enumerate(records):
        key = (record["case"], pairs.get(record["backend"], ""))
        before = old.get(key)
        if before is None:
            record["change"] = "added"
            continue
        matched.add(key)
        entry = {"index": index, "case": record["case"], "backend": record["backend"], "before": before["status"],
                 "after": record["status"], "margin_before": margin(before), "margin_after": margin(record)}
        if is_failing(record["status"]) and not is_failing(before["status"]):
            record["change"] = "newly failing"
            newly_failing.append(entry)
        elif is_failing(before["status"]) and record["status"] in ("pass", "xfail"):
            record["change"] = "fixed"
            fixed.append(entry)
        elif is_failing(before["status"]) and is_failing(record["status"]):
            still_failing += 1
        elif record["status"] == before["status"] == "pass":
            a, b = entry["margin_before"], entry["margin_after"]
            if not (math.isnan(a) or math.isnan(b)) and b >= a * CLOSER_FACTOR and b - a >= CLOSER_FLOOR:
                record["change"] = "closer to limit"
                closer.append(entry)
    closer.sort(key=lambda e: -e["margin_after"])
    run = baseline.get("run") or {}
    versions_before = run.get("backend_versions") or {}
    return {"newly_failing": newly_failing, "fixed": fixed, "closer": closer, "still_failing": still_failing,
            "added": sum(r.get("change") == "added" for r in records), "removed": len(set(old) - matched),
            "pairs": [{"now": now, "before": before, "version_now": (versions_now or {}).get(now),
                       "version_before": versions_before.get(before)} for now, before in pairs.items()],
            "run": run, "summary": baseline.get("summary") or {}}


def diff_line(diff: dict[str, Any]) -> str:
    """One line for a terminal: the counts, then which build was compared with which."""
    builds = "; ".join(f"{p['now']} ({p['version_now'] or 'no version'}) against {p['before']} "
                       f"({p['version_before'] or 'no version'})" for p in diff["pairs"]) or "no backend in common"
    return (f"against the baseline: {len(diff['newly_failing'])} new / {len(diff['fixed'])} fixed / "
            f"{diff['still_failing']} still failing; {len(diff['closer'])} passing but closer to their limit, "
            f"{diff['added']} not in the baseline, {diff['removed']} of the baseline's not run now; {builds}")
