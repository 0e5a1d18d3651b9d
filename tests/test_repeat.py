"""--repeat K: bitwise differences between calls of the same case are `nondeterministic`."""

from __future__ import annotations

import json

from conformance.cases.case import Case, Origin
from conformance.execution.backends import Backend
from conformance.execution.runner import run_case
from conformance.impls.numpy_backend import separable_conv2d
from conformance.judging.references import OracleReference
from tests.conftest import cli_here

# Like a kernel whose atomics land in a different order on each launch: the last bit of one element moves.
RACY_BACKEND = '''
import numpy as np
from conformance.impls.numpy_backend import separable_conv2d

calls = 0

def racy(input, depthwise_filter, pointwise_filter, strides, padding, data_format=None, dilations=None):
    global calls
    calls += 1
    out = separable_conv2d(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    if calls % 2 == 0:
        out.flat[3] = np.nextafter(out.flat[3], np.inf, dtype=out.dtype)
    return out
'''

CASE = Case(input=(1, 6, 5, 3), kernel=(3, 3), channel_multiplier=2, out_channels=4, strides=(1, 1),
            rates=(1, 1), padding="SAME", data_format="NHWC", dtype="float32", origin=Origin("x.yaml", 1))


def test_racy_backend_is_nondeterministic_and_the_message_says_where(small, tmp_path):
    (tmp_path / "racy.py").write_text(RACY_BACKEND)
    once = cli_here("run", "--cases", str(small), "--backend", "racy.py:racy", "--reference", "oracle",
               "--out", "once", cwd=tmp_path)
    assert once.returncode == 0, once.stdout + once.stderr  # a single call cannot see it
    done = cli_here("run", "--cases", str(small), "--backend", "racy.py:racy", "--repeat", "3", "--reference",
               "oracle", "--out", "out", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    racy = next(r for r in document["results"] if r["expect"] == "result")
    assert racy["status"] == "nondeterministic"
    assert "differs bitwise from call 1 at 1 of" in racy["message"] and "first at [0, 0, 0, 3]" in racy["message"]
    assert "--repeat 3" in racy["reproducer"].split(" --out ")[0]
    assert document["run"]["repeat"] == 3


def test_deterministic_backend_passes_with_repeats():
    result = run_case(CASE, Backend("numpy", separable_conv2d), OracleReference(), repeat=3)
    assert result.status == "pass", result.message


def test_a_backend_that_raises_only_sometimes_is_nondeterministic():
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("device busy")
        return separable_conv2d(*args, **kwargs)

    result = run_case(CASE, Backend("flaky", flaky), OracleReference(), repeat=2)
    assert result.status == "nondeterministic"
    assert "call 2 gave RuntimeError: device busy" in result.message


def test_repeat_must_be_positive(small, tmp_path):
    done = cli_here("run", "--cases", str(small), "--repeat", "0", "--reference", "oracle", "--out", "out",
               cwd=tmp_path)
    assert done.returncode == 2 and "--repeat: must be at least 1, got 0" in done.stdout + done.stderr


class Tensor:
    """An array-like (as a TensorFlow or PyTorch tensor is): it has __array__ and is not an ndarray."""

    def __init__(self, values):
        self.values = values

    def __array__(self, dtype=None, copy=None):
        return self.values


def test_array_likes_are_compared_by_value_across_repeats():
    calls = []

    def listy(*args, **kwargs):
        calls.append(1)
        out = separable_conv2d(*args, **kwargs)
        if len(calls) == 2:
            out.flat[0] += 1.0
        return Tensor(out)

    result = run_case(CASE, Backend("listy", listy), OracleReference(), repeat=2)
    assert result.status == "nondeterministic"
