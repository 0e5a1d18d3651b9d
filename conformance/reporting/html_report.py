"""The HTML report: DIR/report.html rendered from DIR/results.json (the source of truth), optionally
against a baseline run; and the `report` command that (re)renders it.

One self-contained file: the template, styles and script (conformance/templates/) are inlined, the data
is embedded once, nothing is fetched from a network. The data is JSON, gzip-compressed and base64-encoded
in a <script type="application/gzip+base64"> block (embedded_data); the script inflates it with the
browser's DecompressionStream (Chromium 80, Firefox 113, Safari 16.4 and later; an older browser says
so on the page and points to results.json). Error maps are repetitive, so this makes the page 5 to 8
times smaller: a report of 500 failures with their maps stays under 1 MB. Base64 holds no `<`, `>` or `&`,
so no string from a case file, a backend or an error message can close the block; Jinja2 autoescapes
every string the template prints; the script renders strings with textContent only.

Size: the per-failure maps are bounded in conformance.judging.diagnostics (about 16 kB of JSON at most, far less
for small outputs); on top of that the page embeds maps for at most MAX_DETAILED failing results and
DETAILS_BUDGET characters of them (before compression), each backend's most severe failures first
(round robin over the backends, so one broken backend cannot crowd out the others); the rest keep their
metrics and OMITTED_WORST worst elements.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import functools
import gzip
import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conformance.cases.case import DATA_FORMATS, DISTRIBUTIONS, DTYPES, EXPECTS, PADDING_NAMES, expect_name
from conformance.exitcodes import EXIT_OK, EXIT_USAGE
from conformance.files import atomic_write
from conformance.judging import accuracy, subnormals
from conformance.reporting.baseline import baseline_diff, diff_line, metric
from conformance.reporting.diagnosis import failure_groups
from conformance.reporting.features import FEATURES
from conformance.reporting.markdown import summary_markdown
from conformance.reporting.matrix import conformance_matrix
from conformance.reporting.results_file import ResultsFileError, load_results, results_of, run_verdict
from conformance.result import FAILING_STATUSES, STATUSES, is_failing

HELP = "render DIR/report.html from DIR/results.json, optionally against a baseline run"
TEMPLATES = Path(__file__).parent / "templates"
MAX_DETAILED = 1000
DETAILS_BUDGET = 4_000_000  # characters of embedded error maps, before compression
OMITTED_WORST = 3  # worst elements kept for a failure whose maps are left out
SUMMARY = "summary.md"
DATA_BLOCK = '<script type="application/gzip+base64" id="report-data">'
MAX_LISTED = 200  # rows per baseline table (the full lists are in the data and the table's filter)

# Coverage axes: name -> (value of a case's parameters, the values the contract knows, if a closed set). The
# values are read as the failure groups' contrasts read them (conformance.reporting.features).
AXES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "data format": (FEATURES["layout"], DATA_FORMATS),
    "padding": (FEATURES["padding"], (*PADDING_NAMES, "EXPLICIT")),
    **{name: (FEATURES[name], ()) for name in ("strides", "rates", "multiplier", "kernel")},
    "dtype": (FEATURES["dtype"], DTYPES),
    "data": (FEATURES["data"], DISTRIBUTIONS),
    # The axes hardware bugs live on (no closed set of values).
    **{name: (FEATURES[name], ()) for name in ("out_channels % 8", "out_channels % 16", "out_channels % 32",
                                                "in_channels % 8", "C*M", "largest stride", "padding with strides",
                                                "rows of padding", "columns of padding", "batch")},
    "expectation": (lambda p: expect_name(bool(p.get("expect_error"))), EXPECTS),
}

ReportError = ResultsFileError  # the name this module's callers catch


def _failing(record: dict[str, Any]) -> bool:
    return is_failing(record["status"])


def _natural(value: str) -> tuple[tuple[int, int, str], ...]:
    """A sort key that orders "2x10" after "2x9" and copes with negative numbers (error cases have them)."""
    return tuple((0, int(p), "") if p.lstrip("-").isdigit() else (1, 0, p) for p in value.replace("x", " x ").split())


def coverage(records: list[dict[str, Any]], backends: list[str]) -> list[dict[str, Any]]:
    """Per axis, each value exercised (and each known value not exercised: a gap) with its counts per
    backend: total, pass, failing (the red statuses) and other (xfail, skip)."""
    table = []
    for axis, (read, known) in AXES.items():
        counts: dict[str, dict[str, Counter[str]]] = {str(v): {} for v in known}
        for record in records:
            value = read(record.get("parameters") or {})
            if value is None:  # the feature does not apply (an error case's 4 strides)
                continue
            value = str(value)
            status = "pass" if record["status"] == "pass" else "failing" if _failing(record) else "other"
            cell = counts.setdefault(value, {}).setdefault(record["backend"], Counter())
            cell["total"] += 1
            cell[status] += 1
        order = list(map(str, known)) + sorted((v for v in counts if v not in known), key=_natural)
        rows = [{"value": value, "gap": not counts[value],
                 "cells": [dict(counts[value].get(b, Counter())) for b in backends]} for value in order]
        table.append({"axis": axis, "rows": rows})
    return table


def _severity(record: dict[str, Any]) -> float:
    """How bad a result is, for the page's first order: its worst element in units of its limit; NaN/Inf
    where the reference has none (or the reverse) and exact-integer failures (limit 0) are the worst."""
    metrics = record.get("metrics") or {}
    if metric(metrics.get("nonfinite_mismatches")) > 0:
        return math.inf
    value = metric(metrics.get("max_error_in_limits"))
    return -1.0 if math.isnan(value) else value


def _rounded(value: Any, digits: int = 4) -> Any:
    """Floats to `digits` significant digits, for the page (results.json keeps every digit)."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return value


