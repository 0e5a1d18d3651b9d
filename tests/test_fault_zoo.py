"""The fault zoo: misbehaving backends, inputs and files, each of which must end non-green with the right
status and exit code. The gate is a CI's only word: every way to get exit 0 without earning it, or to
lose a result, is a bug here. Each entry names the class of the attack it stands for (issue 12)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from conformance.cases.case import Case
from conformance.execution import runner
from conformance.execution.backends import Backend, resolve_backend
from conformance.execution.external import ExternalCommand
from conformance.execution.isolation import IsolatedBackend, probe_backend
from conformance.execution.journal import FolderLock
from conformance.exitcodes import EXIT_INTERNAL
from conformance.judging.references import OracleReference
from tests.conftest import SMALL_BANK, SMALL_CASE, cli, cli_here

VALID = Case(input=(1, 6, 5, 3), kernel=(3, 3), channel_multiplier=2, out_channels=4, strides=(2, 1),
             rates=(1, 1), padding="SAME", data_format="NHWC", dtype="float32")
NONFINITE = Case(**{**VALID.__dict__, "data": "nonfinite"})
FORBIDDEN = Case(input=(1, 5, 5, 2), kernel=(3, 3), channel_multiplier=1, out_channels=2, strides=(2, 2),
                 rates=(2, 2), padding="SAME", data_format="NHWC", dtype="float32", expect_error=True)

ZOO = '''
import ctypes, os, signal, sys, time
import numpy as np
from conformance.impls.numpy_backend import separable_conv2d as correct

def masked_zeros(*args, **kwargs):  # the mask hides that every value is wrong
    out = correct(*args, **kwargs)
    return np.ma.masked_array(np.zeros_like(out), mask=np.ones(out.shape, bool))

class Agreeable(np.ndarray):  # a subclass whose comparisons always agree
    def __eq__(self, other): return np.ones(self.shape, bool)
    def __sub__(self, other): return np.zeros(self.shape)
    def __abs__(self): return np.zeros(self.shape)

def agreeable_zeros(*args, **kwargs):
    return np.zeros_like(correct(*args, **kwargs)).view(Agreeable)

def object_array(*args, **kwargs):
    return correct(*args, **kwargs).astype(object)

def none(*args, **kwargs):
    return None

def a_list(*args, **kwargs):
    return correct(*args, **kwargs).tolist()

def unpicklable(*args, **kwargs):
    return lambda: 0

def memory_error(*args, **kwargs):
    raise MemoryError("out of device memory")

def system_exit_0(*args, **kwargs):
    sys.exit(0)

def keyboard_interrupt(*args, **kwargs):
    raise KeyboardInterrupt

def os_exit_0(*args, **kwargs):
    os._exit(0)

def segfault(*args, **kwargs):
    return ctypes.string_at(0)

def hang(*args, **kwargs):
    time.sleep(3600)

def helper_keeps_the_pipe(*args, **kwargs):
    if os.fork() == 0:  # a helper that inherits every descriptor, the result pipe included, and lingers
        time.sleep(3600)
    os._exit(3)

def floods_stderr_then_aborts(*args, **kwargs):
    chunk = "x" * (1 << 20) + "\\\\n"
    for _ in range(64):  # 64 MiB: the harness must read a bounded tail, not all of it
        sys.stderr.write(chunk)
    sys.stderr.write("the real reason is at the end\\\\n")
    sys.stderr.flush()
    os.abort()

def wrong_dtype(*args, **kwargs):
    return correct(*args, **kwargs).astype(np.float64)

def environment(*args, **kwargs):
    return np.array([float(len(os.environ.get("SEPCONV_POISON", "")))])
'''


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("zoo") / "zoo.py"
    path.write_text(ZOO)
    return path


def judged(zoo: Path, name: str, case: Case, isolated: bool = True, timeout: float = 60) -> tuple[str, str, str]:
    spec = f"{zoo}:{name}"
    backend = probe_backend(spec, timeout) if isolated else resolve_backend(spec)
    try:
        result = runner.run_case(case, backend, OracleReference())
    finally:
        if isinstance(backend.fn, IsolatedBackend):
            backend.fn.close()
    return result.status, result.fault, result.message


# --- backends: (name, case, status, fault, words in the message) ---------------------------------------
BACKEND_ZOO = [
    ("masked_zeros", NONFINITE, "fail", "", "non-finite mismatch"),  # 1: subclasses
    ("masked_zeros", VALID, "fail", "", "the limit"),
    ("agreeable_zeros", VALID, "fail", "", "the limit"),
    ("object_array", VALID, "fail", "", "dtype object"),
    ("none", VALID, "error", "", "not an array"),
    ("none", FORBIDDEN, "fail", "", "accepted input the contract forbids"),
    ("a_list", VALID, "error", "", "not an array"),
    ("unpicklable", VALID, "error", "", "not an array"),
    ("wrong_dtype", VALID, "fail", "", "dtype float64"),
    ("memory_error", FORBIDDEN, "error", "", "MemoryError"),  # 3: giving up is not rejecting
    ("system_exit_0", FORBIDDEN, "error", "", "SystemExit"),
    ("keyboard_interrupt", FORBIDDEN, "error", "", "KeyboardInterrupt"),
    ("os_exit_0", FORBIDDEN, "crash", "", "exited with code 0"),
    ("segfault", FORBIDDEN, "crash", "", "SIGSEGV"),
    ("helper_keeps_the_pipe", FORBIDDEN, "crash", "", "exited with code 3"),  # 15: no hang
    ("floods_stderr_then_aborts", FORBIDDEN, "crash", "", "the real reason is at the end"),  # 16
]


@pytest.mark.parametrize("name, case, status, fault, words", BACKEND_ZOO,
                         ids=[f"{n}-{c.data}-{c.expect}" for n, c, *_ in BACKEND_ZOO])
def test_misbehaving_backends_never_pass(zoo, name, case, status, fault, words):
    started = time.monotonic()
    got = judged(zoo, name, case)
    assert got[:2] == (status, fault) and words in got[2], got
    assert len(got[2]) < 5000  # a bounded message, whatever the backend printed
    assert time.monotonic() - started < 50  # never waited for the lingering helper (it sleeps an hour)


def test_a_backend_giving_up_in_process_is_not_a_rejection(zoo):
    assert judged(zoo, "memory_error", FORBIDDEN, isolated=False)[0] == "error"
    assert judged(zoo, "system_exit_0", FORBIDDEN, isolated=False)[0] == "error"
    with pytest.raises(KeyboardInterrupt):  # in the harness's own process that is the user's Ctrl-C: stop
        judged(zoo, "keyboard_interrupt", FORBIDDEN, isolated=False)


def test_a_hang_is_a_timeout_and_its_process_group_is_killed(zoo):
    backend = probe_backend(f"{zoo}:hang", 2)
    result = runner.run_case(FORBIDDEN, backend, OracleReference())
    assert result.status == "timeout" and "2 s" in result.message


@pytest.mark.parametrize("source, words", [
    ("import sys\nsys.exit(0)\n", "SystemExit"),  # 4: `sys.exit(main())` at import
    ("import os\nos._exit(0)\n", "exited with code 0 while loading"),
    ("import ctypes\nctypes.string_at(0)\n", "SIGSEGV"),  # 17: a crash at import is not the harness's
    ("raise ImportError('no driver')\n", "no driver"),
])
def test_a_backend_that_dies_or_exits_while_imported_is_a_usage_error(tmp_path, small, source, words):
    (tmp_path / "bad.py").write_text(source + "def fn(*a, **k):\n    pass\n")
    done = cli_here("run", "--cases", str(small), "--backend", "bad.py:fn", "--reference", "oracle", "--out", "out",
               cwd=tmp_path)
    assert done.returncode == 2 and words in done.stdout + done.stderr, done.stdout + done.stderr
    assert not (tmp_path / "out" / "results.json").exists()


def test_an_import_time_environment_change_never_reaches_the_reference_process(zoo, monkeypatch):
    # 17: the reference's process is started with the environment taken before any backend import.
    monkeypatch.setenv("SEPCONV_POISON", "torch")
    clean = {k: v for k, v in os.environ.items() if k != "SEPCONV_POISON"}
    child = IsolatedBackend(f"{zoo}:environment", 60, "TensorFlow's reference process", clean)
    try:
        assert child()[0] == 0.0
    finally:
        child.close()


def test_a_broken_pipe_to_a_live_child_is_a_harness_fault_and_to_a_dead_one_a_crash(zoo):
    backend = IsolatedBackend(f"{zoo}:none", 60)
    backend.start()

    class Broken:
        def send(self, _: object) -> None:
            raise BrokenPipeError(32, "Broken pipe")

        def close(self) -> None:
            pass
    real = backend._connection  # kept open: closing it would end the child (EOF), making this a crash
    backend._connection = Broken()  # type: ignore[assignment]
    result = runner.run_case(FORBIDDEN, Backend("none", backend), OracleReference())
    assert real is not None
    assert (result.status, result.fault) == ("error", "harness") and "cannot send" in result.message
    backend.start()
    assert backend._process is not None
    os.kill(backend._process.pid, signal.SIGKILL)
    backend._process.join(10)
    backend._connection = Broken()  # type: ignore[assignment]
    # Alive when the call starts, dead by the time the send fails: it died during the send.
    states = iter([True])
    backend._process.is_alive = lambda: next(states, False)  # type: ignore[method-assign]
    with pytest.raises(Exception, match="killed by signal SIGKILL"):
        backend(np.zeros(1))
    backend.close()


def test_a_bug_of_the_harness_is_recorded_as_a_harness_fault_never_lost(monkeypatch):
    def broken_compare(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug of ours")
    monkeypatch.setattr(runner, "compare", broken_compare)
    result = runner.run_case(VALID, resolve_backend("numpy"), OracleReference())
    assert (result.status, result.fault) == ("error", "harness") and "ZeroDivisionError" in result.message


# --- external commands ------------------------------------------------------------------------------
def command(tmp_path: Path, source: str) -> ExternalCommand:
    program = tmp_path / "program.py"
    program.write_text(textwrap.dedent(source))
    return ExternalCommand([sys.executable, str(program)], 60)


@pytest.mark.parametrize("exit_code", [1, 2, 127])
def test_a_command_that_fails_with_any_other_code_never_passes_an_error_case(tmp_path, exit_code):
    fn = command(tmp_path, f"import sys\nsys.exit({exit_code})\n")  # 29
    result = runner.run_case(FORBIDDEN, Backend("cmd", fn), OracleReference())
    assert result.status == "error" and f"exited with code {exit_code}" in result.message


def test_a_full_temp_folder_is_a_harness_fault_not_a_rejection(tmp_path, monkeypatch):
    fn = command(tmp_path, "import sys\nsys.exit(65)\n")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no_such_folder"))  # 3: mkdtemp fails
    result = runner.run_case(FORBIDDEN, Backend("cmd", fn), OracleReference())
    assert (result.status, result.fault) == ("error", "harness"), result.message
    monkeypatch.setattr(tempfile, "tempdir", None)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "save", disk_full)  # writing the operands fails
    result = runner.run_case(FORBIDDEN, Backend("cmd", fn), OracleReference())
    assert (result.status, result.fault) == ("error", "harness") and "No space left" in result.message


def test_case_json_carries_the_case_id(tmp_path):
    seen = tmp_path / "seen.json"
    fn = command(tmp_path, f"import shutil, sys\nshutil.copy(sys.argv[-1] + '/case.json', {str(seen)!r})\n"
                           "sys.exit(65)\n")
    runner.run_case(FORBIDDEN, Backend("cmd", fn), OracleReference())
    assert json.loads(seen.read_text())["case"] == FORBIDDEN.id


# --- the command line: options, folders, journals ------------------------------------------------------
@pytest.mark.parametrize("value", ["inf", "nan", "1e400", "0", "-1"])
def test_a_timeout_that_is_not_a_finite_positive_number_is_refused(tmp_path, small, value):
    done = cli_here("run", "--cases", str(small), "--timeout", value, "--out", "out", cwd=tmp_path)  # 3, 26
    assert done.returncode == 2 and "finite number of seconds > 0" in done.stderr, done.stderr


def run_oracle(tmp_path: Path, cases: Path, *args: str, out: str = "out") -> subprocess.CompletedProcess[str]:
    """`run` against the oracle: in this process (the backend is isolated in a child of its own), or in a
    process of its own where the run itself may die (--no-isolate) or starts pytest-xdist workers (-n)."""
    command = ("run", "--cases", str(cases), "--reference", "oracle", "--out", out, *args)
    if "--no-isolate" in args or "-n" in args:
        return cli(*command, cwd=tmp_path)
    return cli_here(*command, cwd=tmp_path)


def test_out_pointing_at_a_file_is_a_usage_error(tmp_path, small):
    (tmp_path / "out").write_text("not a folder")
    done = run_oracle(tmp_path, small)
    assert done.returncode == 2 and "is not a folder" in done.stdout + done.stderr


def test_a_folder_in_use_by_another_run_is_refused(tmp_path, small):
    (tmp_path / "out").mkdir()
    lock = FolderLock(tmp_path / "out")  # 11: as another run holds it
    lock.acquire()
    try:
        done = run_oracle(tmp_path, small)
    finally:
        lock.release()
    assert done.returncode == 2 and "in use by another run" in done.stdout + done.stderr
    assert run_oracle(tmp_path, small).returncode == 0  # released: the folder is usable again


@pytest.mark.parametrize("args", [["--id", "no_such_case"], ["-k", "matches_nothing"], ["--", "--co"]])
def test_an_empty_selection_judges_nothing_and_leaves_the_reports_alone(tmp_path, small, args):
    assert run_oracle(tmp_path, small).returncode == 0  # 14
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file() and p.suffix != ".lock"}
    done = run_oracle(tmp_path, small, *args)
    assert done.returncode == 4 and "NOTHING JUDGED" in done.stdout, done.stdout + done.stderr
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file() and p.suffix != ".lock"}
    assert after == before


@pytest.mark.parametrize("declaration", ['SUPPORTS = {"dtypes": ["float16"]}', None])
def test_a_run_where_everything_is_skipped_is_not_a_pass(tmp_path, small, declaration):
    source = "from conformance.impls.numpy_backend import separable_conv2d\n" + (declaration or "")
    (tmp_path / "narrow.py").write_text(source)
    options = ["--backend", "narrow.py:separable_conv2d"]
    if declaration is None:  # 8: an expectations file that skips everything
        (tmp_path / "skip.yaml").write_text("expectations:\n  - cases: '*'\n    status: skip\n    reason: all\n")
        options += ["--expectations", "skip.yaml"]
    done = run_oracle(tmp_path, small, *options)
    assert done.returncode == 4 and "NOTHING JUDGED: all 2 results skipped" in done.stdout, done.stdout
    assert json.loads((tmp_path / "out" / "results.json").read_text())["summary"]["conforms"] is False


def journal_lines(folder: Path) -> list[str]:
    return (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()


def test_resume_refuses_a_journal_of_another_reference_or_backend(tmp_path, small):
    from tests.conftest import WRONG_BACKEND

    (tmp_path / "wrong.py").write_text(WRONG_BACKEND)
    assert run_oracle(tmp_path, small, "--id", "n1_h6w5_c3_k3x3_m2_o4_s2x1_r1x1_SAME_NHWC_float32").returncode == 0
    saved = (tmp_path / "out" / "results.jsonl").read_bytes()
    for other in (["--reference", "tensorflow"], ["--backend", "wrong.py:off_by_a_bit"]):  # 7
        done = cli_here("run", "--cases", str(small), "--out", "out", "--resume",
                   "--id", "n1_h6w5_c3_k3x3_m2_o4_s2x1_r1x1_SAME_NHWC_float32", *other, cwd=tmp_path)
        assert done.returncode == 2 and "another" in done.stdout + done.stderr, done.stdout + done.stderr
        assert (tmp_path / "out" / "results.jsonl").read_bytes() == saved  # nothing lost


@pytest.mark.parametrize("damage, words", [
    (lambda lines: [lines[0], b"\xff\xfe not utf-8", *lines[1:]], ":2: not a journal record"),
    (lambda lines: [lines[0], b"[1, 2, 3]", *lines[1:]], ":2: not a journal record"),
    (lambda lines: [lines[0], b'{"case": "x", "backend": "numpy", "status": 3}', *lines[1:]], ":2:"),
    (lambda lines: lines[1:], ":1: not a journal record"),  # no header
])
def test_resume_with_a_malformed_journal_is_a_usage_error_naming_the_line(tmp_path, small, damage, words):
    assert run_oracle(tmp_path, small).returncode == 0  # 18
    path = tmp_path / "out" / "results.jsonl"
    path.write_bytes(b"\n".join(damage(path.read_bytes().split(b"\n")[:-1])) + b"\n")
    saved = path.read_bytes()
    done = run_oracle(tmp_path, small, "--resume")
    assert done.returncode == 2 and words in done.stdout + done.stderr, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and path.read_bytes() == saved


def test_resume_drops_duplicates_and_a_cut_line_and_junit_holds_every_result(tmp_path, small):
    assert run_oracle(tmp_path, small).returncode == 0
    path = tmp_path / "out" / "results.jsonl"
    header, first, second = journal_lines(tmp_path / "out")
    path.write_text("\n".join([header, first, first]) + "\n" + second[:30])  # 10: a kill cut the last line
    done = run_oracle(tmp_path, small, "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = journal_lines(tmp_path / "out")
    assert len(lines) == 3 and lines[1] == first  # the saved result kept as it was, once
    suite = ET.parse(tmp_path / "out" / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "2"  # 12: resumed results included
    nothing_left = run_oracle(tmp_path, small, "--resume")
    assert nothing_left.returncode == 0
    assert ET.parse(tmp_path / "out" / "junit.xml").getroot().find("testsuite").get("tests") == "2"


def test_junit_names_are_the_same_for_single_and_merged_runs(tmp_path, small):
    assert run_oracle(tmp_path, small, out="single").returncode == 0  # 23
    for k in (1, 2):
        assert run_oracle(tmp_path, small, "--shard", f"{k}/2", out=f"shard{k}").returncode in (0, 4)
    names = {}
    for folder in ("single", "merged"):
        if folder == "merged":
            shards = [f"shard{k}" for k in (1, 2) if (tmp_path / f"shard{k}" / "results.json").exists()]
            if len(shards) < 2:
                pytest.skip("the hash put both cases in one shard")
            assert cli_here("merge", *shards, "--out", "merged", cwd=tmp_path).returncode == 0
        root = ET.parse(tmp_path / folder / "junit.xml").getroot()
        names[folder] = sorted((c.get("classname"), c.get("name")) for c in root.iter("testcase"))
    assert names["single"] == names["merged"] and names["single"][0][0] == "numpy"


def test_stop_at_the_first_failure_exits_1_with_workers(tmp_path, small):
    from tests.conftest import WRONG_BACKEND

    (tmp_path / "wrong.py").write_text(WRONG_BACKEND)
    done = run_oracle(tmp_path, small, "--backend", "wrong.py:off_by_a_bit", "-x", "-n", "2")  # 21
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DOES NOT CONFORM" in done.stdout


def test_an_expectations_file_for_another_backend_warns(tmp_path, small):
    (tmp_path / "typo.yaml").write_text("backend: nupmy\nexpectations:\n  - cases: '*'\n    status: skip\n"
                                        "    reason: typo\n")
    done = run_oracle(tmp_path, small, "--expectations", "typo.yaml")  # 25
    assert done.returncode == 0 and "names backend 'nupmy', which is not in this run" in done.stdout


def test_no_isolate_with_an_exit_in_the_middle_of_a_case_is_never_green(tmp_path, small):
    (tmp_path / "exits.py").write_text("import os\ndef fn(*a, **k):\n    os._exit(0)\n")
    done = run_oracle(tmp_path, small, "--backend", "exits.py:fn", "--no-isolate")  # 4
    assert done.returncode == 3 and "before reaching a verdict" in done.stderr, done.stdout + done.stderr


def test_lf_reruns_only_the_last_failures(tmp_path, small):
    from tests.conftest import WRONG_BACKEND

    (tmp_path / "wrong.py").write_text(WRONG_BACKEND)
    args = ["--backend", "wrong.py:off_by_a_bit"]
    assert run_oracle(tmp_path, small, *args).returncode == 1  # 22: pytest 8 and 9
    again = run_oracle(tmp_path, small, *args, "--", "--lf")
    assert again.returncode == 1 and "rerun previous 1 failure" in again.stdout, again.stdout
    assert json.loads((tmp_path / "out" / "results.json").read_text())["summary"]["total"] == 1


def test_reproducers_carry_the_run_options_and_their_own_folder(tmp_path, small):
    from tests.conftest import WRONG_BACKEND

    (tmp_path / "wrong.py").write_text(WRONG_BACKEND)
    done = run_oracle(tmp_path, small, "--backend", "wrong.py:off_by_a_bit", "--timeout", "30", "--repeat", "2")
    assert done.returncode == 1
    record = next(r for r in json.loads((tmp_path / "out" / "results.json").read_text())["results"]
                  if r["status"] == "fail")
    reproducer = record["reproducer"]  # 24
    for option in ("--reference oracle", "--timeout 30", "--repeat 2", "--out out/reproduce"):
        assert option in reproducer
    again = cli_here(*reproducer.split()[1:], cwd=tmp_path)
    assert again.returncode == 1 and (tmp_path / "out" / "reproduce" / "results.json").is_file()
    assert json.loads((tmp_path / "out" / "results.json").read_text())["summary"]["total"] == 2  # untouched


def test_an_interrupted_run_says_so_and_is_never_green(tmp_path, small):
    (tmp_path / "slow.py").write_text("import time\nfrom conformance.impls.numpy_backend import separable_conv2d as c\n"
                                      "def fn(*a, **k):\n    time.sleep(0.5)\n    return c(*a, **k)\n")
    (tmp_path / "many.yaml").write_text(SMALL_CASE + "sweeps:\n  - base: {input: [1, 6, 5, 3], kernel: [3, 3], "
                                        "channel_multiplier: 2, out_channels: 4, padding: SAME}\n"
                                        "    grid: {seed: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}\n")
    process = subprocess.Popen([sys.executable, "-m", "conformance", "run", "--cases", "many.yaml", "--reference",
                                "oracle", "--backend", "slow.py:fn", "--out", "out"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=heed_interrupts)
    wait_for_results(tmp_path / "out", 2, process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + stderr
    run = json.loads((tmp_path / "out" / "results.json").read_text())["run"]
    assert run["completion"] == "interrupted" and run["verdict"]["exit_code"] == 130
    assert cli_here("merge", "out", "--out", "merged", cwd=tmp_path).returncode == 2  # 5: never merged as a pass


def heed_interrupts() -> None:
    """In the run's process before exec: SIGINT handled by default, as in a terminal. A test session started in
    the background of a non-interactive shell ignores SIGINT, and its children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_results(folder: Path, count: int, process: subprocess.Popen[str], limit: float = 120) -> None:
    """Until the journal holds `count` results (condition-based: no sleep a slow machine could outrun)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and process.poll() is None:
        path = folder / "results.jsonl"
        if path.is_file() and len(path.read_bytes().split(b"\n")) - 2 >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not reach {count} results (exit {process.poll()})")


# --- merge and report: what a results file must prove ---------------------------------------------------
@pytest.fixture(scope="module")
def shard_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two complete shards of one split, run once for the module (the runs are what takes time)."""
    folder = tmp_path_factory.mktemp("shards")
    (folder / "cases.yaml").write_text(SMALL_BANK, encoding="utf-8")
    for k in (1, 2):
        assert run_oracle(folder, folder / "cases.yaml", "--shard", f"{k}/2", out=f"shard{k}").returncode == 0
    return folder


