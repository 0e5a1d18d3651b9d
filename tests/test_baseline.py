"""Baselines across builds (conformance.reporting.baseline) and the Markdown summary
(conformance.reporting.markdown): two builds of one backend at different paths are compared case by case,
with both versions, in the terminal, the page and summary.md."""

from __future__ import annotations

from pathlib import Path

from conformance.reporting.baseline import backend_pairs
from tests.conftest import BASELINE_BACKEND, BASELINE_CASES, cli_here

VERSIONED = "__version__ = {version!r}\n"


def build(folder: Path, mode: str, version: str) -> str:
    """A build of the baseline tests' backend in its own folder; returns its spec."""
    folder.mkdir()
    (folder / "backend.py").write_text(VERSIONED.format(version=version) + BASELINE_BACKEND.format(mode=mode),
                                       encoding="utf-8")
    return f"{folder.name}/backend.py:conv"


def test_two_builds_at_different_paths_are_compared_by_case_id(tmp_path: Path) -> None:
    (tmp_path / "cases.yaml").write_text(BASELINE_CASES, encoding="utf-8")
    old, new = build(tmp_path / "build-a", "before", "1.0"), build(tmp_path / "build-b", "after", "1.1")
    for spec, out in ((old, "before"), (new, "after")):
        done = cli_here("run", "--cases", "cases.yaml", "--backend", spec, "--reference", "oracle", "--out", out, "-q",
                        cwd=tmp_path)
        assert done.returncode == 1 and f"summary: {out}/summary.md" in done.stdout, done.stdout + done.stderr
    done = cli_here("report", "after", "--baseline", "before", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    line = done.stdout.splitlines()[-1]
    assert line.startswith("against the baseline: 1 new / 1 fixed / 0 still failing"), line
    assert f"{new} (1.1) against {old} (1.0)" in line
    page = (tmp_path / "after" / "report.html").read_text(encoding="utf-8")
    assert "1 newly failing" in page and "1 fixed" in page and "(1.1) with the\n    baseline" in page
    summary = (tmp_path / "after" / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("## sepconv-conformance: DOES NOT CONFORM")
    assert "### Failure groups (1)" in summary and "### Against the baseline" in summary
    assert "Newly failing: `n1_h6w5_c3_" in summary and "Fixed: `n1_h6w5_c2_" in summary
    assert f"| `{new}` | 1.1 | 2 | 1 |" in summary  # pass and fail counts, with the version


def test_backends_pair_by_spec_first_then_the_one_left_over_on_each_side() -> None:
    assert backend_pairs(["numpy", "b/x.py:f"], ["a/x.py:f", "numpy"]) == {"numpy": "numpy", "b/x.py:f": "a/x.py:f"}
    assert backend_pairs(["p", "q"], ["r", "s"]) == {}  # two left over on each side: nothing is guessed
