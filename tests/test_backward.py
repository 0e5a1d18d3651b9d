"""The backward pass (mode: backward): the exact gradients against TensorFlow's GradientTape, the NumPy
backend's backward pass and the correct alternatives against TensorFlow on the bank's backward cases,
every backward mutant caught, each gradient judged on its own, and the plumbing (case files, skips,
isolation, forbidden inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conformance.cases import contract
from conformance.cases.case_yaml import case_from_parameters, render_case_file
from conformance.cases.data import materialize
from conformance.cases.loader import CaseFileError, load_cases
from conformance.execution.backends import Backend, resolve_backend
from conformance.execution.config import RunConfig
from conformance.execution.isolation import load_backend
from conformance.execution.runner import run_case
from conformance.execution.session import run_suite
from conformance.impls import backward_zoo
from conformance.impls.numpy_backend import separable_conv2d, separable_conv2d_backprop
from conformance.judging.backward import GRADIENTS, backward_oracle
from conformance.judging.reference import run_tensorflow_backward
from conformance.judging.references import OracleReference, TensorFlowReference
from conformance.reporting.diagnosis import failure_groups
from conformance.result import Result
from tests.conftest import BANK, needs_tensorflow

BACKWARD_BANK = BANK / "backward.yaml"

SWEEP = """
defaults: {mode: backward}
sweeps:
  - base: {input: [2, 7, 6, 3], kernel: [3, 2], channel_multiplier: 2, out_channels: 4}
    grid:
      padding: [SAME, VALID, [[2, 0], [1, 2]]]
      strides: [[1, 1], [2, 2]]
  - base: {input: [1, 9, 9, 2], kernel: [3, 3], channel_multiplier: 1, out_channels: 3, rates: [2, 1]}
    grid: {padding: [SAME, VALID]}
