"""run_case judges whatever a backend does and returns a Result; it never raises for the backend."""

from __future__ import annotations

import numpy as np

from conformance.execution.backends import Backend
from conformance.cases.case import Case
from conformance.execution.runner import run_case
from conformance.impls.numpy_backend import separable_conv2d

CASE = Case(input=(2, 5, 6, 3), kernel=(3, 3), channel_multiplier=2, out_channels=4, strides=(1, 1),
            rates=(1, 1), padding="SAME", data_format="NHWC", dtype="float32")


def judged(fn) -> tuple[str, str]:
    result = run_case(CASE, Backend("under_test", fn))
    return result.status, result.message


def test_sys_exit_inside_a_backend_is_its_error_not_the_end_of_the_run():
    def exits(*args, **kwargs):
        raise SystemExit(3)
    status, message = judged(exits)
    assert status == "error" and "SystemExit" in message


def test_raising_on_valid_input_is_an_error():
    def raises(*args, **kwargs):
        raise RuntimeError("device lost")
    assert judged(raises) == ("error", "raised on valid input: RuntimeError: device lost")


def test_non_array_result_is_an_error():
    status, message = judged(lambda *args, **kwargs: [[1.0]])
    assert status == "error" and "not an array" in message


def test_array_likes_are_accepted():
    class Wrapped:
        def __init__(self, array):
            self.array = array

        def __array__(self, dtype=None, copy=None):
            return self.array
    assert judged(lambda *a, **k: Wrapped(separable_conv2d(*a, **k)))[0] == "pass"


def test_a_backend_that_writes_into_its_inputs_cannot_corrupt_the_reference():
    def scribbles(x, dw, pw, *args, **kwargs):
        result = separable_conv2d(x, dw, pw, *args, **kwargs)
        x[...], dw[...], pw[...] = np.nan, np.nan, np.nan
        return result
    assert judged(scribbles)[0] == "pass"
    assert judged(separable_conv2d)[0] == "pass"