def page_data(records: list[dict[str, Any]], baseline: bool, groups: Sequence[str] = ()) -> dict[str, Any]:
    """What the script needs, each thing once: case parameters keyed by case id, one row per result (a
    failing one with its `group`, 1-based, of `groups`: the failure groups' labels, for the group filter).
    Trimmed for size: metrics to 4 digits, the reproducer only where something is wrong, TensorFlow's
    detail only where it deviates, no worst elements for a passing result, error maps within the budget
    (_detailed) and OMITTED_WORST worst elements for the failures left without."""
    cases: dict[str, Any] = {}
    rows = []
    detailed = _detailed(records)
    for record in records:
        cases.setdefault(record["case"], {k: v for k, v in (record.get("parameters") or {}).items() if v is not None})
        row = {k: v for k, v in record.items() if k not in ("parameters", "details", "metrics", "duration_s")
               and v not in ("", None)}
        row["duration_s"] = round(float(record.get("duration_s") or 0.0), 3)
        if record["status"] == "pass":
            row.pop("reproducer", None)
        if record.get("reference_status") in ("ok", "not_run"):
            row.pop("reference_detail", None)  # "TensorFlow not used (--reference oracle)" on every row
        metrics = dict(record.get("metrics") or {})
        if id(record) in detailed:
            row["details"] = {k: v for k, v in record["details"].items() if k != "limits"}
            metrics.pop("worst", None)  # the details hold a longer list
        elif record.get("details"):
            row["details_omitted"] = True
            metrics["worst"] = (metrics.get("worst") or [])[:OMITTED_WORST]
        if not _failing(record):
            metrics.pop("worst", None)
        row["metrics"] = _rounded(metrics)
        rows.append(row)
    # A status this version does not know is failing here too (the verdict says so; the page must agree).
    unknown = sorted({r["status"] for r in records if r["status"] not in STATUSES})
    return {"rows": rows, "cases": cases, "statuses": [*STATUSES, *unknown],
            "failing": [*FAILING_STATUSES, *unknown], "baseline": baseline, "groups": list(groups)}


def _detailed(records: list[dict[str, Any]]) -> set[int]:
    """ids of the records whose error maps the page embeds: per backend the most severe first, taken in
    turns across backends, within MAX_DETAILED and DETAILS_BUDGET."""
    rank: Counter[str] = Counter()
    order = []
    for record in sorted((r for r in records if _failing(r) and r.get("details")), key=_severity, reverse=True):
        order.append((rank[record["backend"]], -_severity(record), record))
        rank[record["backend"]] += 1
    chosen: set[int] = set()
    used = 0
    for _, _, record in sorted(order, key=lambda entry: entry[:2]):
        size = len(json.dumps(record["details"], separators=(",", ":"), default=str))
        if len(chosen) >= MAX_DETAILED or used + size > DETAILS_BUDGET:
            continue
        chosen.add(id(record))
        used += size
    return chosen


