"""Failure groups that explain themselves (conformance.reporting.diagnosis): a backend with three subtle
bugs, run for real against the oracle, must come out as separate groups, each naming its trigger, with a
reproducer and a shrink line; the terminal prints each failure once, and -q only the groups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance.reporting.diagnosis import Contrast, contrasts, failure_groups
from tests.conftest import THREE_BUGS, cli_here

# 16 float32 cases over O x padding x stride (an 8x8 input: SAME at stride 2 pads one pixel, an odd one) and
# 3 long float16 reductions.
CASES = """
sweeps:
  - base: {input: [1, 8, 8, 3], kernel: [3, 3], channel_multiplier: 2}
    grid:
      out_channels: [7, 8, 13, 16]
      padding: [SAME, VALID]
      strides: [[1, 1], [2, 2]]
  - base: {input: [1, 6, 6, 512], kernel: [3, 3], channel_multiplier: 1, out_channels: 8, padding: VALID,
           dtype: float16}
    grid: {seed: [1, 2, 3]}
"""


@pytest.fixture(scope="module")
def three_bugs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """The run, once: its folder, and what `run` and `run -q` printed."""
    folder = tmp_path_factory.mktemp("three_bugs")
    (folder / "bugs.py").write_text(THREE_BUGS, encoding="utf-8")
    (folder / "cases.yaml").write_text(CASES, encoding="utf-8")
    command = ("run", "--cases", "cases.yaml", "--backend", "bugs.py:conv", "--reference", "oracle")
    loud = cli_here(*command, "--out", "loud", "--max-failures-shown", "3", cwd=folder)
    quiet = cli_here(*command, "--out", "out", "-q", cwd=folder)
    assert loud.returncode == quiet.returncode == 1, loud.stdout + loud.stderr
    return folder, loud.stdout, quiet.stdout


def test_each_bug_is_a_group_of_its_own_that_names_its_trigger(three_bugs):
    folder, _, _ = three_bugs
    records = json.loads((folder / "out" / "results.json").read_text())["results"]
    groups = {g.pattern: g for g in failure_groups(records)}
    channel, padding = groups["constant channels"], groups["padding on the wrong sides"]
    assert channel.count == 6 and all("_o7_" in c or "_o13_" in c for c in channel.cases)
    assert channel.example == "output channel 6 is constant (0)"  # conformance.judging.detectors, O=7
    assert Contrast("out_channels % 8", "!= 0", 1.0, 0.0) in channel.contrasts
    # SAME at stride 2 with O % 8 == 0: recomputed with the padding swapped (conformance.judging.hypotheses).
    assert padding.cases == ("n1_h8w8_c3_k3x3_m2_o8_s2x2_r1x1_SAME_NHWC_float32",
                             "n1_h8w8_c3_k3x3_m2_o16_s2x2_r1x1_SAME_NHWC_float32")
    assert "top and bottom and left and right swapped (top 1, bottom 0, left 1, right 0 where TensorFlow pads " \
           "top 0, bottom 1, left 0, right 1; SAME puts the odd pixel after)" in padding.example
    assert Contrast("padding with strides", "SAME at 2x2", 1.0, 0.0) in padding.contrasts
    # Both bugs at once (SAME at stride 2, O = 7 or 13) fit no single explanation: wrong everywhere.
    both = groups["everywhere (all images, rows, columns and channels)"]
    assert both.count == 2 and all("_s2x2_" in c and "SAME" in c and "_o8_" not in c for c in both.cases)
    low = [g for g in groups.values() if g not in (channel, padding, both)]
    assert sum(g.count for g in low) == 3 and all(Contrast("dtype", "float16", 1.0, 0.0) in g.contrasts for g in low)
    # The smallest member's reproducer and a shrink line that names this results file and backend.
    assert channel.reproducer.startswith("sepconv-conformance run ")
    assert f"--id {channel.cases[0]}" in channel.reproducer
    assert channel.shrink.endswith(f"--id {channel.cases[0]} --backend bugs.py:conv --reference oracle")


def test_the_terminal_prints_the_groups_and_each_failure_once(three_bugs):
    _, loud, quiet = three_bugs
    assert "failure groups: " in quiet and "out_channels % 8 != 0 in" not in quiet
    assert "100% out_channels % 8 != 0 (0% of passing)" in quiet and "shrink:" in quiet
    assert "reference health" not in quiet and "FAIL n1_" not in quiet  # -q: the verdict and the groups only
    assert "FAILURES" not in loud and "short test summary" not in loud  # pytest's own lists are not repeated
    assert loud.count("\nFAIL ") == 3 and "... and 10 more failures in " in loud  # --max-failures-shown 3
    assert "reference health" in loud and "ok: TensorFlow agrees with the oracle" in loud


def test_the_fixed_build_against_the_buggy_one_says_fixed_for_every_failure(three_bugs):
    folder, _, _ = three_bugs
    (folder / "fixed.py").write_text("from conformance.impls.numpy_backend import separable_conv2d as conv\n",
                                     encoding="utf-8")
    fixed = cli_here("run", "--cases", "cases.yaml", "--backend", "fixed.py:conv", "--reference", "oracle",
                     "--out", "fixed", "-q", cwd=folder)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    report = cli_here("report", "fixed", "--baseline", "out", cwd=folder)
    assert "against the baseline: 0 new / 13 fixed / 0 still failing" in report.stdout, report.stdout
    assert "fixed.py:conv (no version) against bugs.py:conv (no version)" in report.stdout  # two paths, paired
    summary = (folder / "fixed" / "summary.md").read_text(encoding="utf-8")
    failed = [r["case"] for r in json.loads((folder / "out" / "results.json").read_text())["results"]
              if r["status"] == "fail"]
    assert len(failed) == 13 and all(f"`{case}`" in summary for case in failed)  # each one listed as fixed


def test_contrasts_compare_members_with_passing_cases():
    def record(**parameters: object) -> dict[str, object]:
        return {"parameters": {"input": [1, 8, 8, 4], "channel_multiplier": 1, "strides": [1, 1], "rates": [1, 1],
                               "kernel": [3, 3], "padding": "VALID", "data_format": "NHWC", "dtype": "float32",
                               "out_channels": 8} | parameters}
    members = [record(data_format="NCHW"), record(data_format="NCHW", dtype="float16")]
    passing = [record(), record(dtype="float16"), record(data_format="NCHW", out_channels=9)]
    found = contrasts(members, passing)
    assert found[0] == Contrast("layout", "NCHW", 1.0, 1 / 3)  # every member; a third of the passing cases
    assert all(c.feature != "dtype" for c in found)  # half the members, half the passing cases: no contrast
    assert str(found[0]) == "100% layout NCHW (33% of passing)"
    assert contrasts(members, []) == ()  # nothing to contrast with: no contrast


def test_a_backend_with_no_passing_case_contrasts_each_group_with_its_other_failures():
    def record(case: str, kind: str, **parameters: object) -> dict[str, object]:
        return {"case": case, "backend": "b", "status": "fail", "kind": kind,
                "parameters": {"input": [1, 8, 8, 4], "channel_multiplier": 1, "strides": [1, 1], "rates": [1, 1],
                               "kernel": [3, 3], "padding": "VALID", "data_format": "NHWC", "dtype": "float32",
                               "out_channels": 8} | parameters}
    records = [record("a", "element", dtype="float16"), record("b", "element", dtype="float16"),
               record("c", "shape"), record("d", "shape")]
    by_kind = {g.cases: g for g in failure_groups(records)}
    assert by_kind[("a", "b")].contrasts == (Contrast("dtype", "float16", 1.0, 0.0, "other failures"),)
    assert by_kind[("a", "b")].trigger == "100% dtype float16 (0% of other failures)"
    [alone] = failure_groups(records[:2])
    assert alone.contrasts == ()
    assert alone.trigger == "every case of this backend fails this way: nothing to contrast with"


def test_groups_form_whatever_a_hand_edited_file_holds():
    odd = [{"case": "a", "backend": "b", "status": "fail", "kind": "element",
            "parameters": {"input": "1x2", "channel_multiplier": "two", "strides": [0], "padding": 5}},
           {"case": "c", "backend": "b", "status": "pass", "parameters": None}]
    [group] = failure_groups(odd)  # features that cannot be read are left out, never an exception
    assert group.cases == ("a",) and group.pattern == "elements over their limit"
