"""The command line and the pytest plugin, run as a user runs them (in a subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import BANK, SMALL_BANK, SMALL_CASE, WRONG_BACKEND, cli, cli_here

# Runs whose point is the harness's mechanics (shards, resume, merge, reproducers, the plugin) are judged
# against the oracle: no TensorFlow process to start. TensorFlow stays where it is what is checked.
ORACLE = ("--reference", "oracle")


def test_run_passes_and_writes_reports(small, tmp_path):
    done = cli("run", "--cases", str(small), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CONFORMS" in done.stdout
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["summary"]["statuses"] == {"pass": 2}
    record = document["results"][1]
    for key in ("case", "backend", "status", "parameters", "metrics", "reference_status", "reproducer"):
        assert key in record
    assert {"max_abs_error", "max_rel_error", "max_error_in_limits", "worst_index",
            "tf_max_error_in_limits"} <= set(record["metrics"])
    header, *journal = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert json.loads(header)["header"]["backends"] == ["numpy"]
    assert sorted(json.loads(line)["case"] for line in journal) == [r["case"] for r in document["results"]]
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    assert suite.find("testsuite").get("tests") == "2"


def test_nonconforming_backend_exits_1_with_a_reproducer(small, tmp_path):
    (tmp_path / "wrong.py").write_text(WRONG_BACKEND)
    done = cli_here("run", "--cases", str(small), "--backend", "wrong.py:off_by_a_bit", *ORACLE, "--out", "out",
               cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DOES NOT CONFORM" in done.stdout
    reproducer = next(line.strip() for line in done.stdout.splitlines()
                      if line.strip().startswith("sepconv-conformance run"))
    assert "--id n1_h6w5_c3_k3x3_m2_o4_s2x1_r1x1_SAME_NHWC_float32" in reproducer
    assert "--reference oracle" in reproducer  # the run's options come along
    # The error maps go to results.json (and the HTML report), not into junit.xml's result property.
    failed = next(r for r in json.loads((tmp_path / "out" / "results.json").read_text())["results"]
                  if r["status"] == "fail")
    assert failed["details"]
    properties = [json.loads(p.get("value")) for p in ET.parse(tmp_path / "out" / "junit.xml").iter("property")]
    assert any(p["status"] == "fail" and p["metrics"] for p in properties)
    assert all(p["details"] == {} for p in properties)
    # The reproducer runs that case alone.
    again = cli_here(*reproducer.split()[1:], "--out", "again", cwd=tmp_path)
    assert again.returncode == 1
    assert json.loads((tmp_path / "again" / "results.json").read_text())["summary"]["total"] == 1


@pytest.mark.parametrize("args, message", [
    (["--backend", "no_such_module:fn"], "cannot be imported"),
    (["--backend", "numpy:no_such_function"], "no callable"),
])
def test_usage_errors_exit_2_without_traceback(small, tmp_path, args, message):
    done = cli_here("run", "--cases", str(small), "--out", "out", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_invalid_case_file_exits_2_naming_file_line_and_field(case_file, tmp_path):
    bad = case_file(SMALL_CASE.replace("padding: SAME", "padding: SAME\n    dtype: float8"), "bad.yaml")
    for command in ("run", "validate"):
        done = cli_here(command, "--cases", str(bad), cwd=tmp_path)
        assert done.returncode == 2
        assert f"{bad}:7: dtype: expected one of" in done.stderr
        assert "Traceback" not in done.stderr


def test_list_prints_ids_and_origins(small, tmp_path):
    done = cli_here("list", "--cases", str(small), cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.splitlines()[0] == f"n1_h6w5_c3_k3x3_m2_o4_s2x1_r1x1_SAME_NHWC_float32\t{small}:2"


def test_skip_tag_leaves_out_the_tagged_cases_of_list_golden_and_export(case_file, tmp_path):
    cases = case_file(SMALL_CASE + "    tags: [big]\n" + SMALL_CASE.split("cases:\n", 1)[1].replace("SAME", "VALID"))
    listed = cli_here("list", "--cases", str(cases), "--skip-tag", "big", cwd=tmp_path)
    assert listed.returncode == 0 and [line.split("\t")[0] for line in listed.stdout.splitlines()] == [
        "n1_h6w5_c3_k3x3_m2_o4_s2x1_r1x1_VALID_NHWC_float32"]
    built = cli("golden", "build", "--cases", str(cases), "--skip-tag", "big", "--out", "gold", cwd=tmp_path)
    assert built.returncode == 0 and built.stdout.startswith("1 golden entries"), built.stdout + built.stderr
    exported = cli_here("export", "--cases", str(cases), "--skip-tag", "big", "--reference", "oracle", "--out",
                        "pack", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    manifest = json.loads((tmp_path / "pack" / "manifest.json").read_text())
    assert [c["id"] for c in manifest["cases"]] == ["n1_h6w5_c3_k3x3_m2_o4_s2x1_r1x1_VALID_NHWC_float32"]


def test_pytest_plugin_runs_case_files_with_xdist(small, tmp_path):
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--backend", "numpy",
                           "--cases", str(small), "-n", "2", "--report-dir", "out", "-k", "NHWC", *ORACLE],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    assert json.loads((tmp_path / "out" / "results.json").read_text())["summary"]["total"] == 2


def test_plugin_is_inert_without_backend(small, tmp_path):
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
                          cwd=small.parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 5  # a YAML file is not a test unless --backend asks for it


def test_shards_partition_the_bank_deterministically(tmp_path):
    from conformance.cases.loader import load_cases
    from conformance.execution.plugin import in_shard

    ids = [c.id for c in load_cases([BANK])]
    shards = [[i for i in ids if in_shard(i, (k, 3))] for k in (1, 2, 3)]
    assert sorted(sum(shards, [])) == sorted(ids)  # every case in exactly one shard
    assert all(len(s) > len(ids) / 6 for s in shards)  # and roughly balanced
    assert shards[0] == [i for i in ids if in_shard(i, (1, 3))]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with SMALL_BANK in cases.yaml, and in shard1 and shard2 the results of `run --shard 1/2` and
    `--shard 2/2` on it (shared: the shard test reads them, the merge test merges copies)."""
    folder = tmp_path_factory.mktemp("shards")
    (folder / "cases.yaml").write_text(SMALL_BANK)
    for k in (1, 2):
        done = cli_here("run", "--cases", "cases.yaml", "--shard", f"{k}/2", *ORACLE, "--out", f"shard{k}", cwd=folder)
        assert done.returncode in (0, 2), done.stdout + done.stderr  # 2: this shard holds no case
    return folder


