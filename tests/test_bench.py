"""`sepconv-conformance bench` (through its command line: in this process, which has TensorFlow imported
already, or in a process of its own where TensorFlow must start afresh), and the speed paths of the NumPy
backend it times."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conformance.cases.loader import load_cases
from conformance.cli import main
from conformance.tools.bench import flop_count
from tests.conftest import BANK, FORBIDDEN_CASE

BENCH_CASES = """
cases:
  - name: timed
    input: [2, 9, 8, 3]
    kernel: [3, 3]
    channel_multiplier: 2
    out_channels: 5
    padding: SAME
    strides: [2, 2]
    tags: [bench]
  - name: refused
    description: TensorFlow refuses NCHW float64 on the CPU (float16 too, unless its oneDNN path is on)
    input: [1, 6, 7, 4]
    kernel: [3, 2]
    channel_multiplier: 1
    out_channels: 3
    padding: VALID
    data_format: NCHW
    dtype: float64
    tags: [bench]
""" + FORBIDDEN_CASE.replace("- input", "- name: not_timed_error_case\n    tags: [bench]\n    input") + """
  - name: untagged
    input: [1, 5, 5, 2]
    kernel: [3, 3]
    channel_multiplier: 1
    out_channels: 2
    padding: SAME
"""

WRONG_BACKEND = """
from conformance.impls.numpy_backend import separable_conv2d

