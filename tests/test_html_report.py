"""The HTML report: error maps from compare, the page's data and escaping, coverage, baseline diffs, size,
and the `report` command. Results come from real runs (conformance.execution.session.run_suite) of real backends:
the NumPy backend, mutants from conformance.impls.mutants, and small backend files that misbehave on purpose."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance import cli
from conformance.execution.config import RunConfig
from conformance.execution.session import run_suite
from conformance.judging import diagnostics
from conformance.judging.compare import compare
from conformance.judging.tolerance import UNIT_ROUNDOFF, Tolerance
from conformance.reporting import diagnosis, html_report
from conformance.reporting.baseline import CLOSER_FACTOR, baseline_diff
from conformance.reporting.diagnosis import failure_groups
from conformance.result import FAILING_STATUSES, STATUSES
from tests.conftest import BASELINE_BACKEND, BASELINE_CASES, XSS, needs_tensorflow, write_run


def embedded(page: str) -> dict[str, Any]:
    """The page's data block, decoded as the browser decodes it (inflated, then parsed)."""
    assert page.count(html_report.DATA_BLOCK) == 1, "no data block, or more than one"
    return html_report.read_embedded(page)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("report")
    return folder / "out", write_run(folder)


def result(document: dict[str, Any], backend_part: str, case_part: str) -> dict[str, Any]:
    [record] = [r for r in document["results"] if backend_part in r["backend"] and case_part in r["case"]]
    return record


# --- error maps (compare + diagnostics) --------------------------------------------------------------
def test_a_dropped_last_channel_is_located_exactly_in_both_layouts(run):
    _, document = run
    nhwc = result(document, "last_channel_dropped", "n2_h7w6")["details"]
    nchw = result(document, "last_channel_dropped", "NCHW_float16")["details"]
    for details, channels in ((nhwc, 6), (nchw, 4)):
        assert details["pattern"]["C"] == {"count": 1, "of": channels, "ranges": [[channels - 1, channels - 1]],
                                           "more_ranges": 0}
        assert all(details["pattern"][axis]["count"] == details["pattern"][axis]["of"] for axis in "NHW")
        profile = [float(v) for v in details["profiles"]["C"]["values"]]
        assert profile[-1] > 1 and max(profile[:-1]) <= 1
        [only] = details["channel_heatmaps"]  # the one channel with an error, mapped alone
        assert only["channel"] == channels - 1 and min(float(v) for v in only["values"]) > 1
    assert nchw["layout"] == "NCHW" and nchw["shape"] == [1, 8, 7, 4]  # logical NHWC, whatever the layout
    assert all(w["index"][1] == 3 for w in nchw["worst"])  # the worst elements keep NCHW indices


def test_passing_results_carry_no_maps_and_exact_cases_use_the_bound_scale(run):
    _, document = run
    assert all(not r["details"] for r in document["results"] if r["status"] not in FAILING_STATUSES)
    exact = result(document, "last_channel_dropped", "integers")["details"]
    assert exact["scale"] == "bound" and exact["histogram"]["low"] == -8.0
    assert result(document, "last_channel_dropped", "n2_h7w6")["details"]["scale"] == "limit"


def _maps(shape: tuple[int, ...], wrong: tuple[slice, ...], data_format: str = "NHWC") -> dict[str, Any]:
    oracle = np.random.default_rng(3).standard_normal(shape)
    actual = oracle.astype(np.float32)
    actual[wrong] *= 1.01
    tolerance = Tolerance(UNIT_ROUNDOFF["float32"], 2.0**-149, 20)
    verdict = compare(actual, oracle, oracle, np.abs(oracle) + 1, tolerance, 1, np.dtype(np.float32), data_format)
    assert not verdict.passed
    return verdict.details


def test_only_the_last_row_and_only_high_channels_read_at_a_glance():
    last_row = _maps((2, 9, 7, 5), (slice(None), slice(8, 9)))
    assert last_row["pattern"]["H"]["ranges"] == [[8, 8]] and last_row["pattern"]["W"]["count"] == 7
    assert diagnosis.location(last_row["pattern"]) == "rows last only"
    heat = np.array([float(v) for v in last_row["heatmap"]["values"]]).reshape(9, 7)
    assert heat[8].min() > 1 and heat[:8].max() <= 1
    high = _maps((1, 4, 4, 128), (slice(None), slice(None), slice(None), slice(64, None)))
    assert high["pattern"]["C"]["ranges"] == [[64, 127]]
    assert diagnosis.location(high["pattern"]) == "channels >= 64 (of 128)"
    edges = _maps((1, 6, 8, 3), (slice(None), slice(None), [0, 7]))
    assert diagnosis.location(edges["pattern"]) == "columns first and last only"


