"""Hostile case files are refused fast, with file, line, field and reason: alias bombs, deep nesting,
huge integers and grids, oversized files; and cases too large for memory are refused before anything
is allocated (conformance.execution.budget)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from conformance.cases import loader
from conformance.cases.case import Case, Origin
from conformance.cases.loader import CaseFileError, load_cases
from conformance.execution import budget
from conformance.execution.budget import GIB, case_bytes, default_case_budget, elements, over_budget

BASE = "{input: [1, 5, 5, 2], kernel: [3, 3], channel_multiplier: 1, out_channels: 2, padding: SAME}"


def problems(*paths) -> list[tuple[int, str, str]]:
    with pytest.raises(CaseFileError) as info:
        load_cases(list(paths))
    return [(p.line, p.field, p.reason) for p in info.value.problems]


# --- alias bombs and other hostile YAML ----------------------------------------------------------------
def alias_bomb(value: str) -> str:
    """Billion laughs: anchors a1..a8 of 9 aliases each to the previous one, 9**8 = 43 million `value`s
    in 9 lines (lines 1 to 9)."""
    return f"a0: &a0 [{value}]\n" + "".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n"
                                            for i in range(1, 9))


def test_an_alias_bomb_in_a_field_fails_fast_with_a_bounded_message(case_file):
    path = case_file(f"{alias_bomb('lol')}cases:\n  - {BASE}\n  - tags: *a8\n    <<: {BASE}\n")
    start = time.perf_counter()
    found = problems(path)
    assert time.perf_counter() - start < 2
    tags = [(line, reason) for line, field, reason in found if field == "tags"]
    assert len(tags) == 1 and tags[0][0] == 12  # the line of `tags:`, not of the anchor (line 9)
    assert tags[0][1].startswith("expected a list of strings, got [[[...], [...]") and len(tags[0][1]) < 600
    assert (1, "a0", "unknown key in the file; allowed: version, defaults, cases, sweeps") in found


def test_an_alias_bomb_as_a_grid_axis_fails_fast(case_file):
    path = case_file(f"{alias_bomb('1')}sweeps:\n  - base: {BASE}\n    grid: {{seed: *a8}}\n")
    start = time.perf_counter()
    found = [(line, field, reason) for line, field, reason in problems(path) if field == "seed"]
    assert time.perf_counter() - start < 2
    assert len(found) == 9 and all(line == 12 and reason.startswith("expected an integer, got [[")
                                   for line, _, reason in found)


def test_a_self_referencing_alias_is_a_yaml_error(case_file):
    path = case_file(f"cases:\n  - {BASE}\n  - tags: &t [x, *t]\n")
    assert problems(path) == [(3, "", "invalid YAML: found unconstructable recursive node")]


def test_deep_nesting_is_a_yaml_error_at_its_line(case_file):
    path = case_file("cases:\n  - " + "[" * 1000 + "]" * 1000 + "\n")  # beyond Python's recursion limit
    assert problems(path) == [(2, "", f"invalid YAML: nested more than {loader.MAX_NESTING} levels deep")]


def test_an_integer_of_5000_digits_is_a_yaml_error_at_its_line(case_file):
    path = case_file(f"cases:\n  - {BASE}\n  - seed: {'1' * 5000}\n")
    [(line, field, reason)] = problems(path)
    assert (line, field) == (3, "") and reason.startswith("invalid YAML: cannot read the integer: Exceeds the limit")


def test_messages_quote_long_values_truncated(case_file):
    path = case_file(f"cases:\n  - {BASE[:-1]}, name: [{'x' * 10000}], dtype: {'y' * 10000}}}\n")
    found = problems(path)
    assert {field for _, field, _ in found} == {"name", "dtype"}
    assert all(len(reason) < 200 for _, _, reason in found), found


def test_an_oversized_file_is_refused_before_it_is_read(case_file, monkeypatch):
    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 100)
    path = case_file(f"cases:\n  - {BASE}\n  - {BASE}\n")
    assert problems(path) == [(0, "", f"the file has {path.stat().st_size:,} bytes, more than the limit of 100")]


# --- sweeps and case counts are limited before anything is expanded ------------------------------------
def test_a_grid_of_10_to_the_8_is_refused_at_the_sweep_before_it_is_expanded(case_file):
    axis = "[" + ", ".join(map(str, range(100))) + "]"
    path = case_file(f"cases:\n  - {BASE}\nsweeps:\n  - base: {BASE}\n    grid:\n      seed: {axis}\n"
                     f"      out_channels: {axis}\n      channel_multiplier: {axis}\n      tags: {axis}\n")
    start = time.perf_counter()
    found = problems(path)
    assert time.perf_counter() - start < 2
    assert found == [(4, "grid", ("the grid expands to 100,000,000 cases (100 x 100 x 100 x 100), more than the "
                                 "limit of 100,000 per sweep; split the sweep or shorten its axes"))]


def test_sweeps_share_the_file_limit(case_file, monkeypatch):
    monkeypatch.setattr(loader, "MAX_FILE_CASES", 10)
    grid = "{seed: [1, 2, 3], dtype: [float32, float64]}"
    path = case_file(f"sweeps:\n  - base: {BASE}\n    grid: {grid}\n  - base: {BASE}\n    grid: {grid}\n")
    assert problems(path) == [(4, "grid", ("the grid expands to 6 cases (3 x 2), more than the 4 left of the "
                                          "limit of 10 per file; split the sweep or shorten its axes"))]


def test_a_case_list_made_long_by_aliases_is_refused_before_building(case_file, monkeypatch):
    monkeypatch.setattr(loader, "MAX_FILE_CASES", 5)
    path = case_file(f"cases: [&c {BASE}, *c, *c, *c, *c, *c]\n")
    assert problems(path) == [(1, "cases", "6 items, more than the limit of 5 per file")]


def test_the_total_over_all_files_is_limited(case_file, monkeypatch):
    monkeypatch.setattr(loader, "MAX_TOTAL_CASES", 1)
    first = case_file(f"cases:\n  - {BASE}\n", "a.yaml")
    case_file(f"cases:\n  - {BASE[:-1]}, seed: 1}}\n", "b.yaml")
    assert problems(first.parent) == [(0, "", ("the files up to this one hold 2 cases, more than the limit of 1 "
                                              "per run"))]


# --- memory budget ---------------------------------------------------------------------------------------
def case(**changes) -> Case:
    base = Case(input=(1, 5, 5, 2), kernel=(3, 3), channel_multiplier=1, out_channels=2, strides=(1, 1),
                rates=(1, 1), padding="SAME", data_format="NHWC", dtype="float32", origin=Origin("big.yaml", 7))
    return dataclasses.replace(base, **changes)


def test_case_bytes_counts_every_stage_on_a_small_case():
    c = case(input=(2, 6, 5, 3), kernel=(3, 2), channel_multiplier=2, out_channels=4, padding=((1, 2), (0, 1)))
    e = elements(c)
    # padded 2*9*6*3; output (6+3-3)//1+1 = 7 by (5+1-2)+1 = 5
    assert e == budget.Elements(180, 36, 24, 324, 2 * 7 * 5 * 6, 2 * 7 * 5 * 4)
    held = 4 * (180 + 36 + 24) + 2 * 8 * e.output + 4 * e.output
    oracle = 8 * (2 * 180 + 324 + 2 * e.intermediate + 2 * e.output)
    assert case_bytes(c) == held + max(8 * (2 * 180 + 36 + 24), 4 * 240 + 4 * (324 + e.intermediate + e.output),
                                       oracle, 10 * 8 * e.output)


def test_24_gib_of_padding_counts():
    rows = 3 * 2**30  # padded input: 3 Gi elements, 24 GiB in the oracle's float64
    c = case(input=(1, 1, 1, 1), kernel=(1, 1), out_channels=1, padding=((rows - 1, 0), (0, 0)))
    assert elements(c).padded == rows and case_bytes(c) > 24 * GIB
    [problem] = over_budget([c], 4 * GIB)
    assert (problem.file, problem.line, problem.field) == ("big.yaml", 7, "")
    assert problem.reason == (f"case {c.id} needs about {budget.gib(case_bytes(c))} of memory (largest: the "
                              "padded input, 3,221,225,472 elements), more than the budget of 4.0 GiB per case "
                              "(--max-case-memory)")
    # held: oracle, bound and reference outputs (20 bytes x 3 Gi); the comparison's 10 float64 outputs
    assert budget.gib(case_bytes(c)) == "300.0 GiB"


def test_10_to_the_40_elements_are_counted_exactly():
    c = case(input=(10**10, 10**10, 10**10, 10**10), kernel=(1, 1), padding="VALID")
    output = 2 * 10**30
    assert elements(c) == budget.Elements(10**40, 10**10, 2 * 10**10, 10**40, 10**40, output)
    held = 4 * (10**40 + 3 * 10**10) + (2 * 8 + 4) * output
    assert case_bytes(c) == held + 8 * (2 * 10**40 + 10**40 + 2 * 10**40 + 2 * output)  # the oracle's stage
    [problem] = over_budget([c], 3 * GIB)
    assert problem.reason == (f"case {c.id} needs about 4.1e+32 GiB of memory (largest: the input, about 2**132 "
                              "elements), more than the budget of 3.0 GiB per case (--max-case-memory)")


def test_error_cases_count_what_an_accepting_backend_would_compute():
    padded = case(padding=((0, 0), (1, 1), (1, 1), (2**40, 0)), expect_error=True)  # channel padding 2**40
    assert elements(padded).padded == 7 * 7 * (2 + 2**40) and case_bytes(padded) > 2**40
    no_geometry = case(strides=(0, 1), expect_error=True)
    assert elements(no_geometry) == budget.Elements(50, 18, 4, 0, 0, 0)
    assert case_bytes(no_geometry) == 4 * 72 + max(8 * (100 + 22), 4 * 72)


def test_the_bank_fits_the_default_budget_and_the_default_is_a_quarter_of_memory():
    assert default_case_budget() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    cases = load_cases([Path(__file__).resolve().parent.parent / "cases"])
    assert over_budget(cases, default_case_budget()) == []
    assert max(map(case_bytes, cases)) < GIB  # the network layers are the largest
