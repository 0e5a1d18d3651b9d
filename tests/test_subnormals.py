"""Subnormals (issue 13): flushing like TensorFlow's CPU kernels is allowed by default and recorded; a
backend that declares it preserves them is held to it."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.cases.loader import load_cases
from conformance.execution.backends import Backend
from conformance.execution.runner import run_case
from conformance.execution.support import Support, SupportError
from conformance.impls import mutants
from conformance.judging.references import OracleReference
from tests.conftest import BANK


def flushes(*args: Any, **kwargs: Any) -> Any:
    """FTZ/DAZ, declaring nothing: what TensorFlow's CPU kernels do in float32, bfloat16 and float64."""
    return mutants._conv(*args, bug="denormals_flushed", **kwargs)


@pytest.fixture(scope="module")
def subnormal_cases() -> list:
    return [c for c in load_cases([BANK]) if c.data == "subnormal" and not c.expect_error]


def test_flushing_passes_by_default_and_the_record_says_so(subnormal_cases):
    results = [run_case(c, Backend("ftz", flushes), OracleReference()) for c in subnormal_cases]
    assert [r.case for r in results if r.status != "pass"] == []
    assert {r.metrics["subnormal_policy"] for r in results} == {"either"}
    did = {r.metrics["subnormals"] for r in results if r.parameters["dtype"] == "float32"}
    assert did == {"flushed"}


def test_a_backend_that_declares_preserve_and_flushes_fails(subnormal_cases):
    liar = Backend("ftz", flushes, support=Support.from_mapping({"subnormals": "preserve"}))
    results = [run_case(c, liar, OracleReference()) for c in subnormal_cases if c.dtype == "float32"]
    assert results and all(r.status == "fail" and "declared subnormals: preserve" in r.message for r in results)
    mutant = Backend("denormals_flushed", mutants.denormals_flushed,
                     support=Support.from_mapping(mutants.denormals_flushed.supports))
    assert run_case(subnormal_cases[0], mutant, OracleReference()).status == "fail"


def test_preserving_backends_are_recorded_as_preserving(subnormal_cases):
    from conformance.impls.numpy_backend import separable_conv2d

    results = [run_case(c, Backend("numpy", separable_conv2d), OracleReference()) for c in subnormal_cases]
    assert all(r.status == "pass" and r.metrics["subnormals"] == "preserved" for r in results)


def test_an_unknown_subnormal_policy_is_refused_naming_the_key():
    with pytest.raises(SupportError, match="subnormals: expected preserve or flush"):
        Support.from_mapping({"subnormals": "sometimes"})
