"""Renderings of the results: results.json (the source of truth) and the terminal summary.

JUnit XML is written by pytest itself (--junitxml), with each case's result attached as a property.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conformance import __version__
from conformance.files import atomic_write, json_text
from conformance.reporting.diagnosis import failure_groups
from conformance.result import STATUSES, Result, is_failing

RESULTS_FORMAT_VERSION = 1
RESULT_PROPERTY = "sepconv_result"  # the JUnit property holding a result record
MAX_LISTED_FAILURES = 50


def environment() -> dict[str, Any]:
    import numpy

    from conformance.judging.reference import tensorflow_version

    return {"sepconv_conformance": __version__, "numpy": numpy.__version__,
            "tensorflow": tensorflow_version(), "cupy": cupy_version(), "python": platform.python_version(),
            "machine": platform.machine(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "gpus": gpu_devices()}


def cupy_version() -> str | None:
    """CuPy's version from its package metadata, or None: never imported here (slow, and importing it
    may initialize CUDA in the harness's process)."""
    if "cupy" in sys.modules:
        return str(sys.modules["cupy"].__version__)
    if importlib.util.find_spec("cupy") is None:  # a top-level lookup: does not import it
        return None
    for distribution in importlib.metadata.packages_distributions().get("cupy", []):  # cupy-cuda12x, ...
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def gpu_devices() -> list[str]:
    """NVIDIA GPUs as nvidia-smi names them ("name, driver, memory"); [] where there is no nvidia-smi or
    it fails. A subprocess, so the harness never initializes CUDA itself."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def reference_health(results: Sequence[Result]) -> dict[str, Any]:
    """TensorFlow's status per case (not per backend), and every deviation with its detail."""
    per_case: dict[str, Result] = {}
    for result in results:
        per_case.setdefault(result.case, result)
    counts = Counter(r.reference_status for r in per_case.values())
    deviations = [{"case": r.case, "reference_status": r.reference_status, "detail": r.reference_detail}
                  for r in per_case.values() if r.reference_status not in ("ok", "not_run")]
    return {"counts": dict(counts), "deviations": deviations}


def summarize(results: Sequence[Result]) -> dict[str, Any]:
    per_backend: dict[str, Counter[str]] = {}
    for result in results:
        per_backend.setdefault(result.backend, Counter())[result.status] += 1
    totals = Counter(r.status for r in results)
    return {"total": len(results), "statuses": dict(totals),
            "failing": sum(n for status, n in totals.items() if is_failing(status)),
            "per_backend": {b: dict(c) for b, c in per_backend.items()},
            "reference_health": reference_health(results)}


def write_results_json(path: Path, results: Sequence[Result], run: dict[str, Any]) -> None:
    """Write atomically (temp file + rename), so a reader never sees half a file."""
    ordered = sorted(results, key=lambda r: (r.case, r.backend))
    summary = summarize(ordered) | {"conforms": (run.get("verdict") or {}).get("exit_code") == 0}
    document = {"format_version": RESULTS_FORMAT_VERSION, "environment": environment(), "run": run,
                "summary": summary, "results": [r.to_dict() for r in ordered]}
    atomic_write(path, json_text(document, indent=1) + "\n")