def test_a_wrong_border_is_named_as_such(tmp_path, case_file):
    # replicate_padding reads padded positions from the nearest edge pixel: only a 1-wide ring is wrong.
    cases = case_file("""
        cases:
          - {input: [1, 14, 13, 2], kernel: [3, 3], channel_multiplier: 1, out_channels: 2, padding: SAME}
    """)
    run_suite(RunConfig(cases=[str(cases)], backends=["conformance.impls.mutants:replicate_padding"],
                        out=str(tmp_path / "out"), reference="oracle", no_isolate=True, quiet=True))
    document = html_report.load_results(tmp_path / "out" / "results.json")
    [record] = document["results"]
    assert record["status"] == "fail" and record["details"]["border"] == 1
    heat = np.array([float(v) for v in record["details"]["heatmap"]["values"]]).reshape(14, 13)
    assert heat[1:-1, 1:-1].max() <= 1 and min(heat[0].min(), heat[-1].min(), heat[:, 0].min(), heat[:, -1].min()) > 1
    assert diagnosis.location(record["details"]["pattern"], 1) == "only a border 1 wide around rows and columns"
    assert "only a border 1 wide" in html_report.render_report(document)
    middle = _maps((1, 9, 9, 3), (slice(None), slice(4, 5), slice(4, 5)))  # one wrong pixel is no border
    assert middle["border"] is None


def test_maps_of_a_large_output_stay_within_their_limits():
    details = _maps((1, 300, 100, 90), (slice(None), slice(None, None, 7)), "NCHW")  # every 7th channel
    assert details["shape"] == [1, 100, 90, 300]
    assert max(details["heatmap"]["rows"], details["heatmap"]["columns"]) <= diagnostics.HEATMAP_MAX
    assert all(len(p["values"]) <= diagnostics.PROFILE_MAX for p in details["profiles"].values())
    channels = details["pattern"]["C"]
    assert len(channels["ranges"]) == diagnostics.RANGES_MAX and channels["more_ranges"] > 0
    assert len(details["worst"]) == diagnostics.WORST_DETAILS
    assert [m["channel"] % 7 for m in details["channel_heatmaps"]] == [0] * diagnostics.CHANNEL_MAPS
    assert all(max(m["rows"], m["columns"]) <= diagnostics.CHANNEL_HEATMAP_MAX for m in details["channel_heatmaps"])
    assert len(json.dumps(details)) < 20_000


# --- the page -------------------------------------------------------------------------------------
def test_every_string_from_cases_backends_and_errors_is_escaped(run):
    folder, _ = run
    page = html_report.write_report(folder).read_text(encoding="utf-8")
    assert "<img" not in page and "window.__xss" not in page
    data = embedded(page)  # the JSON survives its escaping intact
    evil = [r for r in data["rows"] if r["backend"].endswith("evil.py:conv") and r["status"] == "error"]
    assert evil and all("<script>window.__xss = 2</script>" in r["message"] for r in evil)
    assert any(p.get("description") == XSS for p in data["cases"].values())
    assert page.count("<script type=") == 1  # the data is embedded once (the page's own script has no type)
    assert not re.search(r'(src|href)="https?:', page)  # nothing to fetch


def test_the_data_block_cannot_be_closed_by_any_string_and_decodes_to_the_data():
    data = {"a": "</script><!-- & \u2028 >", "b": float("inf")}
    text = html_report.embedded_data(data)
    assert not set("<>&\u2028\"'") & set(text)  # base64 only
    assert text == html_report.embedded_data(data)  # no timestamp: the same data gives the same page
    assert html_report.read_embedded(f"{html_report.DATA_BLOCK}{text}</script>") == {"a": data["a"], "b": "inf"}


def test_the_page_holds_every_result_status_summary_and_environment(run):
    _, document = run
    page = html_report.render_report(document)
    data = embedded(page)
    assert len(data["rows"]) == len(document["results"]) == 20
    statuses = {r["status"] for r in document["results"]}
    assert {"pass", "fail", "error", "crash", "timeout"} <= statuses
    assert data["rows"][0]["status"] in FAILING_STATUSES  # the worst first
    for text in ("DOES NOT CONFORM", "conformance.impls.mutants:last_channel_dropped", document["environment"]["numpy"],
                 "reference</dt><dd>oracle", "output channel 3 is constant (0)"):  # a group's example
        assert text in page, text
    assert all("reproducer" in r for r in data["rows"] if r["status"] != "pass")


