"""The conformance matrix: cases x backends, one cell per result (its status and its error against the
reference), for a run of several backends (runtimes side by side) or a merge of several runs. Rows are
grouped by the failure group (conformance.reporting.diagnosis) of their first failing cell, so one bug's
cases sit together; also, per backend, the forbidden inputs the runtime itself accepted (its adapter
rejected them after the call: Result.rejected_by "accepted_by_runtime"). Pure: records in, a dict out,
which report.html and summary.md (conformance.reporting.markdown) render."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from conformance.reporting.baseline import metric
from conformance.reporting.diagnosis import FailureGroup


def _cell(record: dict[str, Any]) -> dict[str, Any]:
    """What a cell shows: the status, and the worst element's error in units of its limit (1 = at the limit)
    where it was judged against a reference."""
    cell: dict[str, Any] = {"status": record["status"]}
    error = metric((record.get("metrics") or {}).get("max_error_in_limits"))
    if not math.isnan(error):
        cell["error"] = float(f"{error:.3g}")
    if record.get("rejected_by"):
        cell["rejected_by"] = record["rejected_by"]
    return cell


def conformance_matrix(records: Sequence[dict[str, Any]], backends: Sequence[str],
                       groups: Sequence[FailureGroup]) -> dict[str, Any]:
    """{"backends", "rows": [{"case", "group" (1-based, or None), "differs", "cells": {backend: cell}}],
    "accepted_forbidden": {backend: [case ids the runtime accepted although the contract forbids them]}}.
    Rows: failing ones first, by group, then the rest by case id; `differs`: the backends' statuses differ."""
    member = {(g.backend, case): number for number, g in enumerate(groups, 1) for case in g.cases}
    rows: dict[str, dict[str, Any]] = {}
    accepted: dict[str, list[str]] = {b: [] for b in backends}
    for record in records:
        row = rows.setdefault(record["case"], {"case": record["case"], "group": None, "cells": {}})
        row["cells"][record["backend"]] = _cell(record)
        number = member.get((record["backend"], record["case"]))
        if number is not None and (row["group"] is None or number < row["group"]):
            row["group"] = number
        if record.get("expect") == "error" and record.get("rejected_by") == "accepted_by_runtime":
            accepted.setdefault(record["backend"], []).append(record["case"])
    for row in rows.values():
        row["differs"] = len({row["cells"].get(b, {}).get("status") for b in backends}) > 1
    ordered = sorted(rows.values(), key=lambda r: (r["group"] is None, r["group"] or 0, r["case"]))
    return {"backends": list(backends), "rows": ordered,
            "accepted_forbidden": {b: sorted(cases) for b, cases in accepted.items() if cases}}