@pytest.fixture
def shards(tmp_path: Path, shard_runs: Path) -> list[Path]:
    """A fresh copy of the two shards, one result each (SMALL_BANK's two cases hash apart), for a test to
    edit."""
    for k in (1, 2):
        shutil.copytree(shard_runs / f"shard{k}", tmp_path / f"shard{k}")
    return [tmp_path / "shard1", tmp_path / "shard2"]


def edit(folder: Path, change: object) -> None:
    path = folder / "results.json"
    document = json.loads(path.read_text())
    change(document)  # type: ignore[operator]
    path.write_text(json.dumps(document))


def merge(tmp_path: Path, *folders: Path) -> subprocess.CompletedProcess[str]:
    return cli_here("merge", *map(str, folders), "--out", str(tmp_path / "merged"), cwd=tmp_path)


def test_merge_of_a_complete_split_conforms(tmp_path, shards):
    done = merge(tmp_path, *shards)
    assert done.returncode == 0 and "CONFORMS" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("change, code, words", [
    (lambda d: d["run"].update(completion="interrupted"), 2, "did not complete"),  # 5: SIGINT'd shard
    (lambda d: d["run"].update(completion="internal_error"), 2, "did not complete"),
    (lambda d: d["run"].update(expected_results=5), 2, "holds 1 results of the 5"),  # missing results
    (lambda d: d["run"].pop("completion"), 2, "did not complete"),  # an older or foreign file
    (lambda d: d["run"].update(shard="2/3"), 2, "not one split"),  # shards of different N
    (lambda d: d["run"].update(reference="tensorflow"), 2, "differ in reference"),
    (lambda d: d["results"][0].update(status="FAIL"), 1, "unknown status"),  # 6
    (lambda d: d["results"][0].update(status="error", fault="harness"), 3, "HARNESS FAULT"),
])
def test_merge_refuses_or_fails_what_is_not_a_complete_passing_split(tmp_path, shards, change, code, words):
    edit(shards[1], change)
    done = merge(tmp_path, *shards)
    assert done.returncode == code and words in done.stdout + done.stderr, done.stdout + done.stderr


