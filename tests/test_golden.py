"""Golden references: built once with TensorFlow, then used where TensorFlow is not installed."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conformance.cases.case import Case
from conformance.cases.data import materialize
from conformance.cases.loader import load_cases
from conformance.judging.golden import GoldenError, GoldenStore, build_goldens, golden_key, version_note
from conformance.judging.oracle import compute_oracle
from conformance.judging.reference import Reference
from tests.conftest import BANK, REPO, OracleAsTensorFlow, cli, cli_here

NO_TENSORFLOW = """
import sys


class HideTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError("No module named 'tensorflow' (hidden for this test)")
        return None


sys.meta_path.insert(0, HideTensorFlow())
"""


GOLDEN_BANK = """
sweeps:
  - base: {input: [1, 6, 5, 3], kernel: [3, 3], channel_multiplier: 2, out_channels: 4}
    grid:
      padding: [SAME, VALID]
      dtype: [float16, bfloat16, float32]
cases:
  - {input: [1, 5, 5, 2], kernel: [3, 3], channel_multiplier: 1, out_channels: 2, padding: SAME,
     strides: [2, 2], rates: [2, 2], expect: error}
"""
# A builder for the race: twenty builds of the bank named by argv[1] into gold/, TensorFlow stood in for.
RACING_BUILDER = """
import sys
from pathlib import Path

from conformance.cases.loader import load_cases
from conformance.judging.golden import build_goldens
from tests.conftest import OracleAsTensorFlow

for _ in range(20):
    build_goldens(load_cases([sys.argv[1]]), Path("gold"), OracleAsTensorFlow())
"""
# A case that differs from GOLDEN_BANK's SAME float32 case by its name only; SAME_BUT_NAMED holds both.
NAMED = """
cases:
  - {input: [1, 6, 5, 3], kernel: [3, 3], channel_multiplier: 2, out_channels: 4, padding: SAME, name: again}
"""
SAME_BUT_NAMED = """
cases:
  - {input: [1, 6, 5, 3], kernel: [3, 3], channel_multiplier: 2, out_channels: 4, padding: SAME}
  - {input: [1, 6, 5, 3], kernel: [3, 3], channel_multiplier: 2, out_channels: 4, padding: SAME, name: again}
"""


@pytest.fixture
def small_bank(case_file) -> Path:
    return case_file(GOLDEN_BANK)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `golden build` (TensorFlow) for the tests that need real entries, which work on copies of it:
    GOLDEN_BANK's cases and NAMED's, built together into gold/."""
    folder = tmp_path_factory.mktemp("built")
    (folder / "bank.yaml").write_text(GOLDEN_BANK)
    (folder / "named.yaml").write_text(NAMED)
    done = cli("golden", "build", "--cases", "bank.yaml", "--cases", "named.yaml", "--out", "gold", cwd=folder)
    assert done.returncode == 0 and done.stdout.startswith("8 golden entries"), done.stdout + done.stderr
    return folder / "gold"


def copy_of(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "gold"))