# XML 1.0 cannot hold most control characters (a driver's ANSI colours, a stray NUL), even escaped.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_text(text: str) -> str:
    """`text` with the characters XML 1.0 forbids shown as escapes: the file stays parseable."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def write_junit(path: Path, results: Sequence[Result]) -> None:
    """JUnit XML rendered from the results, the same for a single, a resumed and a merged run: one
    <testcase> per case x backend, classname the backend, name the case id (stable across runs, so a CI
    server's test history holds), the result as a property (without the error maps)."""
    failing = sum(is_failing(r.status) for r in results)
    suite = ET.Element("testsuite", name="sepconv-conformance", tests=str(len(results)), failures=str(failing),
                       errors="0", skipped=str(sum(r.status == "skip" for r in results)),
                       time=f"{sum(r.duration_s for r in results):.3f}")
    for result in sorted(results, key=lambda r: (r.case, r.backend)):
        case = ET.SubElement(suite, "testcase", classname=xml_text(result.backend), name=xml_text(result.case),
                             time=f"{result.duration_s:.3f}")
        record = json_text(result.to_dict() | {"details": {}})
        ET.SubElement(ET.SubElement(case, "properties"), "property", name=RESULT_PROPERTY, value=xml_text(record))
        if is_failing(result.status):
            ET.SubElement(case, "failure", message=xml_text(f"{result.status}: {result.message}")).text = \
                xml_text(describe_failure(result))
        elif result.status == "skip":
            ET.SubElement(case, "skipped", message=xml_text(result.message))
    root = ET.Element("testsuites")
    root.append(suite)
    atomic_write(path, ET.tostring(root, encoding="utf-8", xml_declaration=True))


def describe_failure(result: Result) -> str:
    """A few lines that say what is wrong, against what, and how to reproduce it alone."""
    lines = [f"{result.status.upper()} {result.case} [{result.backend}]: {result.message}"]
    reference = f"compared with {result.reference}"
    if result.reference_status not in ("ok", ""):
        reference += f" (TensorFlow {result.reference_status}: {result.reference_detail})"
    lines.append(f"  {reference}")
    if "tf_max_error_in_limits" in result.metrics:
        lines.append(f"  TensorFlow's own error vs the oracle: {result.metrics['tf_max_error_in_limits']:.3g}x "
                     "its limit")
    lines.append(f"  reproduce: {result.reproducer}")
    return "\n".join(lines)


HEALTH_LEGEND = ("(ok: TensorFlow agrees with the oracle; refused, mismatch, crash, nondeterministic: the "
                 "backend was judged against the oracle instead; not_run: no TensorFlow reference was needed)")
MAX_SKIP_REASONS = 5


def _skip_lines(results: Sequence[Result]) -> list[str]:
    """Why cases were skipped, the most common reasons first, each once."""
    reasons = Counter((r.backend, r.message[:120]) for r in results if r.status == "skip")
    lines = [f"skipped: {n} [{backend}] {reason}" for (backend, reason), n in reasons.most_common(MAX_SKIP_REASONS)]
    if len(reasons) > MAX_SKIP_REASONS:
        lines.append(f"skipped: ... {len(reasons) - MAX_SKIP_REASONS} more reasons in results.json")
    return lines


def group_lines(results: Sequence[Result], results_path: str = "results.json") -> list[str]:
    """The failure groups (conformance.reporting.diagnosis), one line each with its trigger, then the
    smallest member's reproducer and a shrink line."""
    groups = failure_groups([r.to_dict() for r in results if is_failing(r.status) or r.status == "pass"],
                            results_path)
    lines = [f"failure groups: {len(groups)}, largest first"] if groups else []
    for group in groups:
        lines += [f"  {group.headline()}", f"      reproduce: {group.reproducer}", f"      shrink:    {group.shrink}"]
    return lines


def terminal_summary(results: Sequence[Result], run: dict[str, Any], quiet: bool = False,
                     max_failures: int = MAX_LISTED_FAILURES, results_path: str = "results.json") -> list[str]:
    """What the terminal shows after a run: the counts, TensorFlow's health, the skip reasons, the failure
    groups and the first `max_failures` failures; quiet: the groups only. Each failure appears once."""
    groups = group_lines(results, results_path)
    if quiet:
        return groups
    summary = summarize(results)
    lines = [f"{summary['total']} results in {run['duration_s']:.1f} s, reference: {run['reference']}"]
    width = max([len(b) for b in summary["per_backend"]] + [7])
    lines.append(f"  {'backend':<{width}} " + " ".join(f"{s:>6}" for s in STATUSES))
    for backend, counts in summary["per_backend"].items():
        lines.append(f"  {backend:<{width}} " + " ".join(f"{counts.get(s, 0):>6}" for s in STATUSES))
    health = summary["reference_health"]
    counts = ", ".join(f"{n} {status}" for status, n in sorted(health["counts"].items()))
    lines.append(f"reference health (TensorFlow per case): {counts}")
    lines.append(f"  {HEALTH_LEGEND}")
    lines += _skip_lines(results) + groups
    failures = [r for r in results if is_failing(r.status)]
    for result in failures[:max_failures]:
        lines.append(f"{result.status.upper()} {result.case} [{result.backend}]: {result.message[:160]}")
        lines.append(f"    {result.reproducer}")
    if len(failures) > max_failures:
        lines.append(f"... and {len(failures) - max_failures} more failures in {results_path} (--max-failures-shown)")
    return lines