"""


def _cases(tmp_path: Path, text: str) -> list:
    (tmp_path / "cases.yaml").write_text(text, encoding="utf-8")
    return load_cases([tmp_path / "cases.yaml"])


@needs_tensorflow
def test_the_exact_gradients_are_tensorflows_in_float64(tmp_path: Path):
    for case in _cases(tmp_path, SWEEP.replace("{mode: backward}", "{mode: backward, dtype: float64}")):
        inputs = materialize(case)
        exact, found = backward_oracle(case, inputs), run_tensorflow_backward(case, inputs)
        for name in GRADIENTS:
            error = np.abs(found[name] - exact[name].output)
            assert error.max() <= 1e-13 * max(1.0, float(exact[name].bound.max())), (case.id, name)


@needs_tensorflow
def test_numpy_and_the_correct_alternatives_pass_every_backward_case_of_the_bank():
    cases = load_cases([BACKWARD_BANK])
    assert len(cases) >= 50 and all(c.mode == "backward" for c in cases)
    reference = TensorFlowReference()
    backends = [resolve_backend("numpy")] + [resolve_backend(f"conformance.impls.backward_zoo:{name}")
                                             for name in backward_zoo.ALTERNATIVES]
    results = [run_case(case, backend, reference) for case in cases for backend in backends]
    assert {(r.backend, r.case, r.status) for r in results if r.status != "pass"} == set()
    statuses = {r.reference_status for r in results}
    assert "ok" in statuses and "refused" in statuses  # NCHW with explicit padding, unequal strides: TF refuses


@pytest.fixture(scope="module")
def mutant_results() -> dict[str, list[Result]]:
    """Every backward mutant on every backward case but the network layers, against the oracle, case by
    case: the mutants of a case share its exact gradients (the runner keeps them for the next backend)."""
    cases = [c for c in load_cases([BACKWARD_BANK]) if "network" not in c.tags]
    backends = [resolve_backend(f"conformance.impls.backward_zoo:{name}") for name in backward_zoo.BUGS]
    reference = OracleReference()
    results: dict[str, list[Result]] = {name: [] for name in backward_zoo.BUGS}
    for case in cases:
        for name, backend in zip(backward_zoo.BUGS, backends):
            results[name].append(run_case(case, backend, reference))
    return results


def test_every_backward_mutant_is_caught_on_the_bank_and_says_which_gradient(mutant_results):
    for name in backward_zoo.BUGS:
        failing = [r for r in mutant_results[name] if r.status == "fail"]
        assert failing, f"{name} is not caught"
        for result in failing:
            wrong = result.metrics["failing_gradients"]
            assert wrong and all(g in GRADIENTS for g in wrong)
            assert result.message.startswith(f"{wrong[0]}: ")
            assert result.details.get("gradient") in wrong
            assert {g: v["passed"] for g, v in result.metrics["gradients"].items()} == \
                {g: g not in wrong for g in GRADIENTS}


def test_a_backend_wrong_in_one_gradient_fails_on_that_one_only(tmp_path: Path):
    def backprop(*args, **kwargs):
        inputs, depthwise, pointwise = separable_conv2d_backprop(*args, **kwargs)
        return inputs, depthwise, pointwise * np.asarray(1.01, pointwise.dtype)

    results = [run_case(case, Backend("one_wrong", separable_conv2d, backprop=backprop), OracleReference())
               for case in _cases(tmp_path, SWEEP)]
    assert {r.status for r in results} == {"fail"}
    assert all(r.metrics["failing_gradients"] == ["pointwise_filter_gradient"] for r in results)
    assert all(r.details["gradient"] == "pointwise_filter_gradient" and r.details["layout"] == "HWKO"
               and "heatmap" not in r.details for r in results)  # a filter is no image: no spatial maps
    [group] = failure_groups([r.to_dict() for r in results])  # grouped by the gradient that is off
    assert group.pattern == "pointwise_filter_gradient: elements over their limit" and group.count == len(results)


def test_the_input_gradient_of_a_failing_case_has_maps_in_the_cases_layout(tmp_path: Path):
    backend = resolve_backend("conformance.impls.backward_zoo:nchw_input_gradient_as_nhwc")
    [case] = _cases(tmp_path, "cases:\n  - {input: [2, 6, 5, 3], kernel: [3, 3], channel_multiplier: 1, "
                              "out_channels: 2, padding: SAME, data_format: NCHW, mode: backward}\n")
    result = run_case(case, backend, OracleReference())
    assert result.status == "fail" and result.details["gradient"] == "input_gradient"
    assert result.details["layout"] == "NCHW" and result.details["shape"] == [2, 6, 5, 3]  # logical NHWC maps


def test_a_backend_without_a_backward_pass_is_skipped_with_the_reason(tmp_path: Path):
    [case] = _cases(tmp_path, SWEEP)[:1]
    result = run_case(case, resolve_backend("conformance.impls.mutants:last_channel_dropped"), OracleReference())
    assert result.status == "skip" and "no backward pass" in result.message and "backprop" in result.message
    numpy = resolve_backend("numpy")
    assert numpy.backprop is separable_conv2d_backprop  # the module attribute next to the forward function


def test_forbidden_backward_input_must_be_rejected(tmp_path: Path):
    cases = [c for c in load_cases([BACKWARD_BANK]) if c.expect_error]
    assert cases
    reference = OracleReference()
    assert {run_case(c, resolve_backend("numpy"), reference).status for c in cases} == {"pass"}

    def accepting(input, depthwise_filter, pointwise_filter, output_gradient, *args, **kwargs):
        return np.zeros(1), np.zeros(1), np.zeros(1)
    results = [run_case(c, Backend("accepting", separable_conv2d, backprop=accepting), reference) for c in cases]
    assert {(r.status, r.kind) for r in results} == {("fail", "accepted_forbidden")}


CRASHING = '''
import os
import time

from conformance.impls.numpy_backend import separable_conv2d


def conv(*args, **kwargs):
    return separable_conv2d(*args, **kwargs)


def separable_conv2d_backprop(input, depthwise_filter, pointwise_filter, output_gradient, *args, **kwargs):
    if input.shape[0] == 2:
        os.abort()
    time.sleep(60)
'''


def test_a_backward_pass_that_crashes_or_hangs_is_that_cases_result(tmp_path: Path):
    (tmp_path / "crashing.py").write_text(CRASHING, encoding="utf-8")
    backend = load_backend(f"{tmp_path / 'crashing.py'}:conv", timeout=3.0)
    assert backend.backprop is not None
    cases = _cases(tmp_path, SWEEP)
    try:
        crash = run_case(cases[0], backend, OracleReference())  # batch 2: aborts
        hang = run_case(cases[-1], backend, OracleReference())  # batch 1: sleeps past the timeout
    finally:
        backend.fn.close()
    assert (crash.status, hang.status) == ("crash", "timeout")
    assert "SIGABRT" in crash.message or "signal 6" in crash.message


def test_mode_in_case_files_ids_sweeps_and_round_trips(tmp_path: Path):
    cases = _cases(tmp_path, SWEEP + "cases:\n  - {input: [1, 4, 4, 1], kernel: [2, 2], channel_multiplier: 1, "
                                      "out_channels: 1, padding: VALID, mode: forward}\n")
    assert sorted(c.mode for c in cases) == ["backward"] * 8 + ["forward"]
    assert all(("_backward" in c.id) == (c.mode == "backward") for c in cases)
    assert [case_from_parameters(c.parameters()) for c in cases] == cases  # results records rebuild the case
    (tmp_path / "written.yaml").write_text(render_case_file(cases), encoding="utf-8")  # what shrink and fuzz write
    assert [c.id for c in load_cases([tmp_path / "written.yaml"])] == [c.id for c in cases]
    backward = next(c for c in cases if c.mode == "backward")
    inputs = materialize(backward)
    assert inputs.output_gradient is not None and inputs.output_gradient.dtype == inputs.input.dtype
    assert materialize(next(c for c in cases if c.mode == "forward")).output_gradient is None


@pytest.mark.parametrize("text, words", [
    ("{input: [1, 4, 4, 1], kernel: [2, 2], channel_multiplier: 1, out_channels: 1, padding: VALID, mode: sideways}",
     "mode"),
    ("{input: [1, 4, 4, 1], kernel: [2, 2], channel_multiplier: 1, out_channels: 1, padding: VALID, mode: backward, "
     "data: integers}", "a backward case takes normal, uniform, positive data"),
])
def test_a_bad_mode_or_backward_data_is_refused_naming_the_field(tmp_path: Path, text: str, words: str):
    with pytest.raises(CaseFileError) as error:
        _cases(tmp_path, f"cases:\n  - {text}\n")
    assert words in str(error.value) and "cases.yaml:2" in str(error.value)


def test_an_isolated_run_of_backward_cases_records_each_gradient(tmp_path: Path):
    (tmp_path / "cases.yaml").write_text(SWEEP, encoding="utf-8")
    code = run_suite(RunConfig(cases=[str(tmp_path / "cases.yaml")], backends=["numpy"], out=str(tmp_path / "out"),
                               reference="oracle", quiet=True))
    assert code == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert len(results) == 8 and all(r["parameters"]["mode"] == "backward" for r in results)
    assert all(set(r["metrics"]["gradients"]) == set(GRADIENTS) for r in results)


@needs_tensorflow
def test_goldens_carry_backward_entries_verified_per_gradient(tmp_path: Path):
    import hashlib

    from conformance.judging.golden import GoldenError, GoldenStore, build_goldens
    from conformance.judging.references import GoldenReference

    cases = _cases(tmp_path, SWEEP)
    assert build_goldens(cases, tmp_path / "golden", TensorFlowReference())["entries"] == len(cases)
    golden = GoldenReference(str(tmp_path / "golden"))
    results = [run_case(case, resolve_backend("numpy"), golden) for case in cases]
    assert {(r.status, r.reference) for r in results} == {("pass", "tensorflow")}
    mutant = resolve_backend("conformance.impls.backward_zoo:no_batch_sum")
    assert {run_case(case, mutant, golden).status for case in cases if case.batch > 1} == {"fail"}
    # A stored gradient moved (its checksum updated, as a forger would): verification refuses the entry.
    store = GoldenStore(tmp_path / "golden")
    npz_path, json_path = store.paths(cases[0])
    with np.load(npz_path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    moved = arrays["pointwise_filter_gradient.tensorflow"].astype(np.float32) * np.float32(1.5)  # still float32
    arrays["pointwise_filter_gradient.tensorflow"] = moved.astype(np.float64)
    np.savez(npz_path, **arrays)
    meta = json.loads(json_path.read_text())
    meta["npz_sha256"] = hashlib.sha256(npz_path.read_bytes()).hexdigest()
    json_path.write_text(json.dumps(meta))
    with pytest.raises(GoldenError, match="pointwise_filter_gradient"):
        store.read(cases[0], materialize(cases[0]))


def test_the_vector_pack_holds_each_gradient_with_its_error_model(tmp_path: Path):
    from conformance.tools.export import export_pack

    cases = _cases(tmp_path, SWEEP)[:2]
    manifest = export_pack(cases, tmp_path / "pack", OracleReference())["manifest"]
    entry = json.loads(Path(manifest).read_text())["cases"][0]
    assert entry["mode"] == "backward"
    assert set(entry["files"]) == {"input", "depthwise_filter", "pointwise_filter", "output_gradient",
                                   *(f"{g}.{kind}" for g in GRADIENTS for kind in ("oracle", "bound"))}
    lengths = {g: entry["gradient_tolerances"][g]["accumulation"] for g in GRADIENTS}
    assert lengths["depthwise_filter_gradient"] > lengths["input_gradient"]  # N*Ho*Wo terms, not kh*kw*M
    stored = np.load(tmp_path / "pack" / entry["files"]["pointwise_filter_gradient.oracle"]["path"])
    exact = backward_oracle(cases[0], materialize(cases[0]))["pointwise_filter_gradient"].output
    assert np.array_equal(stored, exact)


def test_fuzz_draws_backward_cases_without_changing_its_forward_draws():
    from conformance.cases.loader import BACKWARD_DATA
    from conformance.tools.fuzz import draw_cases

    forward = draw_cases(60, 5)
    mixed = draw_cases(60, 5, backward_fraction=0.5)
    assert [c.mode for c in forward] == ["forward"] * 60
    backward = [c for c in mixed if c.mode == "backward"]
    assert 15 <= len(backward) <= 45 and all(c.data in BACKWARD_DATA for c in backward)
    # The same draws, some made backward (with their data, where the backward pass takes it).
    assert [m.id.replace("_backward", "") for c, m in zip(forward, mixed) if c.data in BACKWARD_DATA] == \
        [c.id for c in forward if c.data in BACKWARD_DATA]


def test_shrink_keeps_a_backward_failure_and_its_gradient(tmp_path: Path):
    from tests.conftest import cli_here

    (tmp_path / "cases.yaml").write_text(SWEEP, encoding="utf-8")
    spec = "conformance.impls.backward_zoo:no_batch_sum"
    run = cli_here("run", "--cases", "cases.yaml", "--backend", spec, "--reference", "oracle", "--out", "out", "-q",
                   cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    failing = [r for r in json.loads((tmp_path / "out" / "results.json").read_text())["results"]
               if r["status"] == "fail"]
    shrink = cli_here("shrink", "--results", "out/results.json", "--id", failing[0]["case"], "--backend", spec,
                      "--reference", "oracle", cwd=tmp_path)
    assert shrink.returncode == 0, shrink.stdout + shrink.stderr
    [shrunk] = load_cases([tmp_path / "shrunk.yaml"])
    assert shrunk.mode == "backward" and shrunk.batch == 2  # the bug needs a second image to show
    assert "filter_gradient" in shrink.stdout


@needs_tensorflow
def test_tensorflow_as_a_backend_fails_exactly_where_its_backward_health_is_not_ok():
    """The control experiment: tf.GradientTape judged against the exact gradients conforms wherever the
    reference health is ok, and each failure is one of docs/backward.md's findings."""
    cases = [c for c in load_cases([BACKWARD_BANK]) if not c.expect_error]
    tensorflow = resolve_backend("tensorflow")
    assert tensorflow.backprop is not None
    health = {c.id: run_case(c, resolve_backend("numpy"), TensorFlowReference()).reference_status for c in cases}
    failing = {c.id: r.message for c in cases if (r := run_case(c, tensorflow, OracleReference())).status != "pass"}
    assert failing and all(health[case] != "ok" for case in failing), failing
    assert {health[case] for case in failing} == {"refused", "mismatch"}


