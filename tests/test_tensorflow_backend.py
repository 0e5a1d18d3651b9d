"""TensorFlow judged as a backend (impls/tensorflow_backend.py): the control experiment of the tolerance
model. On both of TensorFlow's CPU paths (oneDNN: float32 accumulation; Eigen, TF_ENABLE_ONEDNN_OPTS=0:
depthwise taps accumulated in the dtype) it must conform, judged against the float64 oracle, on cases where
its reference health is ok, including the long low-precision reductions and the cases its Eigen path
once failed under an undeclared float32-accumulator model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BANK, REPO, cli, needs_tensorflow

pytestmark = needs_tensorflow

# Small and long-reduction cases in float16/bfloat16 (NHWC: TensorFlow's Eigen path refuses NCHW there).
# The first three are the ones TensorFlow's Eigen path failed before the reference's accumulator probe.
CASES = ["n1_h10w9_c3_k3x3_m1_o4_s1x1_r1x2_SAME_NHWC_float16",
         "n1_h7w5_c3_k7x5_m2_o4_s1x1_r1x1_SAME_NHWC_bfloat16",
         "n1_h9w8_c3_k4x4_m2_o3_s1x1_r1x1_SAME_NHWC_float16",
         "n1_h8w8_c512_k3x3_m1_o8_s1x1_r1x1_SAME_NHWC_float16",
         "n1_h9w9_c1024_k3x3_m2_o8_s2x2_r1x1_VALID_NHWC_bfloat16"]


def _environment(onednn: str) -> dict[str, str]:
    return {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn}


def test_the_probe_finds_the_depthwise_accumulator_of_the_onednn_path() -> None:
    """The Eigen path's (the dtype itself) is checked through a run's health records, below."""
    code = ("from conformance.judging.reference import tensorflow_depthwise_accumulator as probe; "
            "print(probe('float16'), probe('bfloat16'), probe('float32'))")
    out = subprocess.run([sys.executable, "-c", code], env=_environment("1"), cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    # oneDNN accumulates in float32 where the CPU has it; without its features TF falls back to Eigen
    assert out[2] == "float32" and {out[0], out[1]} <= {"float32", "float16", "bfloat16"}


@pytest.mark.parametrize("onednn", ["1", "0"], ids=["onednn", "eigen"])
def test_tensorflow_conforms_against_the_oracle(tmp_path: Path, onednn: str) -> None:
    ids = [arg for case in CASES for arg in ("--id", case)]
    done = cli("run", "--backend", "tensorflow", "--reference", "oracle", "--out", str(tmp_path), "-q", *ids,
               cwd=REPO, env=_environment(onednn))
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["results"]
    assert sorted(r["case"] for r in results) == sorted(CASES)
    assert all(r["status"] == "pass" for r in results)


def test_its_health_records_the_accumulator_it_was_judged_with(tmp_path: Path) -> None:
    """Judged against TensorFlow (the default), the TensorFlow backend is bitwise identical to the
    reference, whose health is ok and names the depthwise accumulator the probe measured on this machine:
    on the Eigen path, the dtype itself (float16 and bfloat16)."""
    bfloat16 = "n2_h8w7_c4_k3x3_m2_o6_s1x1_r1x1_SAME_NHWC_bfloat16"
    done = cli("run", "--backend", "tensorflow", "--out", str(tmp_path), "-q", "--id", CASES[0], "--id", bfloat16,
               "--cases", str(BANK / "layout_dtype.yaml"), cwd=REPO, env=_environment("0"))
    assert done.returncode == 0, done.stdout + done.stderr
    records = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["results"]
    assert {r["case"]: r["metrics"]["tf_depthwise_accumulator"] for r in records} == \
        {CASES[0]: "float16", bfloat16: "bfloat16"}
    assert all(r["reference_status"] == "ok" and r["metrics"]["identical_to_tensorflow"] is True for r in records)