def without_tensorflow(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import tensorflow` fails as if it were not installed."""
    hider = tmp_path / "hide_tf"
    hider.mkdir()
    (hider / "sitecustomize.py").write_text(NO_TENSORFLOW)
    return {**os.environ, "PYTHONPATH": str(hider)}


def results(folder: Path) -> dict[str, dict]:
    return {r["case"]: r for r in json.loads((folder / "results.json").read_text())["results"]}


def test_goldens_let_a_machine_without_tensorflow_conform(small_bank, built, tmp_path):
    copy_of(built, tmp_path)
    env = without_tensorflow(tmp_path)
    plain = cli("run", "--cases", str(small_bank), "--out", "plain", cwd=tmp_path, env=env)
    assert plain.returncode == 2 and "TensorFlow is not installed" in plain.stderr
    done = cli("run", "--cases", str(small_bank), "--reference", "golden", "--golden", "gold", "--out", "out",
               cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    found = results(tmp_path / "out")
    assert len(found) == 7 and {r["status"] for r in found.values()} == {"pass"}
    assert {r["reference_status"] for r in found.values() if r["expect"] == "result"} == {"ok"}


def test_missing_or_corrupted_entries_are_errors_never_passes(small_bank, built, tmp_path):
    copy_of(built, tmp_path)
    cases = load_cases([small_bank])
    store = GoldenStore(tmp_path / "gold")
    corrupted, missing = store.paths(cases[0])[0], store.paths(cases[1])[1]
    data = bytearray(corrupted.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    missing.unlink()
    done = cli_here("run", "--cases", str(small_bank), "--reference", "golden", "--golden", "gold", "--out", "out",
                    cwd=tmp_path)
    assert done.returncode == 2 and "UNUSABLE INPUT on 2 results" in done.stdout  # a bad file, not the backend
    found = results(tmp_path / "out")
    assert {found[c.id]["fault"] for c in cases[:2]} == {"input"}
    assert found[cases[0].id]["status"] == "error" and "checksum mismatch" in found[cases[0].id]["message"]
    assert found[cases[1].id]["status"] == "error" and "no golden entry" in found[cases[1].id]["message"]
    assert sum(r["status"] == "pass" for r in found.values()) == 5


def test_entries_are_addressed_by_what_is_computed_not_by_labels(small_bank):
    case = load_cases([small_bank])[0]
    relabelled = dataclasses.replace(case, tags=("x",), description="d")
    assert golden_key(relabelled) == golden_key(case)
    assert golden_key(dataclasses.replace(case, seed=1)) != golden_key(case)
    assert golden_key(dataclasses.replace(case, name="renamed")) != golden_key(case)  # the id seeds the data


def test_cases_that_differ_only_by_name_have_entries_of_their_own(case_file, built, tmp_path):
    """Same parameters, different names: different ids, so different data and different references (an
    entry shared by the two would fail verification for one of them)."""
    cases = case_file(SAME_BUT_NAMED)
    copy_of(built, tmp_path)
    done = cli_here("run", "--cases", str(cases), "--reference", "golden", "--golden", "gold", "--out", "out",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["status"] for r in results(tmp_path / "out").values()] == ["pass", "pass"]


def test_every_case_of_the_bank_has_its_own_entry():
    bank = load_cases([BANK])
    assert len({golden_key(c) for c in bank}) == len(bank)


def test_concurrent_builders_leave_only_whole_entries(small_bank, tmp_path):
    """Two builders race for every entry, twenty builds each (TensorFlow stood in for: what is tested is
    how entries are written; `built` runs `golden build` with TensorFlow)."""
    import subprocess
    import sys

    builders = [subprocess.Popen([sys.executable, "-c", RACING_BUILDER, str(small_bank)], cwd=tmp_path,
                                 env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE) for _ in range(2)]
    assert all(b.wait(timeout=300) == 0 for b in builders), [b.stderr.read() for b in builders if b.stderr]
    assert not [p for p in (tmp_path / "gold").rglob(".*")]  # no temporary file left behind
    done = cli_here("run", "--cases", str(small_bank), "--reference", "golden", "--golden", "gold", "--out", "out",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "7 passed" in done.stdout, done.stdout


# --- entries checked on reading: written here without TensorFlow, so these tests stay fast ---------------


@pytest.fixture
def cases(small_bank) -> list[Case]:
    return load_cases([small_bank])


@pytest.fixture
def store(cases, tmp_path) -> GoldenStore:
    build_goldens(cases, tmp_path / "gold", OracleAsTensorFlow())
    return GoldenStore(tmp_path / "gold")


@pytest.fixture
def case(cases) -> Case:
    return next(c for c in cases if c.dtype == "float32" and not c.expect_error)


def edit_json(store: GoldenStore, case: Case, change: Callable[[dict[str, Any]], object]) -> None:
    path = store.paths(case)[1]
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def forge_npz(store: GoldenStore, case: Case, payload: bytes) -> None:
    """Replace the .npz and its checksum in the .json together, as a deliberate forger would."""
    store.paths(case)[0].write_bytes(payload)
    edit_json(store, case, lambda meta: meta.update(npz_sha256=hashlib.sha256(payload).hexdigest()))


def stored_arrays(store: GoldenStore, case: Case) -> dict[str, np.ndarray]:
    with np.load(store.paths(case)[0]) as archive:
        return dict(archive)


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def forge_arrays(store: GoldenStore, case: Case, change: Callable[[dict[str, np.ndarray]], object]) -> None:
    arrays = stored_arrays(store, case)
    change(arrays)
    forge_npz(store, case, npz(**arrays))


def read(store: GoldenStore, case: Case) -> Reference:
    return store.read(case, materialize(case))


def test_sound_entries_read_back(store, cases):
    for case in cases:
        reference = read(store, case)
        assert reference.status == "ok" and (reference.output is None) == case.expect_error


def test_a_forged_tensorflow_output_with_a_matching_checksum_is_refused(store, case):
    def forge(arrays: dict[str, np.ndarray]) -> None:  # one element off by ~1, where the limit is ~1e-6
        arrays["tensorflow"].flat[3] = float(np.float32(arrays["tensorflow"].flat[3] + 1.0))
    forge_arrays(store, case, forge)
    with pytest.raises(GoldenError, match="fails verification: TensorFlow's stored output vs the recomputed "
                                          "oracle: error .* the limit") as caught:
        read(store, case)
    assert str(store.paths(case)[0]) in str(caught.value)
    assert GoldenStore(store.root, verify=False).read(case, materialize(case)).output is not None  # form only


@pytest.mark.parametrize("name", ["oracle", "bound"])
def test_a_forged_oracle_or_bound_is_refused(store, case, name):
    def forge(arrays: dict[str, np.ndarray]) -> None:  # 1e-9 of the bound: far below any dtype's limit
        arrays[name].flat[5] += 1e-9 * arrays["bound"].flat[5]
    forge_arrays(store, case, forge)
    with pytest.raises(GoldenError, match=f"fails verification: the stored {name} is not the recomputed one: "
                                          r"1 of \d+ elements differ; first at"):
        read(store, case)


def test_oracle_drift_of_another_machine_is_accepted_and_the_recomputed_oracle_is_used(store, case):
    """Another BLAS may round the float64 oracle differently: a last-bit difference is not tampering."""
    forge_arrays(store, case, lambda arrays: arrays.update(oracle=np.nextafter(arrays["oracle"], np.inf)))
    reference = read(store, case)
    assert reference.oracle is not None
    assert np.array_equal(reference.oracle.output, compute_oracle(case, materialize(case)).output)


MALFORMED_JSON: dict[str, tuple[Callable[[dict[str, Any]], object] | str, str]] = {
    "not JSON": ("{", "not JSON"),
    "not an object": ("[1, 2]", "a JSON list, not an object"),
    "missing key": (lambda meta: meta.pop("status"), "no 'status'"),
    "wrong type": (lambda meta: meta.update(status=3), "'status' is int, expected str"),
    "metrics not an object": (lambda meta: meta.update(metrics=[]), "'metrics' is list, expected dict"),
    "versions not an object": (lambda meta: meta.update(versions="2.21"), "'versions' is str, expected dict"),
    "boolean format": (lambda meta: meta.update(format=True), "'format' is bool, expected int"),
    "other format": (lambda meta: meta.update(format=99), "format 99, this version reads format 1"),
    "unknown status": (lambda meta: meta.update(status="great"), "unknown reference status 'great'"),
    "source unfit": (lambda meta: meta.update(source="oracle"), "source 'oracle' with status 'ok'"),
}


@pytest.mark.parametrize("kind", MALFORMED_JSON)
def test_malformed_json_is_a_golden_error_naming_the_file(store, case, kind):
    change, reason = MALFORMED_JSON[kind]
    path = store.paths(case)[1]
    if isinstance(change, str):
        path.write_text(change)
    else:
        edit_json(store, case, change)
    with pytest.raises(GoldenError, match="malformed golden entry") as caught:
        read(store, case)
    assert str(path) in str(caught.value) and reason in str(caught.value)


def not_npy_member() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("oracle", "bound", "tensorflow"):
            archive.writestr(f"{name}.txt", "1 2 3")
    return buffer.getvalue()


def with_arrays(change: Callable[[dict[str, np.ndarray]], object]) -> Callable[[dict[str, np.ndarray]], bytes]:
    def payload(arrays: dict[str, np.ndarray]) -> bytes:
        change(arrays)
        return npz(**arrays)
    return payload


MALFORMED_NPZ: dict[str, tuple[Callable[[dict[str, np.ndarray]], bytes], str]] = {
    "not a zip": (lambda arrays: b"not a zip file", "not a readable .npz (ValueError"),
    "broken zip": (lambda arrays: b"PK\x03\x04 and nothing else", "not a readable .npz (BadZipFile"),
    "not .npy members": (lambda arrays: not_npy_member(), "arrays ['bound.txt', 'oracle.txt', 'tensorflow.txt']"),
    "truncated": (lambda arrays: npz(**arrays)[:-200], "not a readable .npz"),
    "missing array": (with_arrays(lambda arrays: arrays.pop("bound")),
                      "arrays ['oracle', 'tensorflow'], expected ['bound', 'oracle', 'tensorflow']"),
    "extra array": (with_arrays(lambda arrays: arrays.update(extra=np.zeros(1))), "arrays ['bound', 'extra'"),
    "wrong shape": (with_arrays(lambda arrays: arrays.update(oracle=arrays["oracle"][..., :1])),
                    "'oracle' is float64 [1, 6, 5, 1], expected float64 [1, 6, 5, 4]"),
    "wrong dtype": (with_arrays(lambda arrays: arrays.update(bound=arrays["bound"].astype(np.float32))),
                    "'bound' is float32"),
    "object array": (with_arrays(lambda arrays: arrays.update(bound=np.array([None]))),
                     "not a readable .npz (ValueError: Object arrays cannot be loaded"),
    "not the dtype": (with_arrays(lambda arrays: arrays["tensorflow"].fill(0.1)), "values that are not float32"),
}


@pytest.mark.parametrize("kind", MALFORMED_NPZ)
def test_malformed_npz_is_a_golden_error_naming_the_file(store, case, kind):
    make, reason = MALFORMED_NPZ[kind]
    forge_npz(store, case, make(stored_arrays(store, case)))
    with pytest.raises(GoldenError, match="malformed golden entry") as caught:
        read(store, case)
    assert str(store.paths(case)[0]) in str(caught.value) and reason in str(caught.value)


def test_an_error_case_entry_holds_no_arrays(store, cases):
    error_case = next(c for c in cases if c.expect_error)
    forge_npz(store, error_case, npz(oracle=np.zeros(1)))
    with pytest.raises(GoldenError, match=r"arrays \['oracle'\], expected \[\] for source 'contract'"):
        read(store, error_case)


def test_tensorflow_versions_count_the_entries(store, cases):
    for case in cases:  # whatever TensorFlow, if any, is installed here
        edit_json(store, case, lambda meta: meta["versions"].update(tensorflow="2.21.0"))
    edit_json(store, cases[1], lambda meta: meta["versions"].update(tensorflow="2.20.0"))
    edit_json(store, cases[2], lambda meta: meta["versions"].pop("tensorflow"))
    store.paths(cases[3])[1].unlink()  # missing: that case's own error, not counted
    store.paths(cases[4])[1].write_text("[]")  # malformed: likewise
    assert store.tensorflow_versions(cases) == {"2.21.0": len(cases) - 4, "2.20.0": 1, "unknown": 1}


def test_a_version_note_says_when_the_goldens_come_from_another_tensorflow():
    assert version_note({"2.21.0": 674}, "2.21.0") is None
    assert version_note({}, None) is None
    assert version_note({"2.20.0": 674}, "2.21.0") == ("goldens made with TensorFlow 2.20.0 (674 entries); "
                                                       "installed: 2.21.0")
    assert version_note({"2.21.0": 1, "2.20.0": 3}, None) == ("goldens made with TensorFlow 2.20.0 (3 entries), "
                                                              "2.21.0 (1 entry); installed: none")