def embedded_data(data: Any) -> str:
    """The page's data block: JSON (non-finite floats as strings, as in results.json), gzip-compressed
    (no timestamp: the same data gives the same page) and base64-encoded, which no `<` can break out of."""
    from conformance.files import json_text

    text = json_text(data, ensure_ascii=False, separators=(",", ":"))
    return base64.b64encode(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")


def read_embedded(page: str) -> Any:
    """The data block of a rendered page, decoded as the browser decodes it (tests, tools)."""
    start = page.index(DATA_BLOCK) + len(DATA_BLOCK)
    return json.loads(gzip.decompress(base64.b64decode(page[start:page.index("</script>", start)])))


def _when(started: Any) -> str:
    try:
        return datetime.datetime.fromtimestamp(float(started), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def numerics_lines(document: dict[str, Any]) -> list[str]:
    """Per backend: its accuracy next to TensorFlow's and what it did with subnormals (as the terminal)."""
    results = results_of(document)
    lines = accuracy.summary_lines(results) + subnormals.summary_lines(results)
    for backend in dict.fromkeys(r.backend for r in results):
        judged = sorted({(str(r.parameters.get("dtype")), str(r.metrics["accumulator"])) for r in results
                         if r.backend == backend and "accumulator" in r.metrics})
        if judged:
            lines.append(f"judged as accumulating [{backend}]: "
                         + ", ".join(f"{dtype} in {accumulator}" for dtype, accumulator in judged))
    return lines


def render_report(document: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    """The whole page for a parsed results.json (and a baseline's), as one string."""
    return _rendered(document, baseline)[0]


@functools.cache
def _template() -> Any:  # a jinja2.Template
    """The page's template, compiled once per process: about 0.1 s, and a process may write many reports
    (selftest, the tests, tools that run in-process)."""
    import jinja2

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return environment.get_template("report.html.j2")


def _rendered(document: dict[str, Any], baseline: dict[str, Any] | None) -> tuple[str, str, dict[str, Any] | None]:
    """The page, summary.md and the baseline diff, from one computation of the groups and the diff."""
    from markupsafe import Markup

    records = [dict(r) for r in document.get("results") or []]
    records.sort(key=lambda r: (not _failing(r), -_severity(r), r["case"], r["backend"]))
    run = document.get("run") or {}
    backends = list(run.get("backends") or dict.fromkeys(r["backend"] for r in records))
    backends += [b for b in dict.fromkeys(r["backend"] for r in records) if b not in backends]
    diff = None if baseline is None else \
        {**baseline_diff(records, baseline, run.get("backend_versions")), "max_listed": MAX_LISTED}
    per_backend: dict[str, Counter[str]] = {b: Counter() for b in backends}
    for record in records:
        per_backend[record["backend"]][record["status"]] += 1
    failing = sum(_failing(r) for r in records)
    groups = failure_groups(records)
    member = {(g.backend, case): number for number, g in enumerate(groups, 1) for case in g.cases}
    for record in records:
        if (number := member.get((record["backend"], record["case"]))) is not None:
            record["group"] = number
    matrix = conformance_matrix(records, backends, groups) if len(backends) > 1 else None
    page = _template().render(
        title=f"sepconv-conformance: {', '.join(backends) or 'no backends'}",
        verdict=run_verdict(document).sentence,
        failing_total=failing, total=len(records), backends=backends,
        # pass and fail always; the other statuses where some result has them (a column each)
        shown_statuses=[s for s in STATUSES if s in ("pass", "fail") or any(c[s] for c in per_backend.values())],
        failing_statuses=FAILING_STATUSES, per_backend=per_backend,
        backend_versions=run.get("backend_versions") or {}, environment=document.get("environment") or {},
        run=run, started=_when(run.get("started")),
        reference_health=(document.get("summary") or {}).get("reference_health") or {},
        coverage=coverage(records, backends), groups=[g.to_dict() for g in groups], diff=diff, matrix=matrix,
        numerics=numerics_lines(document),
        # Our own files, inlined as they are (they hold no data); the data goes through embedded_data.
        style=Markup((TEMPLATES / "report.css").read_text(encoding="utf-8")),
        script=Markup((TEMPLATES / "report.js").read_text(encoding="utf-8")),
        data=Markup(embedded_data({**page_data(records, baseline is not None,
                                             [f"{g.count} {g.status}: {g.pattern} [{g.backend}]" for g in groups]),
                                   "matrix": matrix})))
    return page, summary_markdown(document, groups, diff), diff


def write_report(report_dir: Path, baseline_dir: Path | None = None, out: Path | None = None) -> Path:
    """Render report_dir/results.json (against baseline_dir/results.json) into `out` (default
    report_dir/report.html), and summary.md beside it (conformance.reporting.markdown), atomically: a reader
    never sees half a page. Raises ReportError."""
    return _write(report_dir, baseline_dir, out)[0]


def _write(report_dir: Path, baseline_dir: Path | None, out: Path | None) -> tuple[Path, dict[str, Any] | None]:
    """write_report, also returning the baseline diff (for the line `report --baseline` prints)."""
    document = load_results(Path(report_dir) / "results.json")
    baseline = load_results(Path(baseline_dir) / "results.json") if baseline_dir is not None else None
    target = Path(out) if out is not None else Path(report_dir) / "report.html"
    page, summary, diff = _rendered(document, baseline)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, page)
    atomic_write(target.parent / SUMMARY, summary)
    return target, diff


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", metavar="DIR", help="a results folder (holding results.json)")
    parser.add_argument("--baseline", metavar="OLD_DIR",
                        help="a results folder of an earlier run: show what newly fails, what got fixed and "
                             "which passing cases moved closer to their limit")
    parser.add_argument("--out", metavar="FILE", help="where the page goes (default: DIR/report.html)")


def execute(args: argparse.Namespace) -> int:
    try:
        target, diff = _write(Path(args.folder), Path(args.baseline) if args.baseline else None,
                              Path(args.out) if args.out else None)
    except ReportError as error:
        print(f"sepconv-conformance: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        print(f"sepconv-conformance: error: cannot write the report: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"report: {target}, summary: {target.parent / SUMMARY}")
    if diff is not None:  # the page and the summary say more; this is the line a CI log shows
        print(diff_line(diff))
    return EXIT_OK