def test_shard_option_runs_one_shard_and_rejects_bad_values(shards, tmp_path):
    counts = [json.loads((shards / f"shard{k}" / "results.json").read_text())["summary"]["total"] for k in (1, 2)]
    assert sum(counts) == 2
    done = cli_here("run", "--cases", str(shards / "cases.yaml"), "--shard", "3/2", "--out", "bad", cwd=tmp_path)
    assert done.returncode == 2 and "expected K/N" in done.stderr + done.stdout


KILLED_MIDWAY = '''
import os, signal, time
from pathlib import Path
from conformance.impls.numpy_backend import separable_conv2d

CALLS = Path(__file__).with_name("calls")

def _state_and_parent(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def _run_pid():
    """The run: this child's parent, or (forked by multiprocessing's fork server) its parent's parent."""
    pid = os.getppid()
    while b"conformance\\x00run" not in Path(f"/proc/{pid}/cmdline").read_bytes():
        pid = _state_and_parent(pid)[1]
    return pid


def dies_once(*args, **kwargs):
    calls = int(CALLS.read_text()) if CALLS.exists() else 0
    CALLS.write_text(str(calls + 1))
    if calls == 2 and not Path(__file__).with_name("survived").exists():
        Path(__file__).with_name("survived").write_text("")
        run = _run_pid()
        os.kill(run, signal.SIGKILL)  # `kill -9` on the run (this backend runs in its child)
        for _ in range(6000):  # no answer before the run is gone (dead: a zombie, or reaped)
            try:
                if _state_and_parent(run)[0] == "Z":
                    break
            except FileNotFoundError:
                break
            time.sleep(0.01)
    return separable_conv2d(*args, **kwargs)
'''


