"""The tolerance model's two error rates, measured on the whole default bank:
every correct implementation (rounding differently) passes, every known-wrong one is caught."""

from __future__ import annotations

import pytest

from conformance.backends import Backend, resolve_backend
from conformance.loader import load_cases
from conformance.result import FAILING_STATUSES, Result
from conformance.runner import run_case
from impls.alternatives import ALTERNATIVES
from impls.mutants import MUTANTS
from tests.conftest import BANK

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def verdicts() -> dict[str, list[Result]]:
    """Every zoo backend over the bank, case by case, so each TensorFlow reference is computed once."""
    backends = [resolve_backend("numpy")] + [Backend(name, fn) for name, fn in {**ALTERNATIVES, **MUTANTS}.items()]
    results: dict[str, list[Result]] = {b.name: [] for b in backends}
    for case in load_cases([BANK]):
        for backend in backends:
            results[backend.name].append(run_case(case, backend))
    return results


@pytest.mark.parametrize("name", ["numpy", *ALTERNATIVES])
def test_correct_implementation_passes_the_whole_bank(verdicts, name):
    failures = [f"{r.case}: {r.status}: {r.message}" for r in verdicts[name] if r.status != "pass"]
    assert not failures, "\n".join(failures[:10])


@pytest.mark.parametrize("name", MUTANTS)
def test_mutant_is_caught_by_the_bank(verdicts, name):
    caught = [r for r in verdicts[name] if r.status in FAILING_STATUSES]
    assert caught, f"mutant {name} passes every case of the bank"


def test_zoo_is_big_enough():
    assert len(ALTERNATIVES) >= 3 and len(MUTANTS) >= 8
