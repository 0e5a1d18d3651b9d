"""External-command backends (`cmd:...`): real programs, written here as Python scripts and run with
sys.executable, driven through resolve_backend and run_case as the harness drives them."""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conformance.cases.case import Case
from conformance.execution.backends import BackendError, resolve_backend
from conformance.execution.external import CommandCrashed, ExternalCommand
from conformance.execution.runner import run_case
from conformance.judging.references import OracleReference
from tests.conftest import REPO, SMALL_CASE

VALID = Case(input=(2, 5, 6, 3), kernel=(3, 3), channel_multiplier=2, out_channels=4, strides=(1, 1),
             rates=(1, 1), padding="SAME", data_format="NHWC", dtype="float32")
# The contract forbids rate > 1 with stride > 1.
FORBIDDEN = Case(input=(1, 9, 9, 3), kernel=(3, 3), channel_multiplier=2, out_channels=4, strides=(2, 2),
                 rates=(2, 1), padding="SAME", data_format="NHWC", dtype="float32", expect_error=True)

CORRECT = f'''
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, {str(REPO)!r})
import ml_dtypes
from conformance.impls.numpy_backend import separable_conv2d

directory = Path(sys.argv[-1])
case = json.loads((directory / "case.json").read_text())
bits = case["storage"] == "bfloat16-as-uint16"
def load(name):
    array = np.load(directory / (name + ".npy"))
    return array.view(ml_dtypes.bfloat16) if bits else array
out = separable_conv2d(load("input"), load("depthwise_filter"), load("pointwise_filter"), case["strides"],
                       case["padding"], data_format=case["data_format"], dilations=case["dilations"])
np.save(directory / "output.npy", out.view(np.uint16) if bits else out)
'''


def command(tmp_path: Path, body: str, *args: str, name: str = "backend.py") -> str:
    """A cmd: spec that runs `body` as a Python script, with `args` before the case directory."""
    script = tmp_path / name
    script.write_text(textwrap.dedent(body), encoding="utf-8")
    return "cmd:" + shlex.join([sys.executable, str(script), *args])


def judged(spec: str, case: Case = VALID) -> tuple[str, str]:
    result = run_case(case, resolve_backend(spec), OracleReference())
    return result.status, result.message


@pytest.mark.parametrize("case", [
    VALID,
    Case(input=(1, 7, 6, 3), kernel=(3, 2), channel_multiplier=2, out_channels=5, strides=(2, 1), rates=(1, 1),
         padding=((2, 0), (0, 1)), data_format="NCHW", dtype="float64"),
    Case(input=(2, 6, 5, 2), kernel=(2, 3), channel_multiplier=1, out_channels=3, strides=(1, 1), rates=(2, 1),
         padding="VALID", data_format="NHWC", dtype="float16"),
    Case(input=(1, 6, 5, 3), kernel=(3, 3), channel_multiplier=2, out_channels=4, strides=(2, 1), rates=(1, 1),
         padding="SAME", data_format="NCHW", dtype="bfloat16"),
], ids=lambda case: case.id)
def test_a_correct_command_passes(tmp_path, case):
    status, message = judged(command(tmp_path, CORRECT), case)
    assert status == "pass", message


REJECTS = '''
import sys
sys.stderr.write("separable_conv2d: rate > 1 with stride > 1 is not supported\\n")
sys.exit(65)  # the protocol's rejection code
'''
FAILS = REJECTS.replace("sys.exit(65)", "sys.exit(2)")  # a crash of the parser, a bug: not a rejection


def test_the_rejection_exit_code_rejects_an_error_case(tmp_path):
    status, message = judged(command(tmp_path, REJECTS), FORBIDDEN)
    assert status == "pass" and "rejected the input (exit code 65)" in message


def test_any_other_non_zero_exit_is_an_error_even_on_an_error_case(tmp_path):
    for case in (FORBIDDEN, VALID):
        status, message = judged(command(tmp_path, FAILS), case)
        assert status == "error", (case.id, message)
        assert "exited with code 2, which is not the rejection code 65" in message
        assert "rate > 1 with stride > 1 is not supported" in message


def test_rejecting_a_valid_case_is_an_error_with_code_and_stderr(tmp_path):
    status, message = judged(command(tmp_path, REJECTS))
    assert status == "error"
    assert "exit code 65" in message and "rate > 1 with stride > 1 is not supported" in message


def test_the_error_pattern_is_matched_against_the_stderr_tail(tmp_path):
    spec = command(tmp_path, REJECTS)
    matching = dataclasses.replace(FORBIDDEN, error_pattern="not supported")
    other = dataclasses.replace(FORBIDDEN, error_pattern="dilation")
    assert judged(spec, matching)[0] == "pass"
    assert judged(spec, other)[0] == "fail"


