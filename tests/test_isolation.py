"""Crashes and hangs are results, not the end of the run: real misbehaving backends, with and without -n."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conformance.cases.loader import load_cases
from tests.conftest import BANK, SMALL_BANK, cli, cli_here

MISBEHAVING = '''
import ctypes, os, time, zlib
import numpy as np
from conformance.impls.numpy_backend import separable_conv2d as correct

def _crashes_here(input):  # about 10% of the cases, decided by the data alone
    return zlib.crc32(np.ascontiguousarray(input).tobytes()) % 10 == 0

def aborts_on_some(input, *args, **kwargs):
    if _crashes_here(input):
        os.abort()
    return correct(input, *args, **kwargs)

def null_deref(input, *args, **kwargs):
    return ctypes.string_at(0)

def hangs(input, *args, **kwargs):
    time.sleep(3600)

def exits(input, *args, **kwargs):
    os._exit(7)

def wrong_shape(*args, **kwargs):
    return correct(*args, **kwargs)[:, :-1]

def nans(*args, **kwargs):
    out = correct(*args, **kwargs)
    out[...] = np.nan
    return out

def wrong_dtype(*args, **kwargs):
    return correct(*args, **kwargs).astype(np.float64)

def not_an_array(*args, **kwargs):
    return "an answer"

def raises(*args, **kwargs):
    raise RuntimeError("device lost")
'''


@pytest.fixture
def workdir(tmp_path: Path, small: Path) -> Path:
    (tmp_path / "misbehaving.py").write_text(MISBEHAVING)
    return tmp_path


def statuses(out: Path) -> dict[str, tuple[str, str]]:
    records = json.loads((out / "results.json").read_text())["results"]
    return {r["case"]: (r["status"], r["message"]) for r in records}


# Harness mechanics: every run here is judged against the oracle (no TensorFlow process to start), but the
# last test, where TensorFlow's own process is what misbehaves.
ORACLE = ("--reference", "oracle")
MISBEHAVIOURS = [
    ("null_deref", "crash", "killed by signal SIGSEGV"),
    ("exits", "crash", "exited with code 7"),
    ("wrong_shape", "fail", "shape"),
    ("nans", "fail", "non-finite mismatch"),
    ("wrong_dtype", "fail", "dtype float64"),
    ("not_an_array", "error", "not an array"),
    ("raises", "error", "RuntimeError: device lost"),
]


@pytest.fixture(scope="module")
def misbehaved(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One run of every misbehaving backend side by side (each in its own child process, as in a run of
    one): the run and its results folder."""
    folder = tmp_path_factory.mktemp("misbehaved")
    (folder / "misbehaving.py").write_text(MISBEHAVING)
    (folder / "cases.yaml").write_text(SMALL_BANK)
    backends = [option for function, _, _ in MISBEHAVIOURS for option in ("--backend", f"misbehaving.py:{function}")]
    done = cli_here("run", "--cases", "cases.yaml", *backends, *ORACLE, "--out", "out", cwd=folder)
    return done, folder / "out"


@pytest.mark.parametrize("function, status, message", MISBEHAVIOURS)
def test_misbehaviour_is_recorded_and_the_run_goes_on(misbehaved, function, status, message):
    done, out = misbehaved
    assert done.returncode == 1, done.stdout + done.stderr  # failures, and no fault of the harness's
    records = json.loads((out / "results.json").read_text())["results"]
    found = {r["case"]: (r["status"], r["message"]) for r in records if r["backend"] == f"misbehaving.py:{function}"}
    valid = next(v for k, v in found.items() if "r2x2" not in k)
    assert valid[0] == status and message in valid[1], valid
    assert len(found) == 2  # the other case has its result too