def test_every_status_renders(run):
    # The renderer must take any status results.json may hold, including those this run did not produce.
    _, document = run
    template = result(document, "last_channel_dropped", "n2_h7w6")
    records = [dict(template, status=status, case=f"{template['case']}_{status}") for status in STATUSES]
    page = html_report.render_report(dict(document, results=records))
    assert sorted(r["status"] for r in embedded(page)["rows"]) == sorted(STATUSES)
    summary = page.split('id="summary"')[1].split("</table>")[0]  # one backend: a count of 1 per status
    assert len(re.findall(r'<td class="num( bad)?">1</td>', summary)) == len(STATUSES)
    assert len(re.findall(r'<td class="num bad">1</td>', summary)) == len(FAILING_STATUSES)


def test_coverage_shows_pass_rates_per_backend_and_the_gaps(run):
    _, document = run
    backends = document["run"]["backends"]
    table = {axis["axis"]: axis["rows"] for axis in html_report.coverage(document["results"], backends)}
    dtypes = {row["value"]: row for row in table["dtype"]}
    assert dtypes["bfloat16"]["gap"] and dtypes["float64"]["gap"] and not dtypes["float32"]["gap"]
    numpy_cell = dtypes["float32"]["cells"][backends.index("numpy")]
    assert numpy_cell == {"total": 3, "pass": 3}  # 2 valid float32 cases + the error case
    padding = {row["value"]: row for row in table["padding"]}
    assert padding["EXPLICIT"]["gap"]
    split = padding["SAME"]["cells"][backends.index("conformance.impls.mutants:same_split_before")]
    assert split["failing"] == 1  # only the 2x2 SAME case splits an odd padding
    channels = {row["value"]: row for row in table["out_channels % 8"]}  # the axes hardware bugs live on
    dropped = backends.index("conformance.impls.mutants:last_channel_dropped")
    assert channels["!= 0"]["cells"][dropped]["failing"] == 3 and set(channels) == {"!= 0"}
    assert {row["value"] for row in table["rows of padding"]} <= {"none", "odd", "even"}
    assert "not exercised" in html_report.render_report(document)


@needs_tensorflow
def test_tensorflow_reference_metrics_reach_the_page(tmp_path, case_file):
    cases = case_file("""
        cases:
          - input: [1, 6, 5, 3]
            kernel: [3, 3]
            channel_multiplier: 2
            out_channels: 4
            padding: SAME
    """)
    code = run_suite(RunConfig(cases=[str(cases)], backends=["numpy", "conformance.impls.mutants:last_channel_dropped"],
                                out=str(tmp_path / "out"), reference="tensorflow", quiet=True))
    assert code == 1
    data = embedded(html_report.write_report(tmp_path / "out").read_text(encoding="utf-8"))
    assert all(0 <= r["metrics"]["tf_max_error_in_limits"] <= 1 for r in data["rows"])
    assert {r["reference"] for r in data["rows"]} == {"tensorflow"}


# --- baseline ---------------------------------------------------------------------------------------
def test_baseline_shows_new_failures_fixes_and_cases_closer_to_their_limit(tmp_path, case_file):
    cases = case_file(BASELINE_CASES)
    backend = tmp_path / "backend.py"
    for mode in ("before", "after"):
        backend.write_text(BASELINE_BACKEND.format(mode=mode), encoding="utf-8")
        # Isolated: each run imports the backend file afresh in a child process (same path, same name).
        run_suite(RunConfig(cases=[str(cases)], backends=[f"{backend}:conv"], out=str(tmp_path / mode),
                             reference="oracle", quiet=True))
    before, after = (html_report.load_results(tmp_path / m / "results.json") for m in ("before", "after"))
    diff = baseline_diff([dict(r) for r in after["results"]], before)
    assert [e["case"].split("_")[2] for e in diff["newly_failing"]] == ["c3"]
    assert [e["case"].split("_")[2] for e in diff["fixed"]] == ["c2"]
    assert [e["case"].split("_")[2] for e in diff["closer"]] == ["c64"]
    assert diff["closer"][0]["margin_after"] > diff["closer"][0]["margin_before"] * CLOSER_FACTOR
    assert cli.main(["report", str(tmp_path / "after"), "--baseline", str(tmp_path / "before")]) == 0
    page = (tmp_path / "after" / "report.html").read_text(encoding="utf-8")
    assert "1 newly failing" in page and "1 fixed" in page and 'id="diff-closer"' in page
    assert {r.get("change") for r in embedded(page)["rows"]} == {"newly failing", "fixed", "closer to limit"}