def test_merge_needs_every_shard(tmp_path, shards):
    done = merge(tmp_path, shards[0])
    assert done.returncode == 2 and "shard(s) 2/2 missing" in done.stderr


def test_merge_of_zero_results_judges_nothing(tmp_path, shards):
    for folder in shards:
        edit(folder, lambda d: (d["results"].clear(), d["run"].update(expected_results=0)))
    done = merge(tmp_path, *shards)
    assert done.returncode == 4 and "NOTHING JUDGED" in done.stdout


@pytest.mark.parametrize("text", [
    "not json", "[]", '{"results": {}}', '{"results": [{"case": "x"}]}',
    '{"results": [{"case": "x", "backend": "numpy", "status": 7}]}', '{"run": [], "results": []}',
    '{"results": [{"case": "x", "backend": "numpy", "status": "pass", "metrics": []}]}', "\udcff",
])
def test_malformed_results_files_are_usage_errors_for_merge_and_report(tmp_path, shards, text):
    (shards[1] / "results.json").write_text(text, errors="surrogateescape")
    for done in (merge(tmp_path, *shards), cli_here("report", str(shards[1]), cwd=tmp_path)):  # 18
        assert done.returncode == 2 and "results.json" in done.stderr, done.stdout + done.stderr
        assert "Traceback" not in done.stderr


