from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conformance.cases.case import Case
from conformance.cases.data import Inputs, numpy_dtype
from conformance.execution.config import RunConfig
from conformance.execution.session import run_suite
from conformance.judging.oracle import compute_oracle
from conformance.judging.reference import Reference, tensorflow_missing

REPO = Path(__file__).resolve().parent.parent
BANK = REPO / "cases"

# For tests whose TensorFlow runs in child processes: skipped without it, and never imported here
# (pytest.importorskip would import it into the worker, seconds of start-up for nothing).
needs_tensorflow = pytest.mark.skipif(tensorflow_missing() is not None, reason=str(tensorflow_missing()))

# The longest modules (docs/performance.md, "The test suite"), collected first: `--dist loadfile` hands
# modules out in collection order, and a long one handed out last leaves the other worker idle.
LONGEST_FIRST = ("test_sensitivity.py", "test_fault_zoo.py", "test_selftest.py", "test_cli.py",
                 "test_tensorflow_backend.py", "test_report_layout.py", "test_kill_resume.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the others keep their order


# --- golden entries without TensorFlow (test_golden) ------------------------------------------------------
class OracleAsTensorFlow:
    """A reference source for golden entries without TensorFlow's start-up: `golden build`'s entries with the
    oracle rounded to the dtype standing in for TensorFlow's output (it is within the model, as TensorFlow's
    must be), and TensorFlow's rejection of a case the contract forbids."""

    name = "tensorflow"

    def reference(self, case: Case, inputs: Inputs) -> Reference:
        if case.expect_error:
            return Reference("contract", "ok", "TensorFlow rejects it")
        oracle = compute_oracle(case, inputs)
        return Reference("tensorflow", "ok", output=oracle.output.astype(numpy_dtype(case.dtype)), oracle=oracle)

    def close(self) -> None:
        pass


SMALL_CASE = """
cases:
  - input: [1, 6, 5, 3]
    kernel: [3, 3]
    channel_multiplier: 2
    out_channels: 4
    padding: SAME
    strides: [2, 1]
"""

# A case the contract forbids (rate 2 with stride 2), as an entry of a `cases:` list.
FORBIDDEN_CASE = """
  - input: [1, 5, 5, 2]
    kernel: [3, 3]
    channel_multiplier: 1
    out_channels: 2
    padding: SAME
    strides: [2, 2]
    rates: [2, 2]
    expect: error
"""

# SMALL_CASE plus FORBIDDEN_CASE; their ids hash into different shards of 2.
SMALL_BANK = SMALL_CASE + FORBIDDEN_CASE

# Tags of the bank's full-size layers: the whole-bank tests leave them out (same code paths at real sizes).
FULL_SIZE_TAGS = frozenset({"bench", "network"})

WRONG_BACKEND = '''
from conformance.impls.numpy_backend import separable_conv2d

def off_by_a_bit(input, depthwise_filter, pointwise_filter, strides, padding, data_format=None, dilations=None):
    out = separable_conv2d(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    out.flat[-1] *= 1.01
    return out
'''


@pytest.fixture
def case_file(tmp_path: Path) -> Callable[..., Path]:
    """Write YAML text (dedented) to a case file and return its path."""
    def write(text: str, name: str = "cases.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path
    return write


@pytest.fixture
def small(case_file: Callable[..., Path]) -> Path:
    """SMALL_BANK: SMALL_CASE plus a case the contract forbids."""
    return case_file(SMALL_BANK)


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`sepconv-conformance ARGS...` as a user runs it, in a subprocess."""
    return subprocess.run([sys.executable, "-m", "conformance", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def cli_here(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`sepconv-conformance ARGS...` in this process: what cli() gives, without starting an interpreter.
    For commands whose failures cannot take the harness down: merge, report, list, validate, and runs whose
    backends are isolated in child processes (the default). A run with --no-isolate (a crash would end
    this process), pytest-xdist workers (-n), a signal to send or an environment of its own uses cli()."""
    import contextlib
    import io
    import os

    from conformance.cli import main

    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(["sepconv-conformance", *args], code, out.getvalue(), err.getvalue())


def bank_but_full_size() -> list:
    """The default bank's cases but its full-size layers (FULL_SIZE_TAGS): what the whole-bank tests run
    (the correct implementations and the CuPy stand-in in test_selftest; test_cupy_backend's coverage)."""
    from conformance.cases.loader import load_cases

    return [c for c in load_cases([BANK]) if not FULL_SIZE_TAGS & set(c.tags)]


# --- the report tests' run (test_html_report, test_browser) ----------------------------------------
XSS = '<img src=x onerror="window.__xss = 1"> & </script><!-- <b>bold</b>'

REPORT_CASES = f"""
cases:
  - input: [2, 7, 6, 5]
    kernel: [3, 3]
    channel_multiplier: 2
    out_channels: 6
    padding: SAME
    description: '{XSS}'
    tags: [xss]
  - input: [1, 8, 7, 3]
    kernel: [2, 2]
    channel_multiplier: 1
    out_channels: 4
    padding: SAME
    data_format: NCHW
    dtype: float16
  - input: [1, 6, 5, 3]
    kernel: [3, 3]
    channel_multiplier: 2
    out_channels: 4
    padding: VALID
    data: integers
""" + FORBIDDEN_CASE

# Raises on every call, with markup and a script breakout in its message.
EVIL = '''
def conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format=None, dilations=None):
    raise ValueError("</script><script>window.__xss = 2</script><img src=x onerror=\\"window.__xss = 3\\">")
'''

# Right, except that it dies on batch 2 and hangs on float16.
FLAKY = '''
import os
import time

from conformance.impls.numpy_backend import separable_conv2d


def conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format=None, dilations=None):
    if input.dtype.name == "float16":
        time.sleep(60)
    if input.shape[0] == 2:
        os.abort()
    return separable_conv2d(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
'''

REPORT_MUTANTS = ["conformance.impls.mutants:last_channel_dropped", "conformance.impls.mutants:same_split_before"]


def write_run(folder: Path, reference: str = "oracle") -> dict[str, Any]:
    """Run REPORT_CASES against the NumPy backend, two mutants, EVIL and FLAKY (isolated, 3 s timeout) into
    folder/out; returns the parsed results.json (test_html_report, test_browser)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cases.yaml").write_text(textwrap.dedent(REPORT_CASES).lstrip(), encoding="utf-8")
    (folder / "evil.py").write_text(EVIL, encoding="utf-8")
    (folder / "flaky.py").write_text(FLAKY, encoding="utf-8")
    backends = ["numpy", *REPORT_MUTANTS, f"{folder / 'evil.py'}:conv", f"{folder / 'flaky.py'}:conv"]
    code = run_suite(RunConfig(cases=[str(folder / "cases.yaml")], backends=backends, out=str(folder / "out"),
                                reference=reference, timeout=3.0, quiet=True))
    assert code == 1  # the mutants and the misbehaving backends do not conform
    return json.loads((folder / "out" / "results.json").read_text(encoding="utf-8"))


# --- a backend with two builds: right before and broken now, or the other way (baseline tests) ------------
BASELINE_BACKEND = '''
import numpy as np

from conformance.impls.alternatives import fp64_then_cast
from conformance.impls.numpy_backend import separable_conv2d

MODE = {mode!r}


def conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format=None, dilations=None):
    args = (input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    channels = input.shape[3 if data_format == "NHWC" else 1]
    if channels == 3:  # case A: right before, broken now
        result = separable_conv2d(*args)
        if MODE == "after":
            result[0, 0, 0, 0] += 1
        return result
    if channels == 2:  # case B: broken before, right now
        result = separable_conv2d(*args)
        if MODE == "before":
            result[0, 0, 0, 0] += 1
        return result
    # case C: correctly rounded before, float32 accumulation now: still right, closer to the limit
    return fp64_then_cast(*args) if MODE == "before" else separable_conv2d(*args)
'''

BASELINE_CASES = """
cases:
  - {input: [1, 6, 5, 3], kernel: [3, 3], channel_multiplier: 1, out_channels: 3, padding: SAME}
  - {input: [1, 6, 5, 2], kernel: [3, 3], channel_multiplier: 1, out_channels: 3, padding: SAME}
  - {input: [1, 9, 9, 64], kernel: [3, 3], channel_multiplier: 2, out_channels: 32, padding: SAME}
"""


# --- a backend with three subtle bugs (test_diagnosis, test_shrink) ---------------------------------------
# The last output channel dropped when O % 8 != 0; SAME's odd pixel of padding on the wrong side, only with
# a stride of 2; float16's pointwise sum held in float16.
THREE_BUGS = '''
import numpy as np

from conformance.impls import mutants
from conformance.impls.numpy_backend import separable_conv2d


def conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format=None, dilations=None):
    args = (input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    if padding == "SAME" and 2 in strides[1:3]:
        out = mutants.same_split_before(*args)
    elif np.asarray(input).dtype == np.float16:
        out = mutants.dtype_accumulation(*args)
    else:
        out = separable_conv2d(*args)
    out = np.array(out)
    if out.shape[-1] % 8:
        out[..., -1] = 0
    return out
'''


# --- a report at scale: 500+ failures of 8 kinds, with a baseline (test_report_layout) -------------------
LARGE_CASES = """
sweeps:
  - name: a_rather_long_case_name_that_a_real_bank_would_have
    description: one of the sweep's cases, with a description long enough to need clipping in the table
    base: {input: [2, 12, 11, 3], kernel: [3, 3], channel_multiplier: 2, out_channels: 5}
    grid:
      data_format: [NHWC, NCHW]
      padding: [SAME, VALID, [[2, 1], [0, 1]]]
      strides: [[1, 1], [2, 2]]
      out_channels: [5, 7]
      kernel: [[3, 3], [2, 3]]
      dtype: [float32, float16]
cases:
  - {input: [1, 64, 64, 32], kernel: [3, 3], channel_multiplier: 1, out_channels: 255, padding: SAME}
"""
LARGE_MUTANTS = [f"conformance.impls.mutants:{name}" for name in
                 ("last_channel_dropped", "same_split_before", "kernel_transposed", "one_element_off",
                  "replicate_padding", "extra_row", "last_batch_zeroed", "multiplier_swapped")]


def write_large_run(folder: Path) -> tuple[Path, Path]:
    """A run of LARGE_CASES (97 cases) against the NumPy backend and LARGE_MUTANTS (500+ failures, every
    kind of map at its largest on the big case) into folder/out, and a baseline run (NumPy and the first
    mutant) into folder/baseline; returns (out, baseline)."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = folder / "large.yaml"
    cases.write_text(textwrap.dedent(LARGE_CASES).lstrip(), encoding="utf-8")
    for name, backends in (("baseline", ["numpy", LARGE_MUTANTS[0]]), ("out", ["numpy", *LARGE_MUTANTS])):
        run_suite(RunConfig(cases=[str(cases)], backends=backends, out=str(folder / name), reference="oracle",
                            no_isolate=True, quiet=True))
    return folder / "out", folder / "baseline"