def test_a_wrong_shape_fails(tmp_path):
    spec = command(tmp_path, '''
        import sys
        import numpy as np
        np.save(sys.argv[-1] + "/output.npy", np.zeros((1, 2, 3, 4), np.float32))
        ''')
    status, message = judged(spec)
    assert status == "fail" and "shape" in message


def test_exit_zero_without_output_is_never_a_pass(tmp_path):
    spec = command(tmp_path, "pass\n")
    assert judged(spec)[0] == "error"
    status, message = judged(spec, FORBIDDEN)
    assert status == "fail" and "accepted" in message


@pytest.mark.parametrize("how, signal_name", [("os.kill(os.getpid(), signal.SIGSEGV)", "SIGSEGV"),
                                               ("os.abort()", "SIGABRT")])
def test_death_by_a_signal_is_a_crash(tmp_path, how, signal_name):
    spec = command(tmp_path, f'''
        import os, signal, sys
        sys.stderr.write("about to die\\n")
        sys.stderr.flush()
        {how}
        ''')
    backend = resolve_backend(spec)
    with pytest.raises(CommandCrashed, match=f"crashed.*{signal_name}.*about to die"):
        backend.fn(np.zeros((1, 3, 3, 1), np.float32), np.zeros((1, 1, 1, 1), np.float32),
                   np.zeros((1, 1, 1, 1), np.float32), [1, 1, 1, 1], "SAME")
    status, message = judged(spec, FORBIDDEN)  # a crash is never a rejection
    assert status == "crash" and signal_name in message


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def test_a_hang_is_killed_at_the_timeout_with_its_children(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    spec = command(tmp_path, f'''
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(1000)
        ''')
    backend = ExternalCommand(shlex.split(spec[len("cmd:"):]), timeout=2)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="did not exit within 2 s"):
        backend(np.zeros((1, 3, 3, 1), np.float32), np.zeros((1, 1, 1, 1), np.float32),
                np.zeros((1, 1, 1, 1), np.float32), [1, 1, 1, 1], "SAME")
    assert time.monotonic() - start < 10
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild)


def test_a_timeout_is_recorded_as_timeout(tmp_path):
    spec = command(tmp_path, "import time\ntime.sleep(1000)\n")
    backend = resolve_backend(spec)
    backend.fn.timeout = 0.5  # any limit: the command never ends
    assert run_case(VALID, backend, OracleReference()).status == "timeout"


def test_bfloat16_travels_as_uint16_bits(tmp_path):
    import ml_dtypes

    record = tmp_path / "seen.json"
    spec = command(tmp_path, f'''
        import json, sys
        import numpy as np
        directory = sys.argv[-1]
        case = json.load(open(directory + "/case.json"))
        x = np.load(directory + "/input.npy")
        case["input_dtype"], case["input_bits"] = x.dtype.str, x.ravel().tolist()
        json.dump(case, open({str(record)!r}, "w"))
        np.save(directory + "/output.npy", x)  # echo the bits back
        ''')
    x = np.array([[[[1.0], [-2.5]], [[0.0078125], [np.inf]]]], dtype=ml_dtypes.bfloat16)
    out = resolve_backend(spec).fn(x, x.ravel()[:1].reshape(1, 1, 1, 1), x.ravel()[:1].reshape(1, 1, 1, 1),
                                   [1, 1, 1, 1], [[0, 0], [1, 0], [0, 1], [0, 0]], data_format="NHWC",
                                   dilations=[1, 1])
    seen = json.loads(record.read_text())
    assert seen["input_dtype"] == "<u2" and seen["input_bits"] == x.view(np.uint16).ravel().tolist()
    assert seen["storage"] == "bfloat16-as-uint16" and seen["dtype"] == "bfloat16"
    assert seen["padding"] == [[0, 0], [1, 0], [0, 1], [0, 0]] and seen["strides"] == [1, 1, 1, 1]
    assert seen["format_version"] == 2 and seen["case"] is None and seen["data_format"] == "NHWC"
    assert seen["rejection_exit_code"] == 65
    assert out.dtype == ml_dtypes.bfloat16 and np.array_equal(out.view(np.uint16), x.view(np.uint16))


ECHO_ARGV = '''
import json, os, sys
json.dump({"argv": sys.argv[1:], "files": sorted(os.listdir(sys.argv[-1]))}, open(sys.argv[1], "w"))
'''