# --- size -------------------------------------------------------------------------------------------
def test_a_report_of_3000_results_stays_a_few_megabytes(run, tmp_path, case_file):
    # The worst case for size: every other result failing with maps at their largest (a 64x64x256 output:
    # a full 32x32 heatmap and 128-bin profiles). Real records of a real run, copied under new case ids.
    cases = case_file("""
        cases:
          - {input: [1, 64, 64, 32], kernel: [3, 3], channel_multiplier: 1, out_channels: 256, padding: SAME}
    """)
    run_suite(RunConfig(cases=[str(cases)], backends=["numpy", "conformance.impls.mutants:last_channel_dropped"],
                         out=str(tmp_path / "out"), reference="oracle", no_isolate=True, quiet=True))
    document = html_report.load_results(tmp_path / "out" / "results.json")
    passing, failing = sorted(document["results"], key=lambda r: r["status"] != "pass")
    assert passing["status"] == "pass" and failing["details"]["heatmap"]["rows"] == diagnostics.HEATMAP_MAX
    records = [dict(record, case=f"{record['case']}_{i}") for i in range(1500) for record in (passing, failing)]
    page = html_report.render_report(dict(document, results=records))
    data = embedded(page)
    assert len(data["rows"]) == 3000
    assert len(page.encode()) < 6_500_000  # about 2 kB a row, paths of the temp folder included
    detailed = sum("details" in r for r in data["rows"])
    assert 0 < detailed <= html_report.MAX_DETAILED
    assert sum("details_omitted" in r for r in data["rows"]) == 1500 - detailed


# --- the command ------------------------------------------------------------------------------------
def test_report_command_writes_the_page_and_rejects_bad_folders(run, tmp_path, capsys):
    folder, _ = run
    out = tmp_path / "elsewhere" / "page.html"
    assert cli.main(["report", str(folder), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert not list(out.parent.glob("*.tmp"))  # written atomically
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    assert f"{tmp_path / 'missing' / 'results.json'}: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    for text, reason in (("{", "not valid JSON"), ('{"results": {}}', "not a results file"),
                         ('{"results": [{"case": 1}]}', "results[0]")):
        (bad / "results.json").write_text(text, encoding="utf-8")
        assert cli.main(["report", str(folder), "--baseline", str(bad)]) == 2
        error = capsys.readouterr().err
        assert str(bad / "results.json") in error and reason in error and "Traceback" not in error


# --- failures grouped by kind (Result.kind), never by what their messages say -----------------------------
def test_failure_groups_go_by_kind_not_by_message():
    pattern = {axis: {"count": 2, "of": 2, "ranges": [[0, 1]], "more_ranges": 0} for axis in "NHWC"}
    statistics = {"kind": "statistics", "pattern": pattern}

    def record(case: str, kind: str | None, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
        fields = {"case": case, "backend": "b", "status": "fail", "message": message, "details": details or {}}
        return fields if kind is None else fields | {"kind": kind}
    records = [
        record("a", "bias", "error energy, says the reworded message", statistics),
        record("b", "energy", "a message that mentions a bias", statistics),
        record("c", "rms", "anything", statistics),
        record("d", None, "systematic bias: an old record", statistics),
        record("e", "shape", "shape [1, 2, 2, 1], expected [1, 3, 3, 1]"),
        record("f", "shape", "reworded: the output has the wrong shape"),
        record("g", None, "shape [1, 2, 2, 1], expected [1, 3, 3, 1]"),
        record("h", "a kind of a newer version", "whatever"),
    ]
    groups = {g.pattern: g.count for g in failure_groups(records)}
    assert groups["statistics only: a systematic bias"] == 1
    assert groups["statistics only: too much error energy"] == 1
    assert groups["statistics only: too much error energy (root mean square)"] == 1
    assert groups["statistics only: a tensor-level check failed (bias or error energy)"] == 1  # no kind: not guessed
    assert groups["wrong output shape"] == 2  # two wordings, one kind
    assert groups["shape [1, 2, 2, 1], expected [1, 3, 3, 1]"] == 1  # an old record: as it was shown
    assert groups["a kind of a newer version"] == 1
    rows = html_report.page_data([dict(r, status="fail") for r in records], baseline=False)["rows"]
    assert [r.get("kind") for r in rows] == [r.get("kind") for r in records]  # the page gets the kind too


def test_nonfinite_and_exact_integer_failures_come_first():
    def record(case: str, **metrics: object) -> dict[str, object]:
        return {"case": case, "backend": "b", "status": "fail", "kind": "element", "message": "m", "metrics": metrics}
    document = {"results": [record("a_finite", max_error_in_limits=50.0),
                            record("b_nonfinite", max_error_in_limits=0.5, nonfinite_mismatches=2),
                            record("c_exact", max_error_in_limits="inf")], "run": {}}
    order = [row["case"] for row in embedded(html_report.render_report(document))["rows"]]
    assert order == ["b_nonfinite", "c_exact", "a_finite"]  # NaN/Inf as bad as it gets, whatever its finite max
