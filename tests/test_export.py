"""The vector pack: a manifest that validates, tensors that reproduce, bfloat16 stored bit-exactly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from conformance.cases.case import Case
from conformance.cases.data import materialize, numpy_dtype
from conformance.files import BFLOAT16_STORAGE
from conformance.impls.numpy_backend import separable_conv2d
from conformance.judging.compare import compare
from conformance.judging.reference import tensorflow_missing
from conformance.judging.references import OracleReference, TensorFlowReference
from conformance.judging.tolerance import Tolerance
from conformance.tools.export import export_pack

FLOAT32_SAME = Case(input=(2, 5, 6, 3), kernel=(3, 3), channel_multiplier=2, out_channels=4, strides=(1, 1),
                    rates=(1, 1), padding="SAME", data_format="NHWC", dtype="float32")
BFLOAT16_NCHW = Case(input=(1, 6, 5, 3), kernel=(3, 2), channel_multiplier=1, out_channels=2, strides=(2, 2),
                     rates=(1, 1), padding=((1, 0), (0, 2)), data_format="NCHW", dtype="bfloat16")
ERROR_CASE = Case(input=(1, 9, 8, 3), kernel=(3, 3), channel_multiplier=2, out_channels=4, strides=(2, 2),
                  rates=(2, 2), padding="SAME", data_format="NHWC", dtype="float32", expect_error=True,
                  error_pattern="(?i)strid|dilat|rate")
FLOAT64_UNEQUAL = Case(input=(1, 6, 5, 3), kernel=(3, 3), channel_multiplier=2, out_channels=4,
                       strides=(2, 1), rates=(1, 1), padding="SAME", data_format="NHWC", dtype="float64")
CASES = [FLOAT32_SAME, BFLOAT16_NCHW, ERROR_CASE, FLOAT64_UNEQUAL]
USE_TF = tensorflow_missing() is None


def _load(root: Path, entry: dict) -> np.ndarray:
    """Load a pack tensor, undoing the bfloat16 storage."""
    array = np.load(root / entry["path"], allow_pickle=False)
    if entry.get("storage") == BFLOAT16_STORAGE:
        array = array.view(numpy_dtype("bfloat16"))
    return array


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    root = tmp_path_factory.mktemp("pack")
    summary = export_pack(CASES, root, TensorFlowReference() if USE_TF else OracleReference())
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    return root, manifest, summary


def _entry(manifest: dict, case: Case) -> dict:
    (entry,) = [e for e in manifest["cases"] if e["id"] == case.id]
    return entry


def test_manifest_header_and_summary(pack):
    root, manifest, summary = pack
    assert manifest["format"] == "sepconv-conformance-vectors" and manifest["format_version"] == 1
    assert manifest["numpy"] == np.__version__
    assert (manifest["tensorflow"] is not None) == USE_TF
    assert [e["id"] for e in manifest["cases"]] == [c.id for c in CASES]
    assert summary["cases"] == len(CASES)
    on_disk = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert summary["bytes"] == on_disk
    assert not list(root.rglob("*.tmp"))  # atomic writes leave no temporaries behind


def test_every_listed_file_exists_with_its_hash_shape_and_dtype(pack):
    root, manifest, _ = pack
    listed = set()
    for entry in manifest["cases"]:
        for name, meta in entry["files"].items():
            path = root / meta["path"]
            assert meta["path"] == f"{entry['id']}/{name}.npy"
            assert hashlib.sha256(path.read_bytes()).hexdigest() == meta["sha256"]
            raw = np.load(path, allow_pickle=False)
            assert list(raw.shape) == meta["shape"]
            if meta["storage"] == BFLOAT16_STORAGE:
                assert raw.dtype == np.uint16 and meta["dtype"] == "bfloat16"
            else:
                assert meta["storage"] == "native" and str(raw.dtype) == meta["dtype"]
            listed.add(path)
    assert listed == {p for p in root.rglob("*.npy")}


def test_manifest_carries_parameters_operator_tolerance_and_reference(pack):
    _, manifest, _ = pack
    for case in CASES:
        entry = _entry(manifest, case)
        assert entry["parameters"] == json.loads(json.dumps(case.parameters()))
        assert entry["parameters"]["origin"] == str(case.origin)
        assert entry["operator"] == {"strides": case.operator_strides,
                                     "padding": json.loads(json.dumps(case.operator_padding)),
                                     "data_format": case.data_format, "dilations": list(case.rates)}
        tol = Tolerance.for_case(case)
        for key in ("unit_roundoff", "underflow", "accumulation", "scale", "atol", "exact", "statistics"):
            assert entry["tolerance"][key] == getattr(tol, key)
        assert "2^-53" in entry["tolerance"]["formula"]
        assert set(entry["reference"]) == {"source", "status", "detail"}
    assert _entry(manifest, BFLOAT16_NCHW)["operator"]["padding"] == [[0, 0], [0, 0], [1, 0], [0, 2]]
    assert _entry(manifest, FLOAT64_UNEQUAL)["operator"]["strides"] == [1, 2, 1, 1]


def test_numpy_backend_reproduces_the_reference_within_tolerance(pack):
    root, manifest, _ = pack
    for case in (FLOAT32_SAME, BFLOAT16_NCHW, FLOAT64_UNEQUAL):
        entry = _entry(manifest, case)
        files, op = entry["files"], entry["operator"]
        assert entry["expect"] == "result" and {"oracle", "bound"} <= set(files)
        assert files["oracle"]["dtype"] == files["bound"]["dtype"] == "float64"
        x, dw, pw = (_load(root, files[n]) for n in ("input", "depthwise_filter", "pointwise_filter"))
        out = separable_conv2d(x, dw, pw, op["strides"], op["padding"], data_format=op["data_format"],
                               dilations=op["dilations"])
        oracle, bound = _load(root, files["oracle"]), _load(root, files["bound"])
        if entry["reference"]["source"] == "tensorflow":
            assert entry["reference"]["status"] == "ok" and "tensorflow" in files
            expected, sides = _load(root, files["tensorflow"]), 2
            assert expected.dtype == numpy_dtype(case.dtype)
        else:
            assert "tensorflow" not in files
            expected, sides = oracle, 1
        verdict = compare(out, expected, oracle, bound, Tolerance.for_case(case), sides, numpy_dtype(case.dtype))
        assert verdict.passed, (case.id, verdict.reason)


@pytest.mark.skipif(not USE_TF, reason="TensorFlow is not installed")
def test_tensorflow_outputs_are_present_where_it_accepts_the_case(pack):
    _, manifest, _ = pack
    assert "tensorflow" in _entry(manifest, FLOAT32_SAME)["files"]
    refused = _entry(manifest, FLOAT64_UNEQUAL)  # TensorFlow 2.21 CPU refuses float64 with unequal strides
    assert refused["reference"]["status"] in {"refused", "ok"}
    if refused["reference"]["status"] == "refused":
        assert refused["reference"]["source"] == "oracle" and "tensorflow" not in refused["files"]
        assert refused["reference"]["detail"]


def test_bfloat16_round_trips_bit_exactly(pack):
    root, manifest, _ = pack
    files = _entry(manifest, BFLOAT16_NCHW)["files"]
    original = materialize(BFLOAT16_NCHW)
    for name in ("input", "depthwise_filter", "pointwise_filter"):
        assert files[name]["storage"] == BFLOAT16_STORAGE and files[name]["dtype"] == "bfloat16"
        loaded = _load(root, files[name])
        assert loaded.dtype == original.input.dtype
        assert loaded.tobytes() == getattr(original, name).tobytes()
    if "tensorflow" in files:
        assert files["tensorflow"]["storage"] == BFLOAT16_STORAGE


def test_error_case_has_inputs_but_no_output_tensors(pack):
    root, manifest, _ = pack
    entry = _entry(manifest, ERROR_CASE)
    assert entry["expect"] == "error" and entry["error_pattern"] == ERROR_CASE.error_pattern
    assert set(entry["files"]) == {"input", "depthwise_filter", "pointwise_filter"}
    assert sorted(p.name for p in (root / ERROR_CASE.id).iterdir()) == [
        "depthwise_filter.npy", "input.npy", "pointwise_filter.npy"]
    assert entry["reference"]["source"] == "contract"


def test_re_export_is_byte_identical_and_rejects_duplicate_ids(tmp_path, pack):
    root, _, _ = pack
    export_pack([FLOAT32_SAME], tmp_path, OracleReference())
    case_dir = FLOAT32_SAME.id
    for name in ("input.npy", "oracle.npy", "bound.npy"):
        assert (tmp_path / case_dir / name).read_bytes() == (root / case_dir / name).read_bytes()
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["tensorflow"] is None and manifest["cases"][0]["reference"]["status"] == "not_run"
    with pytest.raises(ValueError, match="duplicate"):
        export_pack([FLOAT32_SAME, FLOAT32_SAME], tmp_path / "dup", OracleReference())
