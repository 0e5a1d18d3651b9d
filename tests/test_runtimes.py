"""The runtime backends (onnxruntime, openvino, jax, torch, tensorflow on a device): the spec syntax, the
shared mapping of TensorFlow's arguments, each installed runtime judged on TensorFlow's hard conventions
(SAME with dilation and strides, asymmetric explicit padding, NCHW, bfloat16, the backward pass where it
has one), where rejections come from, and the conformance matrix of several backends.

A runtime that is not installed skips its tests with the reason, unless SEPCONV_REQUIRE_RUNTIMES names it
(CI installs onnxruntime, openvino and jax: there a missing one fails)."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conformance.cases.contract import same_padding
from conformance.cases.loader import load_file
from conformance.execution.backends import Backend, BackendError, runtime_spec
from conformance.execution.isolation import load_backend
from conformance.execution.runner import run_case
from conformance.execution.support import Support, SupportError
from conformance.impls.runtime_adapter import AdapterRejection, read_arguments
from conformance.judging.references import OracleReference
from conformance.reporting.html_report import render_report
from conformance.reporting.markdown import summary_markdown
from conformance.reporting.matrix import conformance_matrix
from tests.conftest import WRONG_BACKEND, cli, cli_here

REQUIRED = set(filter(None, os.environ.get("SEPCONV_REQUIRE_RUNTIMES", "").split(",")))
PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "jax": "jax", "torch": "torch"}

# TensorFlow's hard conventions, each in a small case: SAME with dilation, SAME at stride 2 (the odd pixel
# after), asymmetric explicit padding in both layouts, a channel multiplier, and every dtype.
CONVENTIONS = """
cases:
  - {input: [1, 7, 6, 3], kernel: [3, 2], channel_multiplier: 2, out_channels: 5, padding: SAME, rates: [2, 3]}
  - {input: [2, 8, 7, 3], kernel: [3, 3], channel_multiplier: 1, out_channels: 4, padding: SAME, strides: [2, 2]}
  - {input: [1, 7, 9, 2], kernel: [2, 3], channel_multiplier: 2, out_channels: 3,
     padding: [[2, 0], [1, 3]], strides: [1, 2]}
  - {input: [1, 7, 9, 2], kernel: [2, 3], channel_multiplier: 2, out_channels: 3,
     padding: [[2, 0], [1, 3]], strides: [2, 1], data_format: NCHW}
  - {input: [1, 6, 6, 4], kernel: [3, 3], channel_multiplier: 1, out_channels: 8, padding: VALID,
     data_format: NCHW, dtype: float16}
  - {input: [1, 6, 6, 4], kernel: [3, 3], channel_multiplier: 1, out_channels: 8, padding: SAME, dtype: bfloat16}
  - {input: [1, 5, 5, 2], kernel: [3, 3], channel_multiplier: 2, out_channels: 3, padding: SAME, dtype: float64}
  - {input: [1, 6, 5, 2], kernel: [3, 3], channel_multiplier: 2, out_channels: 3, padding: SAME, strides: [2, 1],
     mode: backward}
"""
# Inputs the contract forbids: a runtime may refuse them itself, or accept them (its adapter then refuses).
FORBIDDEN = """
cases:
  - {input: [1, 5, 5, 2], kernel: [3, 3], channel_multiplier: 1, out_channels: 2, padding: SAME, strides: [2, 2],
     rates: [2, 2], expect: error}
  - {input: [1, 4, 4, 2], kernel: [3, 3], channel_multiplier: 1, out_channels: 2, padding: VALID, rates: [2, 2],
     expect: error}