def test_a_killed_run_resumes_without_losing_or_repeating_a_case(tmp_path):
    from conformance.cases.loader import load_cases

    (tmp_path / "backend.py").write_text(KILLED_MIDWAY)
    args = ["run", "--cases", str(BANK / "geometry.yaml"), "--backend", "backend.py:dies_once", "-k", "edge",
            *ORACLE, "--out", "out"]
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == -9, first.stdout + first.stderr
    header, *journal = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert len(journal) == 2  # the two results before the kill were kept
    second = cli(*args, "--resume", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    records = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    ids = [r["case"] for r in records]
    assert len(ids) == len(set(ids)) and set(json.loads(line)["case"] for line in journal) < set(ids)
    selected = {c.id for c in load_cases([BANK / "geometry.yaml"]) if "edge" in c.tags or "edge" in c.id}
    assert set(ids) == selected and len(ids) > 3
    third = cli(*args, "--resume", cwd=tmp_path)  # nothing left to run: judged by the journal
    assert third.returncode == 0, third.stdout + third.stderr


def test_resumed_failures_keep_the_gate_red(small, tmp_path):
    (tmp_path / "wrong.py").write_text(WRONG_BACKEND)
    args = ["run", "--cases", str(small), "--backend", "wrong.py:off_by_a_bit", *ORACLE, "--out", "out"]
    assert cli_here(*args, cwd=tmp_path).returncode == 1
    again = cli_here(*args, "--resume", cwd=tmp_path)
    assert again.returncode == 1, again.stdout + again.stderr
    assert json.loads((tmp_path / "out" / "results.json").read_text())["summary"]["total"] == 2


def test_merge_combines_shards_and_refuses_mismatched_or_overlapping_ones(shards, case_file, tmp_path):
    for k in (1, 2):
        shutil.copytree(shards / f"shard{k}", tmp_path / f"shard{k}")
    done = cli_here("merge", "shard1", "shard2", "--out", "merged", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert merged["summary"]["total"] == 2 and merged["run"]["merged_from"] == ["shard1", "shard2"]
    assert ET.parse(tmp_path / "merged" / "junit.xml").getroot().find("testsuite").get("tests") == "2"
    assert (tmp_path / "merged" / "report.html").is_file()
    overlapping = cli_here("merge", "shard1", "shard2", "shard2", "--out", "again", cwd=tmp_path)
    assert overlapping.returncode == 2 and "are both shard 2/2" in overlapping.stderr
    other = case_file(SMALL_CASE.replace("[2, 1]", "[1, 1]"), "other.yaml")
    cli_here("run", "--cases", str(other), *ORACLE, "--out", "other", cwd=tmp_path)
    mismatched = cli_here("merge", "shard1", "other", "--out", "bad", cwd=tmp_path)
    assert mismatched.returncode == 2 and "differ in bank_digest" in mismatched.stderr


def test_export_writes_a_vector_pack(small, tmp_path):
    done = cli_here("export", "--cases", str(small), "--out", "pack", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    manifest = json.loads((tmp_path / "pack" / "manifest.json").read_text())
    assert len(manifest["cases"]) == 2
    valid = next(e for e in manifest["cases"] if e["expect"] == "result")
    assert {"input", "depthwise_filter", "pointwise_filter", "tensorflow", "oracle", "bound"} <= set(valid["files"])
    for entry in manifest["cases"]:
        for file in entry["files"].values():
            assert (tmp_path / "pack" / file["path"]).is_file()


def test_a_listing_whose_reader_goes_away_ends_quietly(tmp_path):
    # `sepconv-conformance list | head -1`: the reader closes the pipe; the listing is not an error. (The
    # bank's listing is larger than a pipe's buffer, so the write after the close does meet a closed pipe.)
    process = subprocess.Popen([sys.executable, "-m", "conformance", "list"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline()
    process.stdout.close()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0 and b"BrokenPipe" not in stderr, stderr.decode()
