"""Plugging in a backend: entry points, `backends`, declared support, and the example package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.cases.case import Case, Origin
from conformance.execution.backends import BackendError, resolve_backend
from conformance.execution.runner import run_case
from conformance.execution.support import Support, SupportError
from conformance.judging.references import OracleReference
from tests.conftest import REPO, cli, cli_here

EXAMPLE = REPO / "examples" / "sepconv-example-backend"

MIXED_DTYPES = """
cases:
  - input: [1, 6, 5, 3]
    kernel: [3, 3]
    channel_multiplier: 2
    out_channels: 4
    padding: SAME
    dtype: float32
  - input: [1, 6, 5, 3]
    kernel: [3, 3]
    channel_multiplier: 2
    out_channels: 4
    padding: SAME
    dtype: float16
"""


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package installed (as a user would, with pip) into a folder of its own."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(EXAMPLE)], check=True, capture_output=True, timeout=300)
    return site


def _env(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}


def test_backends_lists_an_installed_package_with_its_version(example_site, tmp_path):
    done = cli("backends", "--json", cwd=tmp_path, env=_env(example_site))
    assert done.returncode == 0, done.stderr
    listed = {b["name"]: b for b in json.loads(done.stdout)}
    assert listed["example"]["source"] == "package sepconv-example-backend"
    assert listed["example"]["version"] == "0.3.0"
    assert listed["example"]["runs_here"] is True
    assert "dtypes=float32,float64" in listed["example"]["supports"]
    assert listed["numpy"]["runs_here"] is True


def test_backends_loads_each_backend_in_a_child_of_its_own_and_lists_one_that_crashes(tmp_path, monkeypatch):
    """The harness imports none of them: a backend that aborts while imported is listed as not running,
    with how its process ended, and the others are listed as usual."""
    from conformance.execution import isolation

    (tmp_path / "crashy.py").write_text("import os\nos.abort()\ndef fn(*args, **kwargs):\n    pass\n")
    crashy, missing = f"{tmp_path / 'crashy.py'}:fn", "no_such_module:fn"
    monkeypatch.setattr(isolation, "named_backends", lambda: [(name, "package p", name) for name in
                                                              ("numpy", crashy, missing)])
    listed = {b.name: b for b in isolation.list_backends()}
    assert listed["numpy"].problem is None and listed["numpy"].version
    assert "killed by signal SIGABRT while loading the backend" in str(listed[crashy].problem)
    assert "cannot be imported: ModuleNotFoundError" in str(listed[missing].problem)
    assert listed[crashy].version is None and listed[missing].support is None


def test_example_package_runs_through_its_entry_point(example_site, case_file, tmp_path):
    """Unsupported dtypes are skipped with the reason; the contract cases it is known to get wrong are
    xfail through the expectations file it ships; everything else passes. Against the oracle: what is
    tested is how a packaged backend plugs in (TensorFlow as the reference has tests of its own)."""
    mixed = case_file(MIXED_DTYPES)
    done = cli("run", "--backend", "example", "--cases", str(mixed), "--cases",
               str(REPO / "cases" / "contract_errors.yaml"), "--reference", "oracle", "--out", "out", cwd=tmp_path,
               env=_env(example_site))
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    statuses = document["summary"]["statuses"]
    assert statuses["xfail"] == 28 and statuses["pass"] > 20 and "fail" not in statuses
    skipped = [r for r in document["results"] if r["status"] == "skip"]
    assert skipped and all("does not support dtype" in r["message"] for r in skipped)
    assert any(r["case"].endswith("float16") for r in skipped)
    assert document["run"]["backend_versions"] == {"example": "0.3.0"}
    assert document["run"]["expectations"]["example"].endswith("expectations.yaml")


def test_support_declaration_is_validated():
    with pytest.raises(SupportError, match="dtypes: unknown float8"):
        Support.from_mapping({"dtypes": ["float8"]})
    with pytest.raises(SupportError, match="unknown key.*max_size"):
        Support.from_mapping({"max_size": 3})
    with pytest.raises(SupportError, match="max_rate: expected a positive integer"):
        Support.from_mapping({"max_rate": 0})


def test_invalid_support_declaration_stops_the_run(tmp_path, small):
    (tmp_path / "declares.py").write_text(
        "from conformance.impls.numpy_backend import separable_conv2d as conv\n"
        "def separable_conv2d(*args, **kwargs):\n    return conv(*args, **kwargs)\n"
        "separable_conv2d.supports = {'paddings': ['SAME', 'REFLECT']}\n")
    with pytest.raises(BackendError, match="paddings: unknown REFLECT"):
        resolve_backend(str(tmp_path / "declares.py") + ":separable_conv2d")
    done = cli_here("run", "--cases", str(small), "--backend", "declares.py:separable_conv2d", "--out", "out",
                    cwd=tmp_path)
    assert done.returncode == 2 and "REFLECT" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(("declared", "reason"), [
    ({"data_formats": ["NCHW"]}, "does not support NHWC"),
    ({"paddings": ["VALID"]}, "does not support SAME padding"),
    ({"max_channels": 2}, "input channels 3 exceeds the backend's max_channels: 2"),
    ({"max_rate": 1}, "dilation rate 2 exceeds"),
])
def test_case_outside_the_declaration_is_skipped_with_the_reason(declared, reason):
    from conformance.execution.backends import Backend

    calls = []
    backend = Backend("limited", lambda *args, **kwargs: calls.append(args), None, Support.from_mapping(declared))
    case = Case(input=(1, 6, 5, 3), kernel=(3, 3), channel_multiplier=1, out_channels=2, strides=(1, 1),
                rates=(2, 1), padding="SAME", data_format="NHWC", dtype="float32", origin=Origin("x.yaml", 1))
    result = run_case(case, backend, OracleReference())
    assert result.status == "skip" and reason in result.message
    assert not calls  # never called
    assert Support.from_mapping({}).reason_to_skip(case) is None


@pytest.mark.parametrize(("declared", "problem"), [
    ({"dtypes": None}, "dtypes: expected a non-empty list of names"),
    ({"dtypes": []}, "dtypes: expected a non-empty list of names"),
    ({"data_formats": "NHWC"}, "data_formats: expected a non-empty list of names"),
])
def test_malformed_or_empty_declarations_are_errors_not_an_all_skipped_run(declared, problem):
    with pytest.raises(SupportError, match=problem):
        Support.from_mapping(declared)


def test_expectations_path_of_the_wrong_type_is_a_backend_error(tmp_path):
    (tmp_path / "odd.py").write_text("EXPECTATIONS = 5\ndef conv(*args, **kwargs):\n    return None\n")
    with pytest.raises(BackendError, match="EXPECTATIONS must be a path, got 5"):
        resolve_backend(str(tmp_path / "odd.py") + ":conv")