"""


# Known findings (docs/runtime-findings.md): these conventions cases fail on these runtimes, and must go on
# failing until the runtime is fixed (then the entry and its expectations go).
KNOWN_FAILURES = {("openvino", "float64")}


def isolated(spec: str) -> Iterator[Backend]:
    """The backend in a process of its own, as `run` calls it: no runtime is imported into the test's
    process (JAX and OpenVINO start threads, and a later fork of this process could deadlock)."""
    backend = load_backend(spec)
    try:
        yield backend
    finally:
        backend.fn.close()


def runtime_or_skip(name: str) -> None:
    if importlib.util.find_spec(PACKAGES[name]) is None:
        if name in REQUIRED:
            pytest.fail(f"{name} is required here (SEPCONV_REQUIRE_RUNTIMES) but not installed")
        pytest.skip(f"{name} is not installed (pip install -e \".[{name}]\")")


@pytest.fixture(scope="module")
def conventions(tmp_path_factory: pytest.TempPathFactory) -> list:
    path = tmp_path_factory.mktemp("cases") / "conventions.yaml"
    path.write_text(CONVENTIONS, encoding="utf-8")
    return load_file(path)


# --- the spec, the shared mapping, declared support -----------------------------------------------------

def test_runtime_specs_name_a_device_and_a_precision_mode() -> None:
    assert runtime_spec("numpy") is None and runtime_spec("tensorflow") is None  # the bundled control
    assert runtime_spec("pkg.module:fn") is None
    spec = runtime_spec("onnxruntime")
    assert spec is not None and (spec.device, spec.precision) == ("CPUExecutionProvider", "accurate")
    spec = runtime_spec("tensorflow:/GPU:0,precision=default")
    assert spec is not None and (spec.runtime, spec.device, spec.precision) == ("tensorflow", "/GPU:0", "default")
    spec = runtime_spec("torch:cuda:1")
    assert spec is not None and spec.device == "cuda:1"
    with pytest.raises(BackendError, match="precision=accurate"):
        runtime_spec("jax,precision=fast")
    with pytest.raises(BackendError, match="empty device"):
        runtime_spec("openvino:")


def test_a_missing_runtime_or_device_is_exit_2_naming_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="JAX has no nosuchplatform platform|jax is not installed"):
        load_backend("jax:nosuchplatform")
    with pytest.raises(BackendError, match="TensorFlow has no device /GPU:7"):
        load_backend("tensorflow:/GPU:7")
    if importlib.util.find_spec("torch") is None:
        done = cli_here("run", "--backend", "torch", "--out", str(tmp_path / "out"), cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert "pip install 'sepconv-conformance[torch]'" in done.stderr


def test_same_padding_and_output_geometry_are_tensorflows() -> None:
    x = np.zeros((1, 7, 6, 3), np.float32)
    dw, pw = np.zeros((3, 2, 3, 2), np.float32), np.zeros((1, 1, 6, 5), np.float32)
    geometry = read_arguments(x, dw, pw, [1, 1, 1, 1], "SAME", "NHWC", [2, 3])
    assert geometry.pads == (*same_padding(7, 3, 1, 2), *same_padding(6, 2, 1, 3)) == (2, 2, 1, 2)
    nchw = read_arguments(x.transpose(0, 3, 1, 2), dw, pw, [1, 1, 2, 2], "SAME", "NCHW", [1, 1])
    assert (nchw.channels, nchw.strides) == (3, (2, 2))
    assert nchw.pads == (*same_padding(7, 3, 2, 1), *same_padding(6, 2, 2, 1))
    explicit = read_arguments(x, dw, pw, [1, 1, 1, 1], [[0, 0], [2, 0], [1, 3], [0, 0]], "NHWC", [1, 1])
    assert explicit.pads == (2, 0, 1, 3) and not explicit.violations
    forbidden = read_arguments(x, dw, pw, [1, 2, 2, 1], "SAME", "NHWC", [2, 2])
    assert forbidden.violations and "all strides must be 1" in forbidden.violations[0]
    with pytest.raises(AdapterRejection, match="batch and channel"):
        read_arguments(x, dw, pw, [2, 1, 1, 1], "SAME", "NHWC", [1, 1])


def test_declared_reasons_are_in_the_skip_message(conventions: list) -> None:
    support = Support.from_mapping({"dtypes": ["float32"], "reasons": {"dtypes": "no half-precision units"}})
    bfloat16 = next(c for c in conventions if c.dtype == "bfloat16")
    assert support.reason_to_skip(bfloat16) == ("the backend does not support dtype bfloat16 (supports float32): "
                                                "no half-precision units")
    with pytest.raises(SupportError, match="reasons: colour"):
        Support.from_mapping({"reasons": {"colour": "blue"}})


# --- each runtime, judged --------------------------------------------------------------------------------

@pytest.mark.runtime
@pytest.mark.parametrize("spec", ["onnxruntime", "openvino", "jax", "torch", "tensorflow:/CPU:0"])
def test_runtime_follows_tensorflows_conventions(spec: str, conventions: list) -> None:
    """Every case a runtime takes passes against the float64 oracle (bar its known findings, which must
    still fail); what it does not take is a skip with the declared reason; the record names the runtime,
    device and precision mode. bfloat16 included: OpenVINO's binding needs its bits written by hand."""
    name = spec.split(":")[0]
    if name != "tensorflow":
        runtime_or_skip(name)
    for backend in isolated(spec):
        assert "precision accurate" in (backend.version or "")
        results = {case: run_case(case, backend, OracleReference()) for case in conventions}
    judged = {case: r for case, r in results.items() if r.status != "skip"}
    assert len(judged) >= 5, [r.message for r in results.values()]
    known = {case for case in judged if (name, case.dtype) in KNOWN_FAILURES}
    assert all(judged[case].status == "fail" for case in known)
    assert all(r.status == "pass" for case, r in judged.items() if case not in known), \
        [(r.case, r.message) for r in judged.values() if r.status != "pass"]
    for skipped in (r for r in results.values() if r.status == "skip"):
        assert ": " in skipped.message.split(")", 1)[-1], skipped.message  # the declared reason follows