def test_a_hang_is_a_timeout(workdir, small):
    start = time.monotonic()
    done = cli_here("run", "--cases", str(small), "--backend", "misbehaving.py:hangs", "--timeout", "2", *ORACLE,
               "--out", "out", cwd=workdir)
    assert done.returncode == 1
    assert {s for s, _ in statuses(workdir / "out").values()} == {"timeout"}
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("workers", [[], ["-n", "2"]])
def test_child_processes_leave_no_files_behind(workdir, small, workers):
    """Each isolated child's stderr goes to a temporary file; a run removes them all, also after a crash."""
    temporary = workdir / "tmp"
    temporary.mkdir()
    environment = {**os.environ, "TMPDIR": str(temporary)}
    done = cli("run", "--cases", str(small), "--backend", "misbehaving.py:null_deref", "--backend", "numpy",
               *ORACLE, "--out", "out", *workers, cwd=workdir, env=environment)
    assert done.returncode == 1, done.stdout + done.stderr
    records = json.loads((workdir / "out" / "results.json").read_text())["results"]
    assert "crash" in {r["status"] for r in records}  # the crash path did run
    assert sorted(p.name for p in temporary.iterdir() if p.name.startswith("sepconv-backend-")) == []


KILLED_HARNESS = """
import os, signal, sys
import numpy as np
from conformance.execution.isolation import IsolatedBackend

if __name__ == "__main__":  # where the child is spawned (no fork server), it re-imports this file
    backend = IsolatedBackend(sys.argv[1])
    backend(np.zeros(2))  # the child is up and has answered once
    os.kill(os.getpid(), signal.SIGKILL)  # the harness dies without closing anything
"""


