"""`summary.md`: a run's verdict, counts, failure groups and (with a baseline) what changed, in Markdown,
for a CI job summary (e.g. `cat reports/summary.md >> "$GITHUB_STEP_SUMMARY"`). Written next to
report.html by `run`, `merge` and `report`, from results.json alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conformance.reporting.baseline import diff_line
from conformance.reporting.diagnosis import FailureGroup
from conformance.reporting.matrix import conformance_matrix
from conformance.reporting.results_file import run_verdict
from conformance.result import STATUSES, is_failing

MAX_GROUPS = 30
MAX_CASES = 20  # newly failing and fixed cases listed by id
MAX_MATRIX_ROWS = 60  # rows of the conformance matrix (all of them are in report.html)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
            *("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)]


def summary_markdown(document: dict[str, Any], groups: Sequence[FailureGroup], diff: dict[str, Any] | None) -> str:
    """The summary of `document`, with its failure groups and (None: no baseline) its baseline diff."""
    records = document.get("results") or []
    run = document.get("run") or {}
    versions = run.get("backend_versions") or {}
    per_backend = (document.get("summary") or {}).get("per_backend") or {}
    shown = [s for s in STATUSES if any(counts.get(s) for counts in per_backend.values())]
    lines = [f"## sepconv-conformance: {run_verdict(document).sentence}", "",
             f"{len(records)} results, reference {run.get('reference', 'unknown')}.", ""]
    lines += _table(["backend", "version", *shown],
                    [[f"`{b}`", versions.get(b) or "", *(counts.get(s, 0) for s in shown)]
                     for b, counts in per_backend.items()])
    if groups:
        lines += ["", f"### Failure groups ({len(groups)})", ""]
        lines += _table(["#", "count", "backend", "what", "trigger", "reproduce"],
                        [[n, g.count, f"`{g.backend}`", f"{g.status}: {g.pattern}",
                          g.trigger, f"`{g.reproducer}`"]
                         for n, g in enumerate(groups[:MAX_GROUPS], 1)])
        if len(groups) > MAX_GROUPS:
            lines.append(f"\n... {len(groups) - MAX_GROUPS} more groups in report.html")
    if len(per_backend) > 1:
        lines += _matrix_lines(conformance_matrix(records, list(per_backend), groups))
    if diff is not None:
        lines += ["", "### Against the baseline", "", diff_line(diff)]
        for title, entries in (("Newly failing", diff["newly_failing"]), ("Fixed", diff["fixed"])):
            if entries:
                listed = ", ".join(f"`{e['case']}`" for e in entries[:MAX_CASES])
                more = f" and {len(entries) - MAX_CASES} more" if len(entries) > MAX_CASES else ""
                lines += ["", f"{title}: {listed}{more}"]
    return "\n".join(lines) + "\n"


def _matrix_lines(matrix: dict[str, Any]) -> list[str]:
    """The conformance matrix's rows where some backend is not passing (up to MAX_MATRIX_ROWS), then the
    forbidden inputs each runtime itself accepted."""
    backends = matrix["backends"]
    shown = [r for r in matrix["rows"] if any(c["status"] != "pass" for c in r["cells"].values())]
    lines = ["", f"### Conformance matrix ({len(matrix['rows'])} cases x {len(backends)} backends)", ""]
    if not shown:
        lines.append("Every backend passes every case.")
    else:
        lines += [f"The {len(shown)} cases not passing everywhere (cell: status, worst error / limit):", ""]
        rows = [[f"`{row['case']}`", row["group"] or "", *(_matrix_cell(row["cells"].get(b)) for b in backends)]
                for row in shown[:MAX_MATRIX_ROWS]]
        lines += _table(["case", "group", *(f"`{b}`" for b in backends)], rows)
        if len(shown) > MAX_MATRIX_ROWS:
            lines.append(f"\n... {len(shown) - MAX_MATRIX_ROWS} more rows in report.html")
    for backend, cases in matrix["accepted_forbidden"].items():
        listed = ", ".join(f"`{c}`" for c in cases[:10]) + (f" and {len(cases) - 10} more" if len(cases) > 10 else "")
        lines += ["", f"`{backend}` itself accepts {len(cases)} forbidden inputs (its adapter rejects them): {listed}"]
    return lines


def _matrix_cell(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return "-"
    status = cell["status"]
    text = f"**{status}**" if is_failing(status) else status
    return f"{text} {cell['error']:g}" if "error" in cell and status != "skip" else text