@pytest.mark.runtime
@pytest.mark.parametrize("name", ["onnxruntime", "openvino", "jax"])
def test_a_rejection_says_whether_the_runtime_or_the_adapter_refused(name: str, tmp_path: Path) -> None:
    runtime_or_skip(name)
    path = tmp_path / "forbidden.yaml"
    path.write_text(FORBIDDEN, encoding="utf-8")
    for backend in isolated(name):
        for case in load_file(path):
            result = run_case(case, backend, OracleReference())
            assert result.status == "pass", result.message
            assert result.rejected_by in ("runtime", "accepted_by_runtime")
            said = "accepted it" if result.rejected_by == "accepted_by_runtime" else "refused it"
            assert said in result.message, result.message


# --- the conformance matrix ------------------------------------------------------------------------------

def _record(case: str, backend: str, status: str, error: float | None = None, **extra: str) -> dict:
    metrics = {} if error is None else {"max_error_in_limits": error}
    return {"case": case, "backend": backend, "status": status, "metrics": metrics, "expect": "result",
            "parameters": {}, **extra}


def test_the_matrix_groups_failing_rows_and_lists_accepted_forbidden_inputs() -> None:
    from conformance.reporting.diagnosis import failure_groups

    records = [_record("a", "x", "pass", 0.1), _record("a", "y", "fail", 7.0),
               _record("b", "x", "pass", 0.2), _record("b", "y", "pass", 0.3),
               _record("c", "x", "fail", 3.0), _record("c", "y", "skip"),
               {**_record("d", "x", "pass"), "expect": "error", "rejected_by": "accepted_by_runtime"},
               {**_record("d", "y", "pass"), "expect": "error", "rejected_by": "runtime"}]
    groups = failure_groups(records)
    matrix = conformance_matrix(records, ["x", "y"], groups)
    order = [row["case"] for row in matrix["rows"]]
    assert set(order[:2]) == {"a", "c"} and order[2:] == ["b", "d"]  # failing rows first, by group
    assert [row["group"] is not None for row in matrix["rows"]] == [True, True, False, False]
    by_case = {row["case"]: row for row in matrix["rows"]}
    assert by_case["a"]["differs"] and not by_case["b"]["differs"]
    assert by_case["a"]["cells"]["y"] == {"status": "fail", "error": 7.0}
    assert matrix["accepted_forbidden"] == {"x": ["d"]}
    text = summary_markdown({"results": records, "summary": {"per_backend": {"x": {}, "y": {}}}}, groups, None)
    assert "| `a` |" in text and "**fail** 7" in text and "| `b` |" not in text
    assert "`x` itself accepts 1 forbidden inputs" in text