def test_a_child_whose_harness_was_killed_removes_its_file(tmp_path):
    (tmp_path / "echo.py").write_text("def echo(x):\n    return x\n")
    (tmp_path / "harness.py").write_text(KILLED_HARNESS)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    done = subprocess.run([sys.executable, "harness.py", f"{tmp_path / 'echo.py'}:echo"], cwd=tmp_path,
                          env={**os.environ, "TMPDIR": str(temporary)}, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == -9, done.stderr
    deadline = time.monotonic() + 30
    while list(temporary.glob("sepconv-backend-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(temporary.glob("sepconv-backend-*")) == []


@pytest.mark.parametrize("workers", [[], ["-n", "2"]])
def test_crashes_on_ten_percent_of_cases_leave_every_other_result_intact(workdir, workers):
    """The NCHW cases of geometry.yaml: 51, of which the backend aborts on 8 (each crash costs the start of
    a fresh child; the whole file, 202 cases and 23 crashes, shows nothing more)."""
    geometry = BANK / "geometry.yaml"
    done = cli_here("run", "--cases", str(geometry), "-k", "NCHW", "--backend", "misbehaving.py:aborts_on_some",
               *ORACLE, "--out", "out", *workers, cwd=workdir)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    found = statuses(workdir / "out")
    selected = [c.id for c in load_cases([geometry]) if c.data_format == "NCHW"]
    assert len(selected) > 40 and sorted(found) == sorted(selected)  # every case has a result
    counts = Counter(status for status, _ in found.values())
    assert counts["crash"] >= len(found) // 20 and counts["crash"] <= len(found) // 5
    assert counts["pass"] == len(found) - counts["crash"]
    assert all("SIGABRT" in message for status, message in found.values() if status == "crash")


@pytest.mark.parametrize("behaviour, options, status", [
    ("import os; os.abort()", [], "crash"),
    ("import time; time.sleep(600)", ["--timeout", "0.5"], "timeout"),  # any limit: the command never ends
])
def test_external_commands_that_crash_or_hang_never_pass_error_cases(workdir, small, behaviour, options, status):
    import sys
    (workdir / "command.py").write_text(behaviour + "\n")
    done = cli_here("run", "--cases", str(small), "--backend", f"cmd:{sys.executable} command.py", *ORACLE,
               "--out", "out", *options, cwd=workdir)
    assert done.returncode == 1, done.stdout + done.stderr
    assert [s for s, _ in statuses(workdir / "out").values()] == [status, status]


CRASHING_REFERENCE = '''
import os
from conformance.judging.reference import build_reference

def aborts_on_nchw(case, inputs, use_tensorflow):
    if case.data_format == "NCHW":
        os.abort()  # as TensorFlow does on some malformed input
    return build_reference(case, inputs, use_tensorflow)
'''


def test_tensorflow_aborting_on_a_case_is_recorded_and_the_backend_judged_against_the_oracle(tmp_path):
    """TensorFlow's reference process, with a reference function that aborts the process on NCHW cases."""
    from conformance.cases.case import Case
    from conformance.execution import runner
    from conformance.execution.backends import resolve_backend
    from conformance.execution.isolation import IsolatedBackend
    from conformance.execution.reference_process import REFERENCE_ROLE, IsolatedTensorFlowReference

    (tmp_path / "crashing_reference.py").write_text(CRASHING_REFERENCE)
    base = dict(input=(1, 5, 5, 2), kernel=(3, 3), channel_multiplier=1, out_channels=2, strides=(1, 1),
                rates=(1, 1), padding="SAME", dtype="float32")
    source = IsolatedTensorFlowReference()
    source.process = IsolatedBackend(f"{tmp_path / 'crashing_reference.py'}:aborts_on_nchw", None, REFERENCE_ROLE)
    try:
        results = [runner.run_case(Case(**base, data_format=layout), resolve_backend("numpy"), source)
                   for layout in ("NHWC", "NCHW", "NHWC")]
    finally:
        source.close()
    assert [r.status for r in results] == ["pass", "pass", "pass"]  # the backend is not blamed
    assert [r.reference for r in results] == ["tensorflow", "oracle", "tensorflow"]
    assert results[1].reference_status == "crash" and "SIGABRT" in results[1].reference_detail
    assert "TensorFlow's reference process" in results[1].reference_detail


def test_a_child_takes_the_harness_environment_folder_and_path_as_at_its_start(tmp_path, monkeypatch):
    """Children are forked from a server started with the first one; each still takes what a spawned child
    would inherit at its own start: os.environ (C's environment too), the working folder and sys.path."""
    from conformance.execution import isolation

    (tmp_path / "where.py").write_text(
        "import ctypes, os, sys\ngetenv = ctypes.CDLL(None).getenv\ngetenv.restype = ctypes.c_char_p\n"
        "def where(x):\n    return [os.environ.get('SEPCONV_PROBE'), (getenv(b'SEPCONV_PROBE') or b'').decode(),"
        " os.getcwd(), sys.path[0]]\n")
    spec = f"{tmp_path / 'where.py'}:where"
    first = isolation.IsolatedBackend(spec)
    try:
        assert first(0)[0] is None
    finally:
        first.close()
    monkeypatch.setenv("SEPCONV_PROBE", "set after the server started")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "extra"))
    second = isolation.IsolatedBackend(spec)
    try:
        assert second(0) == ["set after the server started"] * 2 + [str(tmp_path), str(tmp_path / "extra")]
    finally:
        second.close()
    assert isolation._context().get_start_method() == "forkserver"


def test_a_child_does_not_run_the_harness_main_script_again(tmp_path):
    """multiprocessing would run the main script again in every child (the console script: the CLI's
    imports); a child here needs nothing from it. The script notes each run of its top level."""
    (tmp_path / "harness.py").write_text(
        "import os\n"
        "with open('runs.txt', 'a') as runs:\n    runs.write(f'{__name__}\\n')\n"
        "if __name__ == '__main__':\n"
        "    from conformance.execution.isolation import IsolatedBackend\n"
        "    child = IsolatedBackend('numpy')\n"
        "    child.start()\n"
        "    child.close()\n")
    done = subprocess.run([sys.executable, "harness.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs.txt").read_text().splitlines() == ["__main__"]