# --- the verdict's power, case by case: every case a backward mutant's bug can show on catches it ----------
def _remainder(case) -> bool:
    g = contract.geometry(case)
    return (case.input[1] + g.pad_top + g.pad_bottom - (case.kernel[0] - 1) * case.rates[0] - 1) \
        % case.spatial_strides[0] != 0


def _odd_same(case) -> bool:
    g = contract.geometry(case)
    return case.padding == "SAME" and bool((g.pad_top + g.pad_bottom) % 2 or (g.pad_left + g.pad_right) % 2)


def _positions(case) -> int:
    g = contract.geometry(case)
    return case.batch * g.out_h * g.out_w


ELIGIBLE = {
    "remainder_rows_misaligned": _remainder,
    "filter_gradient_ignores_dilation": lambda c: max(c.rates) > 1,
    "same_split_before": _odd_same,
    "no_batch_sum": lambda c: c.batch > 1,
    # in the dtype over N*Ho*Wo terms: shows once there are enough of them to round
    "filter_gradient_in_dtype": lambda c: c.dtype in ("float16", "bfloat16") and _positions(c) >= 64,
    "input_gradient_kernel_rotated": lambda c: c.kernel[0] * c.kernel[1] > 1,
    "overlap_overwritten": lambda c: any((k - 1) * r + 1 > s for k, r, s in zip(c.kernel, c.rates, c.spatial_strides)),
    "padding_ignored_in_input_gradient": lambda c: contract.geometry(c).pad_top + contract.geometry(c).pad_left > 0,
    "multiplier_order": lambda c: c.channel_multiplier > 1,
    "nchw_input_gradient_as_nhwc": lambda c: c.data_format == "NCHW" and c.in_channels > 1,
    "pointwise_gradient_reshaped": lambda c: c.out_channels > 1 and c.depthwise_channels > 1,
}


def test_each_backward_mutant_is_caught_on_every_case_its_bug_can_show_on(mutant_results):
    assert set(ELIGIBLE) == set(backward_zoo.BUGS)
    cases = {c.id: c for c in load_cases([BACKWARD_BANK]) if not c.expect_error and "network" not in c.tags}
    missed = {}
    for name, eligible in ELIGIBLE.items():
        chosen = [r for r in mutant_results[name] if r.case in cases and eligible(cases[r.case])]
        assert len(chosen) >= 5, name
        missed[name] = [r.case for r in chosen if r.status == "pass"]
    assert {name: ids for name, ids in missed.items() if ids} == {}