def test_the_command_line_is_not_shell_interpreted(tmp_path):
    record = tmp_path / "argv.json"
    spec = command(tmp_path, ECHO_ARGV, str(record), "a;b", "$HOME", "*", "x y", "`id`")
    run_case(VALID, resolve_backend(spec), OracleReference())
    seen = json.loads(record.read_text())
    assert seen["argv"][:-1] == [str(record), "a;b", "$HOME", "*", "x y", "`id`"]
    assert Path(seen["argv"][-1]).name.startswith("sepconv-cmd-")
    assert seen["files"] == ["case.json", "depthwise_filter.npy", "input.npy", "pointwise_filter.npy",
                             "stderr.txt", "stdout.txt"]


def test_case_directories_are_removed_unless_kept(tmp_path, monkeypatch):
    record = tmp_path / "argv.json"
    spec = command(tmp_path, ECHO_ARGV, str(record))
    run_case(VALID, resolve_backend(spec), OracleReference())
    assert not Path(json.loads(record.read_text())["argv"][-1]).exists()
    monkeypatch.setenv("SEPCONV_KEEP_CMD_DIRS", "1")
    run_case(VALID, resolve_backend(spec), OracleReference())
    kept = Path(json.loads(record.read_text())["argv"][-1])
    assert (kept / "case.json").is_file()
    shutil.rmtree(kept)


@pytest.mark.parametrize("spec, reason", [
    ("cmd:", "empty command"),
    ("cmd:   ", "empty command"),
    ("cmd:'unbalanced", "cannot split"),
    ("cmd:sepconv-no-such-program --flag", "not found on PATH"),
    ("cmd:/no/such/dir/backend --flag", "no such file"),
])
def test_a_command_that_cannot_run_is_a_backend_error(spec, reason):
    with pytest.raises(BackendError, match=reason):
        resolve_backend(spec)


def test_the_cli_runs_a_command_backend_and_refuses_a_missing_one(tmp_path, case_file):
    cases = case_file(SMALL_CASE)
    spec = command(tmp_path, CORRECT)
    run = subprocess.run([sys.executable, "-m", "conformance", "run", "--cases", str(cases), "--backend", spec,
                          "--reference", "oracle", "--out", str(tmp_path / "out"), "-q"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert [r["status"] for r in results] == ["pass"] and results[0]["backend"] == spec
    missing = subprocess.run([sys.executable, "-m", "conformance", "run", "--cases", str(cases), "--backend",
                              "cmd:sepconv-no-such-program", "--reference", "oracle"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "not found on PATH" in missing.stdout + missing.stderr


# --- the backward call ------------------------------------------------------------------------------------
BACKWARD = CORRECT.replace("from conformance.impls.numpy_backend import separable_conv2d",
                           "from conformance.impls.numpy_backend import separable_conv2d, separable_conv2d_backprop")
BACKWARD += '''
if case["mode"] == "backward":
    (directory / "output.npy").unlink()
    gradients = separable_conv2d_backprop(load("input"), load("depthwise_filter"), load("pointwise_filter"),
                                          load("output_gradient"), case["strides"], case["padding"],
                                          data_format=case["data_format"], dilations=case["dilations"])
    for name, gradient in zip(("input_gradient", "depthwise_filter_gradient", "pointwise_filter_gradient"), gradients):
        if name not in sys.argv[1:-1]:  # a name given before the directory: that file is left out
            np.save(directory / (name + ".npy"), gradient.view(np.uint16) if bits else gradient)
'''
NO_BACKWARD = '''
import json, sys
from pathlib import Path
if json.loads((Path(sys.argv[-1]) / "case.json").read_text())["mode"] == "backward":
    sys.exit(69)
'''


@pytest.mark.parametrize("case", [dataclasses.replace(VALID, mode="backward"),
                                  dataclasses.replace(VALID, mode="backward", data_format="NCHW", dtype="bfloat16")],
                         ids=lambda case: case.id)
def test_a_command_with_a_backward_call_passes_backward_cases(tmp_path, case):
    status, message = judged(command(tmp_path, BACKWARD), case)
    assert status == "pass", message


def test_a_command_without_a_backward_call_is_skipped_never_judged(tmp_path):
    backward = dataclasses.replace(VALID, mode="backward")
    status, message = judged(command(tmp_path, CORRECT), backward)  # protocol 2 before the mode: output.npy
    assert status == "skip" and "answered a backward call with output.npy" in message
    status, message = judged(command(tmp_path, NO_BACKWARD, name="none.py"), backward)
    assert status == "skip" and "exited with 69" in message
    assert judged(command(tmp_path, CORRECT), dataclasses.replace(backward, mode="forward"))[0] == "pass"


def test_a_missing_gradient_file_is_an_error_naming_the_gradient(tmp_path):
    status, message = judged(command(tmp_path, BACKWARD, "depthwise_filter_gradient"),
                             dataclasses.replace(VALID, mode="backward"))
    assert status == "error" and message.startswith("depthwise_filter_gradient: returned MissingOutputNpy")
