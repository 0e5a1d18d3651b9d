"""Combine the results of shard runs (`--shard K/N` on several machines) into one set of reports."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conformance import html_report, reports
from conformance.result import Result

AGREEING_FIELDS = ("bank_digest", "version", "reference", "backends", "repeat", "expectations")


class MergeError(Exception):
    """Shards that cannot be combined: unreadable, from different banks or versions, or overlapping."""


def _read(folder: Path) -> dict[str, Any]:
    path = folder / "results.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise MergeError(f"{path}: cannot read results: {error}") from None


def merge_runs(folders: Sequence[Path], out: Path) -> dict[str, Any]:
    """Write out/results.json and out/junit.xml from the shards' results; returns the merged summary."""
    documents = [(folder, _read(folder)) for folder in folders]
    first_folder, first = documents[0]
    for folder, document in documents[1:]:
        for field in AGREEING_FIELDS:
            if document["run"].get(field) != first["run"].get(field):
                raise MergeError(f"{folder} and {first_folder} differ in {field}: "
                                 f"{document['run'].get(field)!r} vs {first['run'].get(field)!r}")
    seen: dict[tuple[str, str], Path] = {}
    results: list[Result] = []
    for folder, document in documents:
        for record in document["results"]:
            key = (record["case"], record["backend"])
            if key in seen:
                raise MergeError(f"{key[0]} [{key[1]}] is in both {seen[key]} and {folder}: overlapping shards")
            seen[key] = folder
            results.append(Result.from_dict(record))
    run = dict(first["run"]) | {"shard": None, "merged_from": [str(f) for f in folders],
                                "duration_s": sum(d["run"].get("duration_s", 0.0) for _, d in documents)}
    reports.write_results_json(out / "results.json", results, run)
    reports.write_junit(out / "junit.xml", results)
    try:  # a rendering problem must not turn a merge into a usage error
        html_report.write_report(out)
    except (html_report.ReportError, OSError) as error:
        print(f"warning: report.html not written: {error}", file=sys.stderr)
    return reports.summarize(results)
