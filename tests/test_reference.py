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


def test_tensorflows_import_does_not_pull_in_jax_or_keras_and_both_still_import_after(tmp_path):
    """TensorFlow imports JAX (TFLite's converter) and Keras (tf.keras) where they are installed:
    tensorflow_module hides them for that import only. Stand-in `tensorflow`, `jax` and `keras` packages: the
    first records what its own imports met."""
    import os
    import subprocess
    import sys

    meets = "".join(f"try:\n    import {name}\n    met.append('{name}')\nexcept ImportError:\n    met.append('-')\n"
                    for name in ("jax", "keras"))
    for name, source in (("jax", "version = 'jax stand-in'\n"), ("keras", "version = 'keras stand-in'\n"),
                         ("tensorflow", "import types\nmet = []\n" + meets +
                          "config = types.SimpleNamespace(experimental=types.SimpleNamespace(\n"
                          "    enable_tensor_float_32_execution=lambda enabled: None))\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(source)
    probe = ("import sys\nfrom conformance.judging.reference import tensorflow_module\n"
             "print(*tensorflow_module().met, 'jax' in sys.modules, 'keras' in sys.modules, sep=',')\n"
             "import jax, keras\nprint(jax.version, keras.version, sep=',')\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.stdout.splitlines() == ["-,-,False,False", "jax stand-in,keras stand-in"], done.stdout + done.stderr


def test_a_tensorflow_that_needs_keras_at_import_gets_it(tmp_path):
    """Should a TensorFlow need a hidden package to import at all, it is imported again with it."""
    import os
    import subprocess
    import sys

    (tmp_path / "keras").mkdir()
    (tmp_path / "keras" / "__init__.py").write_text("version = 'keras stand-in'\n")
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(
        "import types\nimport keras\nmet = keras.version\n"
        "config = types.SimpleNamespace(experimental=types.SimpleNamespace(\n"
        "    enable_tensor_float_32_execution=lambda enabled: None))\n")
    probe = "from conformance.judging.reference import tensorflow_module\nprint(tensorflow_module().met)\n"
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.stdout.strip() == "keras stand-in", done.stdout + done.stderr
