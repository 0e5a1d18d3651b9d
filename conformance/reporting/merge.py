"""Combine the results of shard runs (`--shard K/N` on several machines), and runs of different backends
side by side (one run per runtime: the conformance matrix), into one set of reports.

A merge is a verdict, so it demands what a single run demands: for each set of backends, every shard 1..N
of one split exactly once (or one unsharded run), each complete (neither interrupted nor stopped short,
holding every result it expected); every run from the same bank, tool, reference and options; no backend
in two sets, no result in two shards. Anything else is refused with exit code 2, naming the folder and what
is wrong.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conformance.cases.selection import ShardError, parse_shard
from conformance.judging.verdict import COMPLETE, Verdict, judge
from conformance.reporting import html_report, reports
from conformance.reporting.results_file import ResultsFileError, load_results, results_of
from conformance.result import Result

# What every run merged must agree on (the journal header's keys, less the shard and the backends).
AGREEING_FIELDS = ("bank_digest", "version", "reference", "golden", "repeat", "strict_expectations", "selection")
# What the shards of one split must agree on too; runs of other backends bring their own (dicts by backend).
BACKEND_FIELDS = ("backends", "backend_versions", "backend_fingerprints", "expectations")


class MergeError(Exception):
    """Shards that cannot be combined into a verdict; the message names the folder."""


def _read(folder: Path) -> dict[str, Any]:
    try:
        return load_results(folder / "results.json")
    except ResultsFileError as error:
        raise MergeError(str(error)) from None


def _check_complete(folder: Path, document: dict[str, Any]) -> None:
    run = document.get("run") or {}
    completion, expected = run.get("completion"), run.get("expected_results")
    if completion != COMPLETE:
        raise MergeError(f"{folder}: its run did not complete (completion: {completion!r}); rerun it "
                         "(or `run --resume` it) before merging")
    count = len(document["results"])
    if not isinstance(expected, int) or count != expected:
        raise MergeError(f"{folder}: holds {count} results of the {expected!r} its run expected")


def _check_agreement(folder: Path, document: dict[str, Any], other_folder: Path, other: dict[str, Any],
                     fields: Sequence[str]) -> None:
    for field in fields:
        if document["run"].get(field) != other["run"].get(field):
            raise MergeError(f"{folder} and {other_folder} differ in {field}: "
                             f"{str(document['run'].get(field))[:120]!r} vs {str(other['run'].get(field))[:120]!r}")


def _check_split(documents: Sequence[tuple[Path, dict[str, Any]]]) -> None:
    """Every shard K/N of one N exactly once, or a single unsharded run."""
    shards: dict[int, Path] = {}
    total = None
    for folder, document in documents:
        text = (document.get("run") or {}).get("shard")
        try:
            shard = parse_shard(text) if text is not None else (1, 1)
        except ShardError as error:
            raise MergeError(f"{folder}: {error}") from None
        assert shard is not None
        if total is not None and shard[1] != total:
            raise MergeError(f"{folder} is a shard of {shard[1]}, the others of {total}: not one split")
        total = shard[1]
        if shard[0] in shards:
            raise MergeError(f"{folder} and {shards[shard[0]]} are both shard {shard[0]}/{total}")
        shards[shard[0]] = folder
    missing = sorted(set(range(1, (total or 1) + 1)) - set(shards))
    if missing:
        raise MergeError(f"shard(s) {', '.join(f'{k}/{total}' for k in missing)} missing: a merge needs every "
                         "shard of the split")


def merge_runs(folders: Sequence[Path], out: Path) -> tuple[Verdict, int]:
    """Write out/results.json, junit.xml and report.html from the shards' results; returns the verdict
    and the number of results. Raises MergeError."""
    documents = [(folder, _read(folder)) for folder in folders]
    first_folder, first = documents[0]
    splits: dict[tuple[str, ...], list[tuple[Path, dict[str, Any]]]] = {}
    for folder, document in documents:
        _check_complete(folder, document)
        _check_agreement(folder, document, first_folder, first, AGREEING_FIELDS)
        splits.setdefault(tuple(document["run"].get("backends") or ()), []).append((folder, document))
    run = dict(first["run"]) | {"backends": [], **{field: {} for field in BACKEND_FIELDS[1:]}}
    for backends, split in splits.items():
        if overlap := set(backends) & set(run["backends"]):
            raise MergeError(f"{split[0][0]} runs {', '.join(sorted(overlap))} with other backends than another "
                             "run does: merge the shards of one set of backends, or runs of disjoint sets")
        for folder, document in split:
            _check_agreement(folder, document, split[0][0], split[0][1], BACKEND_FIELDS)
        _check_split(split)
        run["backends"] += backends  # side by side, each backend with its own version, fingerprint, expectations
        for field in BACKEND_FIELDS[1:]:
            run[field] |= split[0][1]["run"].get(field) or {}
    seen: dict[tuple[str, str], Path] = {}
    results: list[Result] = []
    for folder, document in documents:
        for result in results_of(document):
            key = (result.case, result.backend)
            if key in seen:
                raise MergeError(f"{key[0]} [{key[1]}] is in both {seen[key]} and {folder}: overlapping shards")
            seen[key] = folder
            results.append(result)
    verdict = judge(results, len(results), COMPLETE)
    run |= {"shard": None, "merged_from": [str(f) for f in folders],
            "duration_s": sum(float(d["run"].get("duration_s") or 0.0) for _, d in documents),
            "completion": COMPLETE, "expected_results": len(results),
            "verdict": {"exit_code": verdict.exit_code, "sentence": verdict.sentence}}
    try:
        reports.write_results_json(out / "results.json", results, run)
        reports.write_junit(out / "junit.xml", results)
    except OSError as error:
        raise MergeError(f"--out {out}: cannot write the merged results: {error}") from None
    try:  # a rendering problem must not turn a merge into a usage error
        html_report.write_report(out)
    except (html_report.ReportError, OSError) as error:
        print(f"warning: report.html not written: {error}", file=sys.stderr)
    return verdict, len(results)