def test_control_characters_in_a_message_leave_junit_valid(tmp_path, shards):
    edit(shards[1], lambda d: d["results"][0].update(status="fail", message="\x1b[31mred\x1b[0m \x00 nul"))
    done = merge(tmp_path, *shards)  # 19
    assert done.returncode == 1
    failure = next(ET.parse(tmp_path / "merged" / "junit.xml").getroot().iter("failure"))
    assert "red" in (failure.get("message") or "")


def test_report_of_an_unproven_results_file_says_so(tmp_path, shards):
    edit(shards[0], lambda d: d["run"].pop("completion"))
    assert cli_here("report", str(shards[0]), cwd=tmp_path).returncode == 0
    assert "UNPROVEN" in (shards[0] / "report.html").read_text()


@pytest.mark.parametrize("change, words", [
    (lambda d: d["results"][0].update(duration_s="fast"), "'duration_s' must be a number"),
    (lambda d: d["results"][0].update(message=None), "'message' must be a string"),
    (lambda d: d["run"].update(backends=5), "run.backends must be a list"),
    (lambda d: d.update(environment=[1]), "'environment' must be an object"),
    (lambda d: d.update(summary="x"), "'summary' must be an object"),
])
def test_report_refuses_mistyped_results_files_naming_the_field(tmp_path, shards, change, words):
    edit(shards[0], change)
    done = cli_here("report", str(shards[0]), cwd=tmp_path)
    assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("command", [["export", "--reference", "oracle"], ["merge", "shard1", "shard2"],
                                     ["golden", "build"]])
