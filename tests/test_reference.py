"""TensorFlow as reference: checked against the oracle, run twice, never blamed on the backend."""

from __future__ import annotations

import numpy as np
import pytest

from conformance.cases.case import Case
from conformance.cases.data import materialize
from conformance.execution.backends import resolve_backend
from conformance.execution.runner import prepare, run_case
from conformance.judging import reference as reference_module
from conformance.judging.reference import build_reference
from conformance.judging.references import OracleReference, TensorFlowReference

CASE = Case(input=(1, 6, 6, 3), kernel=(3, 3), channel_multiplier=2, out_channels=4, strides=(1, 1),
            rates=(1, 1), padding="SAME", data_format="NHWC", dtype="float32")


@pytest.fixture(autouse=True)
def fresh_cache():
    prepare.cache_clear()
    yield
    prepare.cache_clear()


def test_healthy_tensorflow_is_the_reference():
    ref = build_reference(CASE, materialize(CASE))
    assert (ref.source, ref.status) == ("tensorflow", "ok")
    assert ref.metrics["tf_max_error_in_limits"] < 1


def test_refusal_is_recorded_and_the_backend_judged_against_the_oracle():
    case = Case(**{**CASE.__dict__, "dtype": "float64", "strides": (1, 2)})
    result = run_case(case, resolve_backend("numpy"), TensorFlowReference())
    assert result.status == "pass"
    assert (result.reference, result.reference_status) == ("oracle", "refused")
    assert "equal length strides" in result.reference_detail


def test_wrong_tensorflow_values_are_a_mismatch_not_a_backend_failure(monkeypatch):
    real = reference_module.run_tensorflow
    monkeypatch.setattr(reference_module, "run_tensorflow", lambda case, inputs: real(case, inputs) * 1.01)
    result = run_case(CASE, resolve_backend("numpy"), TensorFlowReference())
    assert (result.status, result.reference, result.reference_status) == ("pass", "oracle", "mismatch")
    assert result.metrics["tf_max_error_in_limits"] > 1


def test_run_to_run_differences_are_nondeterminism(monkeypatch):
    real = reference_module.run_tensorflow
    calls = []

    def flaky(case, inputs):
        calls.append(1)
        out = real(case, inputs)
        if len(calls) % 2 == 0:
            out.flat[0] = np.nextafter(out.flat[0], np.float32(np.inf))
        return out
    monkeypatch.setattr(reference_module, "run_tensorflow", flaky)
    ref = build_reference(CASE, materialize(CASE))
    assert (ref.source, ref.status) == ("oracle", "nondeterministic")
    assert "differ in 1 elements" in ref.detail


def test_tensorflow_accepting_a_forbidden_case_is_a_deviation():
    case = Case(**{**CASE.__dict__, "strides": (2, 2), "rates": (2, 2), "expect_error": True})
    result = run_case(case, resolve_backend("numpy"), TensorFlowReference())
    assert result.status == "pass" and result.reference_status == "mismatch"
    assert "TensorFlow accepts input the contract forbids" in result.reference_detail


def test_malformed_ranks_are_never_sent_to_tensorflow(monkeypatch):
    def explode(case, inputs):
        raise AssertionError("TensorFlow must not be called: it aborts the process on malformed ranks")
    monkeypatch.setattr(reference_module, "run_tensorflow", explode)
    case = Case(**{**CASE.__dict__, "depthwise_filter_shape": (3, 3, 3), "expect_error": True})
    result = run_case(case, resolve_backend("numpy"), TensorFlowReference())
    assert (result.status, result.reference_status) == ("pass", "not_run")


def test_oracle_only_mode_does_not_touch_tensorflow(monkeypatch):
    monkeypatch.setattr(reference_module, "run_tensorflow", lambda *a: pytest.fail("TensorFlow called"))
    result = run_case(CASE, resolve_backend("numpy"), OracleReference())
    assert (result.status, result.reference, result.reference_status) == ("pass", "oracle", "not_run")


def test_tensorflows_import_does_not_pull_in_jax_and_jax_still_imports_after(tmp_path):
    """TensorFlow imports JAX where it is installed (TFLite's converter): tensorflow_module hides it for that
    import only. Stand-in `tensorflow` and `jax` packages: the first records what its own `import jax` met."""
    import os
    import subprocess
    import sys

    for name, source in (("jax", "version = 'stand-in'\n"), ("tensorflow", (
            "import types\ntry:\n    import jax\n    met = 'jax'\nexcept ImportError:\n    met = 'ImportError'\n"
            "config = types.SimpleNamespace(experimental=types.SimpleNamespace(\n"
            "    enable_tensor_float_32_execution=lambda enabled: None))\n"))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(source)
    probe = ("import sys\nfrom conformance.judging.reference import tensorflow_module\n"
             "print(tensorflow_module().met, 'jax' in sys.modules)\nimport jax\nprint(jax.version)\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.stdout.split() == ["ImportError", "False", "stand-in"], done.stderr