def off(input, depthwise_filter, pointwise_filter, strides, padding, data_format=None, dilations=None):
    out = separable_conv2d(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    out.flat[0] += 1
    return out
"""


COUNTING_BACKEND = """
from pathlib import Path
from conformance.impls.numpy_backend import separable_conv2d

def conv(*args, **kwargs):
    with Path("calls.txt").open("a") as log:
        log.write("call\\n")
    return separable_conv2d(*args, **kwargs)
"""


def bench(*args: str, cwd: Path, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """`bench ARGS...` in a process of its own: for --threads (TensorFlow's thread pool is set before its first
    op) and for an environment without TensorFlow."""
    code = f"import sys; {prelude}from conformance.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "bench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture
def bench_here(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`bench ARGS...` in this process, in folder `cwd`: (exit code, stdout). This module has TensorFlow
    imported already, so there is no start-up to pay."""
    def run(*args: str, cwd: Path) -> tuple[int, str]:
        monkeypatch.chdir(cwd)
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"))  # bench sets it
        code = main(["bench", *args])
        return code, capsys.readouterr().out
    return run


def test_flop_count_is_depthwise_plus_pointwise(case_file):
    case = load_cases([case_file(BENCH_CASES)])[0]  # 2x9x8x3, 3x3, M 2, O 5, stride 2 SAME: 5x4 outputs
    assert flop_count(case) == 2 * (2 * 5 * 4) * (3 * 2) * 3 * 3 + 2 * (2 * 5 * 4) * (3 * 2) * 5


def test_bench_times_interleaved_flags_wrong_backends_and_tensorflow_refusals(case_file, tmp_path, bench_here):
    cases = case_file(BENCH_CASES)
    (tmp_path / "wrong.py").write_text(WRONG_BACKEND)
    code, out = bench_here("--cases", str(cases), "--backend", "numpy", "--backend", "wrong.py:off", "--repeats", "3",
                           "--warmup", "1", "--json", "out/bench.json", cwd=tmp_path)
    assert code == 1, out  # a wrong backend makes the bench fail
    lines = out.splitlines()
    assert any("timed" in line and "numpy" in line and line.rstrip().endswith("ok") for line in lines)
    assert any("timed" in line and "wrong.py:off" in line and "WRONG: " in line for line in lines)
    assert any("refused" in line and "TF n/a" in line for line in lines)
    assert not any("untagged" in line or "not_timed_error_case" in line for line in lines)
    summaries = [line for line in lines if line.startswith("summary: ")]
    assert summaries[0].startswith("summary: numpy float32: median ratio") and "left out" not in summaries[0]
    assert summaries[1].startswith("summary: numpy float64: no shape") and summaries[1].endswith("left out: 1 TF n/a")
    assert summaries[2].startswith("summary: wrong.py:off float32: no shape") and "1 WRONG" in summaries[2]

    document = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert document["setup"]["repeats"] == 3 and document["setup"]["tensorflow"]
    timed, refused = document["rows"]
    assert timed["case"].endswith("_timed") and refused["case"].endswith("_refused")
    assert timed["flops"] == flop_count(load_cases([cases])[0])
    numpy_side, wrong_side = timed["backends"]
    assert len(timed["tensorflow"]["seconds"]) == len(numpy_side["seconds"]) == 3
    assert numpy_side["ratio"] == pytest.approx(statistics.median(numpy_side["seconds"])
                                                / statistics.median(timed["tensorflow"]["seconds"]))
    assert numpy_side["gflops"] == pytest.approx(timed["flops"] / statistics.median(numpy_side["seconds"]) / 1e9)
    assert wrong_side["status"] == "wrong" and wrong_side["ratio"] is None and len(wrong_side["seconds"]) == 3
    # TensorFlow refused: not timed, out of the ratios; the backend is still checked (against the oracle).
    assert refused["tensorflow"]["status"] == "n/a" and refused["tensorflow"]["seconds"] == []
    assert refused["backends"][0]["status"] == "ok" and refused["backends"][0]["ratio"] is None
    assert refused["backends"][1]["status"] == "wrong"
    numpy_summary = document["summary"][0]
    assert (numpy_summary["dtype"], numpy_summary["compared"], numpy_summary["tensorflow_na"]) == ("float32", 1, 0)
    assert numpy_summary["median_ratio"] == numpy_summary["worst_ratio"] == pytest.approx(numpy_side["ratio"])


def test_a_shape_the_bank_has_in_two_dtypes_is_timed_once_per_dtype():
    from conformance.tools.bench import _select

    bank = [c for c in load_cases([BANK]) if "bench" in c.tags]
    chosen = _select(bank, ["bench"], [], ["float32"])
    assert len({c.id for c in chosen}) == len(chosen) and {c.dtype for c in chosen} == {"float32"}
    assert len(chosen) == len({c.id for c in bank if c.dtype == "float32"})  # the re-typed ones are already there


def test_dtype_threads_and_schedule_options(case_file, tmp_path, bench_here):
    cases = case_file(BENCH_CASES)
    case_id = load_cases([cases])[0].id
    done = bench("--cases", str(cases), "--id", case_id, "--dtype", "float64", "--dtype", "bfloat16",
                 "--threads", "1", "--repeats", "2", "--warmup", "1", "--json", "b.json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads((tmp_path / "b.json").read_text())
    assert [row["dtype"] for row in document["rows"]] == ["float64", "bfloat16"]
    assert all(row["backends"][0]["status"] == "ok" for row in document["rows"])
    assert document["setup"]["tensorflow_intra_op_threads"] == 1
    assert document["setup"]["backend_threads"] == {"numpy": 1}
    # Calls per shape: 1 checked + warmup + repeats, each timed call primed by an untimed one unless told.
    (tmp_path / "counting.py").write_text(COUNTING_BACKEND)
    for options, calls in ((["--pause", "0.01"], 1 + 1 + 2 * 2), (["--no-prime"], 1 + 1 + 2)):
        (tmp_path / "calls.txt").unlink(missing_ok=True)
        code, out = bench_here("--cases", str(cases), "--id", case_id, "--backend", "counting.py:conv", "--repeats",
                               "2", "--warmup", "1", *options, cwd=tmp_path)
        assert code == 0, out
        assert len((tmp_path / "calls.txt").read_text().splitlines()) == calls


def test_without_tensorflow_the_command_exits_2_with_the_reason(tmp_path):
    done = bench(cwd=tmp_path, prelude="sys.modules['tensorflow'] = None; ")
    assert done.returncode == 2
    assert "TensorFlow is not installed" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("arguments, message", [
    (["--tag", "no_such_tag"], "no valid case matches"),
    (["--backend", "no_such_module:fn"], "cannot be imported"),
])
def test_bad_selection_or_backend_exits_2(arguments, message, case_file, capsys):
    assert main(["bench", "--cases", str(case_file(BENCH_CASES)), *arguments]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("arguments, message", [
    (["--repeats", "0"], "must be >= 1"), (["--warmup", "x"], "expected an integer"),
    (["--pause", "-1"], "must be between 0 and 60"), (["--dtype", "int8"], "invalid choice"),
])
def test_bad_option_values_exit_2(arguments, message, capsys):
    assert main(["bench", *arguments]) == 2 and message in capsys.readouterr().err


# --- the NumPy backend's speed paths: tiles and threads change neither results nor contract checks ------
@pytest.mark.parametrize("shape, k, m, strides, padding, rates, data_format, dtype", [
    ((2, 11, 9, 5), (3, 3), 2, [1, 2, 2, 1], "SAME", [1, 1], "NHWC", np.float32),
    ((2, 11, 9, 5), (5, 3), 3, [1, 1, 1, 1], "SAME", [2, 3], "NHWC", np.float32),
    ((1, 4, 10, 13), (2, 4), 1, [1, 1, 3, 2], [[0, 0], [0, 0], [3, 0], [1, 4]], [1, 1], "NCHW", np.float32),
    ((3, 10, 7, 4), (3, 3), 4, [1, 1, 2, 1], "VALID", [1, 1], "NCHW", np.float32),
    ((2, 9, 9, 6), (3, 3), 2, [1, 2, 1, 1], "SAME", [1, 1], "NHWC", "bfloat16"),
])
def test_tiles_and_threads_match_tensorflow_and_each_other(monkeypatch, shape, k, m, strides, padding, rates,
                                                          data_format, dtype):
    import ml_dtypes

    from conformance.impls import numpy_backend

    dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype
    rng = np.random.default_rng(3)
    channels = shape[1] if data_format == "NCHW" else shape[3]
    x = rng.standard_normal(shape).astype(dtype)
    dw = rng.standard_normal((*k, channels, m)).astype(dtype)
    pw = rng.standard_normal((1, 1, channels * m, 4)).astype(dtype)
    arguments = (x, dw, pw, strides, padding, data_format, rates)
    results = []
    # one block per image; one row per block and per product tile; blocks of a few rows, tiles of fewer
    for block_bytes, product_bytes, threads in ((1 << 30, 1 << 30, 1), (1, 1, 3), (600, 500, 2)):
        monkeypatch.setattr(numpy_backend, "_BLOCK_BYTES", block_bytes)
        monkeypatch.setattr(numpy_backend, "_PRODUCT_BYTES", product_bytes)
        monkeypatch.setattr(numpy_backend, "_PARALLEL_WORK", 0)
        monkeypatch.setenv("SEPCONV_NUMPY_THREADS", str(threads))
        results.append(numpy_backend.separable_conv2d(*arguments))
    assert all(r.tobytes() == results[0].tobytes() for r in results[1:])  # same arithmetic, any tiling
    if dtype == "bfloat16":
        return  # the bank judges bfloat16 with the tolerance model; here: the tiling changes nothing
    tf = pytest.importorskip("tensorflow")  # here, not at collection: every xdist worker collects this module
    expected = tf.nn.separable_conv2d(x, dw, pw, strides, padding, data_format=data_format, dilations=rates).numpy()
    np.testing.assert_allclose(results[0], expected, rtol=1e-5, atol=1e-5)


def test_invalid_thread_setting_makes_the_backend_unavailable(monkeypatch):
    from conformance.execution.backends import BackendError, resolve_backend

    monkeypatch.setenv("SEPCONV_NUMPY_THREADS", "two")
    with pytest.raises(BackendError, match="SEPCONV_NUMPY_THREADS must be a positive integer"):
        resolve_backend("numpy")


def _sequential_depthwise(x: np.ndarray, dw: np.ndarray, strides: tuple[int, int], rates: tuple[int, int],
                          pads: tuple[int, int, int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """The documented order, written plainly: first product, then one float32 addition per tap (i, j)."""
    (sh, sw), (rh, rw), (top, bottom, left, right), (out_h, out_w) = strides, rates, pads, out_hw
    padded = np.pad(x.astype(np.float32), ((0, 0), (top, bottom), (left, right), (0, 0)))
    weights = dw.astype(np.float32)
    acc = None
    for i in range(dw.shape[0]):
        for j in range(dw.shape[1]):
            window = padded[:, i * rh:i * rh + (out_h - 1) * sh + 1:sh, j * rw:j * rw + (out_w - 1) * sw + 1:sw]
            product = window[..., :, None] * weights[i, j]
            acc = product if acc is None else acc + product
    return acc.reshape(*acc.shape[:3], -1)  # channel c * M + m


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_depthwise_sums_taps_in_the_documented_order(monkeypatch, dtype):
    """With an identity pointwise filter the output is the intermediate itself, bit for bit: it must equal
    the plain sequential sum of the module docstring (rounded to bfloat16 for bfloat16), whatever the
    blocking and threads."""
    import ml_dtypes

    from conformance.impls import numpy_backend

    dt = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 9, 11, 3)).astype(dt)  # finite: a NaN would reach every output via 0 * NaN
    dw = rng.standard_normal((3, 4, 3, 2)).astype(dt)
    pw = np.eye(6, dtype=np.float32).reshape(1, 1, 6, 6).astype(dt)
    expected = _sequential_depthwise(x, dw, (2, 1), (1, 1), (1, 1, 1, 2), (5, 11)).astype(dt)
    monkeypatch.setattr(numpy_backend, "_PARALLEL_WORK", 0)
    monkeypatch.setattr(numpy_backend, "_PRODUCT_BYTES", 1)
    monkeypatch.setenv("SEPCONV_NUMPY_THREADS", "2")
    got = numpy_backend.separable_conv2d(x, dw, pw, [1, 2, 1, 1], "SAME")
    assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()
    nchw = numpy_backend.separable_conv2d(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), dw, pw, [1, 1, 2, 1],
                                          "SAME", data_format="NCHW")
    assert nchw.tobytes() == np.ascontiguousarray(expected.transpose(0, 3, 1, 2)).tobytes()


def test_backward_mode_times_the_backprop_against_gradient_tape_and_flags_a_wrong_one(case_file, tmp_path,
                                                                                      bench_here):
    cases = case_file(BENCH_CASES)
    code, out = bench_here("--cases", str(cases), "--mode", "backward", "--backend", "numpy", "--backend",
                           "conformance.impls.backward_zoo:no_batch_sum", "--backend",
                           "conformance.impls.mutants:last_channel_dropped", "--repeats", "2", "--warmup", "0",
                           "--json", "bench.json", cwd=tmp_path)
    assert code == 1, out  # the wrong backward pass and the one without a backward pass fail the bench
    assert "3*kh*kw + 2*O" in out
    timed = json.loads((tmp_path / "bench.json").read_text())["rows"][0]
    assert timed["case"].endswith("_backward_timed")
    assert timed["flops"] == flop_count(dataclasses.replace(load_cases([cases])[0], mode="backward"))
    numpy_side, buggy, forward_only = timed["backends"]
    assert numpy_side["status"] == "ok" and numpy_side["ratio"] > 0 and len(numpy_side["seconds"]) == 2
    assert buggy["status"] == "wrong" and "filter_gradient" in buggy["detail"]
    assert forward_only["status"] == "error" and "no backward pass" in forward_only["detail"]
