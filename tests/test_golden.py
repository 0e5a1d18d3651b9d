"""Golden references: built once with TensorFlow, then used where TensorFlow is not installed."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from conformance.golden import GoldenStore, golden_key
from conformance.loader import load_cases
from tests.conftest import BANK
from tests.test_cli import cli

NO_TENSORFLOW = """
import sys


class HideTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError("No module named 'tensorflow' (hidden for this test)")
        return None


sys.meta_path.insert(0, HideTensorFlow())
"""


@pytest.fixture
def small_bank(case_file) -> Path:
    return case_file("""
        sweeps:
          - base: {input: [1, 6, 5, 3], kernel: [3, 3], channel_multiplier: 2, out_channels: 4}
            grid:
              padding: [SAME, VALID]
              dtype: [float16, bfloat16, float32]
        cases:
          - {input: [1, 5, 5, 2], kernel: [3, 3], channel_multiplier: 1, out_channels: 2, padding: SAME,
             strides: [2, 2], rates: [2, 2], expect: error}
        """)


def without_tensorflow(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import tensorflow` fails as if it were not installed."""
    hider = tmp_path / "hide_tf"
    hider.mkdir()
    (hider / "sitecustomize.py").write_text(NO_TENSORFLOW)
    return {**os.environ, "PYTHONPATH": str(hider)}


def results(folder: Path) -> dict[str, dict]:
    return {r["case"]: r for r in json.loads((folder / "results.json").read_text())["results"]}


def test_goldens_let_a_machine_without_tensorflow_conform(small_bank, tmp_path):
    assert cli("golden", "build", "--cases", str(small_bank), "--out", "gold", cwd=tmp_path).returncode == 0
    env = without_tensorflow(tmp_path)
    plain = cli("run", "--cases", str(small_bank), "--out", "plain", cwd=tmp_path, env=env)
    assert plain.returncode == 2 and "TensorFlow is not installed" in plain.stderr
    done = cli("run", "--cases", str(small_bank), "--reference", "golden", "--golden", "gold", "--out", "out",
               cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    found = results(tmp_path / "out")
    assert len(found) == 7 and {r["status"] for r in found.values()} == {"pass"}
    assert {r["reference_status"] for r in found.values() if r["expect"] == "result"} == {"ok"}


def test_missing_or_corrupted_entries_are_errors_never_passes(small_bank, tmp_path):
    assert cli("golden", "build", "--cases", str(small_bank), "--out", "gold", cwd=tmp_path).returncode == 0
    cases = load_cases([small_bank])
    store = GoldenStore(tmp_path / "gold")
    corrupted, missing = store.paths(cases[0])[0], store.paths(cases[1])[1]
    data = bytearray(corrupted.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    missing.unlink()
    done = cli("run", "--cases", str(small_bank), "--reference", "golden", "--golden", "gold", "--out", "out",
               cwd=tmp_path)
    assert done.returncode == 1
    found = results(tmp_path / "out")
    assert found[cases[0].id]["status"] == "error" and "checksum mismatch" in found[cases[0].id]["message"]
    assert found[cases[1].id]["status"] == "error" and "no golden entry" in found[cases[1].id]["message"]
    assert sum(r["status"] == "pass" for r in found.values()) == 5


def test_entries_are_addressed_by_what_is_computed_not_by_labels(small_bank):
    case = load_cases([small_bank])[0]
    relabelled = dataclasses.replace(case, tags=("x",), description="d")
    assert golden_key(relabelled) == golden_key(case)
    assert golden_key(dataclasses.replace(case, seed=1)) != golden_key(case)
    assert golden_key(dataclasses.replace(case, name="renamed")) != golden_key(case)  # the id seeds the data


def test_cases_that_differ_only_by_name_have_entries_of_their_own(case_file, tmp_path):
    """Same parameters, different names: different ids, so different data and different references."""
    cases = case_file("""
        cases:
          - {input: [1, 6, 5, 3], kernel: [3, 3], channel_multiplier: 2, out_channels: 4, padding: SAME}
          - {input: [1, 6, 5, 3], kernel: [3, 3], channel_multiplier: 2, out_channels: 4, padding: SAME,
             name: again}
        """)
    assert cli("golden", "build", "--cases", str(cases), "--out", "gold", cwd=tmp_path).returncode == 0
    done = cli("run", "--cases", str(cases), "--reference", "golden", "--golden", "gold", "--out", "out",
               cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["status"] for r in results(tmp_path / "out").values()] == ["pass", "pass"]


def test_every_case_of_the_bank_has_its_own_entry():
    bank = load_cases([BANK])
    assert len({golden_key(c) for c in bank}) == len(bank)


def test_concurrent_builders_leave_only_whole_entries(small_bank, tmp_path):
    import subprocess
    import sys

    builders = [subprocess.Popen([sys.executable, "-m", "conformance", "golden", "build", "--cases", str(small_bank),
                                  "--out", "gold"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                for _ in range(3)]
    assert all(b.wait(timeout=300) == 0 for b in builders)
    assert not [p for p in (tmp_path / "gold").rglob(".*")]  # no temporary file left behind
    done = cli("run", "--cases", str(small_bank), "--reference", "golden", "--golden", "gold", "--out", "out",
               cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
