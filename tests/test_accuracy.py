"""Accuracy relative to TensorFlow (issue 13): both errors against the oracle in the same units, their
ratio per case, the run's summary line, and the opt-in gate --max-error-ratio."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conformance.cases.case import Case
from conformance.cases.data import materialize
from conformance.judging.accuracy import relative_accuracy
from conformance.judging.oracle import compute_oracle
from conformance.judging.tolerance import Tolerance
from tests.conftest import SMALL_BANK, cli_here

CASE = Case(input=(1, 6, 5, 3), kernel=(3, 3), channel_multiplier=2, out_channels=4, strides=(1, 1), rates=(1, 1),
            padding="SAME", data_format="NHWC", dtype="float32")
NOISY = '''
import numpy as np
from conformance.impls.numpy_backend import separable_conv2d as correct

def one_ulp_off(*args, **kwargs):  # every element one ulp off, either way: within every limit, less accurate
    out = correct(*args, **kwargs)
    up = np.random.default_rng(0).random(out.shape) < 0.5
    return np.where(up, np.nextafter(out, np.inf), np.nextafter(out, -np.inf)).astype(out.dtype)
'''


def test_identical_results_have_ratio_one_and_a_noisier_one_more():
    oracle = compute_oracle(CASE, materialize(CASE))
    tolerance = Tolerance.for_case(CASE)
    tensorflow = oracle.output.astype(np.float32)
    same = relative_accuracy(tensorflow.copy(), tensorflow, oracle.output, oracle.bound, tolerance)
    assert same["identical_to_tensorflow"] and same["error_ratio_to_tensorflow"] == 1.0
    noisy = np.nextafter(tensorflow, np.float32(np.inf))
    worse = relative_accuracy(noisy, tensorflow, oracle.output, oracle.bound, tolerance)
    assert not worse["identical_to_tensorflow"] and worse["error_ratio_to_tensorflow"] > 1.5


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One run against TensorFlow, without the gate, of the noisy backend and the NumPy backend side by side
    (each judged on its own): the run, and the folder it ran in (reports in plain/)."""
    folder = tmp_path_factory.mktemp("accuracy")
    (folder / "noisy.py").write_text(NOISY)
    (folder / "cases.yaml").write_text(SMALL_BANK)
    done = cli_here("run", "--cases", "cases.yaml", "--backend", "noisy.py:one_ulp_off", "--backend", "numpy",
                    "--out", "plain", cwd=folder)
    return done, folder


def test_the_run_says_where_a_backend_stands_and_the_gate_is_opt_in(plain, tmp_path, small):
    done, folder = plain
    assert done.returncode == 0, done.stdout + done.stderr
    assert "accuracy vs TensorFlow [noisy.py:one_ulp_off]: median" in done.stdout
    record = next(r for r in json.loads((folder / "plain" / "results.json").read_text())["results"]
                  if r["expect"] == "result" and r["backend"] == "noisy.py:one_ulp_off")
    ratio = record["metrics"]["error_ratio_to_tensorflow"]
    assert ratio > 1.2 and record["metrics"]["identical_to_tensorflow"] is False
    (tmp_path / "noisy.py").write_text(NOISY)
    args = ["run", "--cases", str(small), "--backend", "noisy.py:one_ulp_off"]
    gated = cli_here(*args, "--out", "gated", "--max-error-ratio", "1.1", cwd=tmp_path)
    assert gated.returncode == 1 and "over --max-error-ratio 1.1" in gated.stdout, gated.stdout
    assert cli_here(*args, "--max-error-ratio", "0.5", cwd=tmp_path).returncode == 2  # below 1 fails TensorFlow itself


def test_the_report_page_shows_the_numerics_of_each_backend(plain):
    done, folder = plain
    assert done.returncode == 0, done.stdout + done.stderr
    page = (folder / "plain" / "report.html").read_text()
    numerics = page[page.index('id="numerics"'):page.index("</ul>", page.index('id="numerics"'))]
    assert "accuracy vs TensorFlow [numpy]: median" in numerics
    assert "judged as accumulating [numpy]: float32 in float32" in numerics