def test_an_unwritable_out_is_a_usage_error_naming_it(tmp_path, shards, small, command):
    (tmp_path / "a_file").write_text("")
    cases = [] if command[0] == "merge" else ["--cases", str(small)]
    done = cli_here(*command, *cases, "--out", str(tmp_path / "a_file" / "out"), cwd=tmp_path)
    assert done.returncode == 2 and "a_file" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_export_of_a_case_with_a_very_long_name(tmp_path):
    (tmp_path / "long.yaml").write_text(SMALL_CASE + f"    name: {'n' * 300}\n")
    done = cli_here("export", "--cases", "long.yaml", "--reference", "oracle", "--out", "pack", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    entry = json.loads((tmp_path / "pack" / "manifest.json").read_text())["cases"][0]
    assert entry["id"].endswith("n" * 300) and (tmp_path / "pack" / entry["files"]["input"]["path"]).is_file()


def test_no_isolate_with_workers_records_a_segfault_as_that_cases_crash(tmp_path, small):
    (tmp_path / "segv.py").write_text("import ctypes\n"
                                      "from conformance.impls.numpy_backend import separable_conv2d as c\n"
                                      "def fn(x, *a, **k):\n    if x.shape[-1] == 2:\n        ctypes.string_at(0)\n"
                                      "    return c(x, *a, **k)\n")
    done = run_oracle(tmp_path, small, "--backend", "segv.py:fn", "--no-isolate", "-n", "2")  # 17
    assert done.returncode == 1, done.stdout + done.stderr
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["run"]["completion"] == "complete" and document["summary"]["statuses"] == {"crash": 1, "pass": 1}
    crash = next(r for r in document["results"] if r["status"] == "crash")
    assert crash["parameters"]["padding"] == "SAME" and f"--id {crash['case']}" in crash["reproducer"]
    # Run once: xdist's loadgroup alone would give the crashing case to each replacement worker in turn,
    # until its restart limit stopped the run (conformance.execution.scheduling).
    assert done.stdout.count("node down") == 1, done.stdout


def test_the_report_page_counts_an_unknown_status_as_failing(tmp_path, shards):
    edit(shards[0], lambda d: d["results"][0].update(status="FAIL"))  # 6: e.g. a hand-edited file
    assert cli_here("report", str(shards[0]), cwd=tmp_path).returncode == 0
    page = (shards[0] / "report.html").read_text()
    assert "DOES NOT CONFORM: unknown status(es) FAIL" in page
    from conformance.reporting.html_report import page_data

    data = page_data([{"case": "c", "backend": "b", "status": "FAIL", "metrics": {}}], False)
    assert "FAIL" in data["failing"] and "FAIL" in data["statuses"]


def test_a_bug_of_the_harness_around_a_case_is_a_harness_fault_never_the_backends(tmp_path, small, monkeypatch):
    """Outside run_case (which records its own bugs), the plugin's part of a case (expectations, the record)
    can raise too: that is a fault of ours, exit 3, never the backend's crash."""
    from conformance.execution import plugin

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug of ours")

    monkeypatch.setattr(plugin, "apply_expectation", broken)
    done = run_oracle(tmp_path, small)
    assert done.returncode == EXIT_INTERNAL, done.stdout + done.stderr
    records = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert {(r["status"], r["fault"]) for r in records} == {("error", "harness")}
    assert all("harness fault (internal): KeyError" in r["message"] for r in records)


def test_a_worker_that_dies_while_the_backend_runs_isolated_is_a_harness_fault(tmp_path, small):
    """With the backend in a child of its own, a pytest-xdist worker dying during a case is the harness's
    process dying (here a plugin kills it): no verdict on the backend, unlike with --no-isolate (above)."""
    (tmp_path / "killer.py").write_text("import os\n\ndef pytest_runtest_call(item):\n"
                                        "    if '_c2_' in item.name:\n        os._exit(9)\n")
    done = cli("run", "--cases", str(small), "--reference", "oracle", "--out", "out", "-n", "2", "--", "-p", "killer",
               cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == EXIT_INTERNAL, done.stdout + done.stderr
    records = {r["status"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())["results"]}
    assert set(records) == {"error", "pass"} and records["error"]["fault"] == "harness", records
    assert "ended without a result" in records["error"]["message"]
    lost = records["error"]  # recorded with its case's parameters and reproducer, as any other result
    assert lost["parameters"]["input"] == [1, 5, 5, 2] and f"--id {lost['case']}" in lost["reproducer"]


def test_a_case_that_pytest_fails_before_the_test_is_a_harness_fault_even_without_isolation(tmp_path, small):
    (tmp_path / "broken_setup.py").write_text("def pytest_runtest_setup(item):\n    raise RuntimeError('broken')\n")
    done = cli("run", "--cases", str(small), "--reference", "oracle", "--out", "out", "--no-isolate", "--", "-p",
               "broken_setup", cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == EXIT_INTERNAL, done.stdout + done.stderr
    records = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert len(records) == 2 and {(r["status"], r["fault"]) for r in records} == {("error", "harness")}
