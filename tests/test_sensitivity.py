"""The low-precision verdict's power, measured case by case (issue 13): on how many of the bank's eligible
cases each low-precision mutant is caught, not only whether a run goes red. Judged against the oracle (as a
machine without TensorFlow judges), in this process. The goals and the measured table are in
docs/tolerance.md, "Sensitivity, case by case"."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conformance.cases.case import Case
from conformance.cases.loader import load_cases
from conformance.execution.backends import Backend
from conformance.execution.runner import run_case
from conformance.impls import mutants
from conformance.impls.numpy_backend import separable_conv2d
from conformance.judging.references import OracleReference
from conformance.judging.tolerance import RANDOM_DATA, RMS_MIN_ELEMENTS
from tests.conftest import BANK, cli_here

LOW = ("float16", "bfloat16")


def _outputs(case: Case) -> int:
    from conformance.cases import contract

    g = contract.geometry(case)
    return case.batch * g.out_h * g.out_w * case.out_channels


# mutant -> (which cases it must be caught on, the share of them it must be caught on)
GOALS: dict[str, tuple[Callable[[Case], bool], float]] = {
    "zeros_long_reduction": (lambda c: c.dtype in LOW and c.depthwise_channels >= 256, 1.0),
    # Integer and subnormal data hold values bfloat16 represents exactly: the bug cannot show there.
    "bfloat16_in_float16": (lambda c: c.dtype == "float16" and c.data in RANDOM_DATA, 0.95),
    "dtype_accumulation": (lambda c: c.dtype in LOW and c.depthwise_channels >= 64 and c.data in RANDOM_DATA
                           and _outputs(c) >= RMS_MIN_ELEMENTS, 1.0),
}


@pytest.fixture(scope="module")
def low_precision_cases() -> list[Case]:
    """Every valid float16/bfloat16 forward case of the bank, but the full-size bench layers (the mutants
    here are the forward pass's; the backward pass's are measured in tests/test_backward.py)."""
    return [c for c in load_cases([BANK]) if c.dtype in LOW and not c.expect_error and "bench" not in c.tags
            and c.mode == "forward"]


@pytest.fixture(scope="module")
def statuses(low_precision_cases) -> dict[tuple[str, str], str]:
    """(case id, backend) -> status: every case judged on the NumPy backend and on each mutant it is eligible
    for, case by case, so that the backends of a case share its oracle (the runner keeps it for the next
    backend; on the full-size layers the oracle is much of the cost)."""
    backends = [Backend("numpy", separable_conv2d), *(Backend(name, mutants.MUTANTS[name]) for name in GOALS)]
    source = OracleReference()
    return {(case.id, backend.name): run_case(case, backend, source).status
            for case in low_precision_cases for backend in backends
            if backend.name == "numpy" or GOALS[backend.name][0](case)}


@pytest.mark.parametrize("name", sorted(GOALS))
def test_each_low_precision_mutant_is_caught_case_by_case(low_precision_cases, statuses, name):
    eligible = [c.id for c in low_precision_cases if GOALS[name][0](c)]
    caught = sum(statuses[case, name] == "fail" for case in eligible)
    assert len(eligible) >= 14, eligible  # the bank holds long low-precision reductions (cases/low_precision.yaml)
    assert caught >= GOALS[name][1] * len(eligible), f"{name}: caught on {caught} of {len(eligible)} eligible cases"


def test_correct_float32_accumulation_passes_every_low_precision_case(low_precision_cases, statuses):
    assert [c.id for c in low_precision_cases if statuses[c.id, "numpy"] != "pass"] == []


def test_dtype_accumulation_passes_when_declared_and_fails_when_not(low_precision_cases):
    long = next(c for c in low_precision_cases if c.depthwise_channels >= 512 and c.dtype == "float16")
    undeclared = run_case(long, Backend("native", mutants.MUTANTS["dtype_accumulation"]), OracleReference())
    assert undeclared.status == "fail" and "SUPPORTS accumulator" in undeclared.message
    assert "float32 accumulator" in undeclared.metrics["error_model"]
    from conformance.execution.support import Support

    declared = Backend("native", mutants.MUTANTS["dtype_accumulation"],
                       support=Support.from_mapping({"accumulator": {"float16": "float16"}}))
    assert run_case(long, declared, OracleReference()).status == "pass"


def test_float32_and_float64_limits_are_the_classic_ones():
    """Only float16/bfloat16 over a wider accumulator changed: float32/float64 keep KS * (u*B + eta)."""
    from conformance.judging.tolerance import SMALLEST_SUBNORMAL, UNIT_ROUNDOFF, Tolerance

    case = next(c for c in load_cases([BANK]) if c.dtype == "float32" and not c.expect_error)
    tolerance = Tolerance.for_case(case)
    u, eta, ks = UNIT_ROUNDOFF["float32"], SMALLEST_SUBNORMAL["float32"], tolerance.accumulation
    assert tolerance.coefficients() == (ks * u, 0.0, ks * eta) and not tolerance.wide_accumulator


@pytest.mark.parametrize("declared, words", [
    ({"accumulator": {"float8": "float32"}}, "accumulator: unknown dtype 'float8'"),
    ({"accumulator": {"float32": "float16"}}, "accumulator: float32 cannot accumulate in 'float16'"),
    ({"accumulator": ["float16"]}, "accumulator: expected a mapping"),
])
def test_a_bad_accumulator_declaration_stops_the_run_naming_the_key(tmp_path, small, declared, words):
    source = f"from conformance.impls.numpy_backend import separable_conv2d\nSUPPORTS = {declared!r}\n"
    (tmp_path / "declared.py").write_text(source)
    done = cli_here("run", "--cases", str(small), "--backend", "declared.py:separable_conv2d", "--reference", "oracle",
               "--out", "out", cwd=tmp_path)
    assert done.returncode == 2 and words in done.stdout + done.stderr, done.stdout + done.stderr