def test_the_report_has_a_matrix_for_several_backends_only() -> None:
    records = [_record("a", "x", "pass", 0.1), _record("a", "y", "fail", 7.0)]
    run = {"backends": ["x", "y"], "reference": "oracle"}
    page = render_report({"results": records, "run": run, "summary": {"per_backend": {}}})
    assert 'id="matrix-table"' in page
    single = render_report({"results": records[:1], "run": {"backends": ["x"]}, "summary": {"per_backend": {}}})
    assert 'id="matrix-table"' not in single


def test_merge_puts_runs_of_other_backends_side_by_side(small: Path, tmp_path: Path) -> None:
    """One run per runtime, merged: one verdict and one matrix; a backend in two sets is refused."""
    (tmp_path / "wrong.py").write_text(WRONG_BACKEND, encoding="utf-8")
    for folder, backends in (("a", ["numpy"]), ("b", ["wrong.py:off_by_a_bit"]),
                             ("c", ["numpy", "wrong.py:off_by_a_bit"])):
        specs = [argument for backend in backends for argument in ("--backend", backend)]
        cli_here("run", "--cases", str(small), *specs, "--reference", "oracle", "--out", folder, cwd=tmp_path)
    done = cli_here("merge", "a", "b", "--out", "merged", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr  # the wrong backend fails a case
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert merged["run"]["backends"] == ["numpy", "wrong.py:off_by_a_bit"]
    assert set(merged["run"]["backend_fingerprints"]) == set(merged["run"]["backends"])
    assert "### Conformance matrix (2 cases x 2 backends)" in (tmp_path / "merged" / "summary.md").read_text()
    refused = cli_here("merge", "a", "c", "--out", "again", cwd=tmp_path)
    assert refused.returncode == 2 and "runs numpy with other backends" in refused.stderr


BUGGY_ADAPTER = '''
from conformance.impls.runtime_adapter import checked, grouped_filter, read_arguments


def conv(input, depthwise_filter, pointwise_filter, strides, padding, data_format=None, dilations=None):
    geometry = read_arguments(input, depthwise_filter, pointwise_filter, strides, padding, data_format, dilations)
    return checked(geometry, "a runtime", lambda: grouped_filter(None))  # a bug of the adapter's own code
'''


@pytest.mark.parametrize("isolate", [True, False])
def test_a_bug_in_an_adapter_is_a_harness_fault_never_a_rejection(small: Path, tmp_path: Path, isolate: bool) -> None:
    """On the forbidden case too: a pass there would be a green gate that was never earned."""
    (tmp_path / "buggy.py").write_text(BUGGY_ADAPTER, encoding="utf-8")
    run, options = (cli_here, []) if isolate else (cli, ["--no-isolate"])  # in-process: a process of its own
    done = run("run", "--cases", str(small), "--backend", "buggy.py:conv", "--reference", "oracle", *options,
               "--out", "out", cwd=tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    records = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert len(records) == 2 and all(r["status"] == "error" and r["fault"] == "harness" for r in records)
    assert all("adapter failed at runtime_adapter.py" in r["message"] for r in records), records[0]["message"]
