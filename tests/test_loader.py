"""Loading case files: expansion, ids, and every kind of rejection with file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.case import DISTRIBUTIONS, Case
from conformance.loader import CaseFileError, load_cases

BASE = "input: [1, 5, 5, 2]\n    kernel: [3, 3]\n    channel_multiplier: 1\n    out_channels: 2\n    padding: SAME"


def problems(path: Path) -> list[tuple[int, str, str]]:
    with pytest.raises(CaseFileError) as info:
        load_cases([path])
    return [(p.line, p.field, p.reason) for p in info.value.problems]


def test_cases_defaults_and_sweeps_expand(case_file):
    path = case_file("""
        version: 1
        defaults: {dtype: float16, padding: VALID}
        cases:
          - {input: [2, 9, 9, 3], kernel: [3, 3], channel_multiplier: 2, out_channels: 4, strides: [2, 2]}
        sweeps:
          - name: grid
            base: {input: [1, 5, 5, 2], kernel: [3, 3], channel_multiplier: 1, out_channels: 2}
            grid:
              data_format: [NHWC, NCHW]
              padding: [SAME, VALID, [[2, 0], [0, 1]]]
        """)
    cases = load_cases([path])
    assert len(cases) == 1 + 2 * 3
    assert cases[0].id == "n2_h9w9_c3_k3x3_m2_o4_s2x2_r1x1_VALID_NHWC_float16"
    assert cases[0].origin.line == 4
    assert all(c.dtype == "float16" for c in cases)
    assert {c.padding for c in cases[1:]} == {"SAME", "VALID", ((2, 0), (0, 1))}
    assert "n1_h5w5_c2_k3x3_m1_o2_s1x1_r1x1_P2_0_0_1_NCHW_float16_grid" in {c.id for c in cases}


def test_case_is_frozen_and_ids_are_stable(case_file):
    path = case_file(f"cases:\n  - {BASE.replace(chr(10) + '    ', ', ').join('{}')}\n")
    first, second = load_cases([path]), load_cases([path])
    assert first == second
    with pytest.raises(AttributeError):
        first[0].dtype = "float64"  # type: ignore[misc]


@pytest.mark.parametrize("snippet, line, field, reason", [
    ("cases:\n  - [1, 2\n", 3, "", "invalid YAML"),
    (f"cases:\n  - {BASE}\n    padd: SAME\n", 7, "padd", "unknown key"),
    (f"cases:\n  - {BASE}\n    channel_multiplier: two\n", 7, "channel_multiplier", "expected an integer"),
    ("cases:\n  - input: [1, 0, 5, 2]\n    kernel: [3, 3]\n    channel_multiplier: 1\n    out_channels: 2\n"
     "    padding: SAME\n", 2, "input", "must be >= 1"),
    (f"cases:\n  - {BASE}\n    dtype: float8\n", 7, "dtype", "expected one of"),
    (f"cases:\n  - {BASE}\n    data_format: NWHC\n", 7, "data_format", "expected one of"),
    (f"cases:\n  - {BASE}\n    padding: [1, 2]\n", 7, "padding", "expected SAME, VALID"),
    (f"cases:\n  - {BASE}\n    strides: [2, 2]\n    rates: [2, 1]\n", 8, "rates", "if any rate is > 1"),
    (f"cases:\n  - {BASE}\n    expect: error\n", 7, "expect", "arguments are valid"),
    (f"cases:\n  - {BASE}\n    padding: [[-1, 0], [0, 0]]\n", 7, "padding", "must be >= 0"),
    ("cases:\n  - input: [1, 2, 2, 2]\n    kernel: [5, 5]\n    channel_multiplier: 1\n    out_channels: 2\n"
     "    padding: VALID\n", 3, "kernel", "does not fit"),
    ("cases:\n  - input: [1, 5, 5, 256]\n    kernel: [3, 3]\n    channel_multiplier: 1\n    out_channels: 2\n"
     "    padding: SAME\n    dtype: bfloat16\n    data: integers\n", 8, "data", "cannot be exact"),
    ("cases:\n  - kernel: [3, 3]\n    channel_multiplier: 1\n    out_channels: 2\n    padding: SAME\n",
     2, "input", "required field is missing"),
    (f"version: 7\ncases:\n  - {BASE}\n", 1, "version", "unsupported format version"),
    ("sweeps:\n  - base: {input: [1, 5, 5, 2], kernel: [3, 3], channel_multiplier: 1, out_channels: 2,"
     " padding: SAME}\n    grid: {dtype: []}\n", 3, "dtype", "non-empty list"),
    (f"cases:\n  - {BASE}\n    tolerance: {{scale: -1}}\n", 7, "tolerance", "non-negative"),
])
def test_rejections_name_line_field_and_reason(case_file, snippet, line, field, reason):
    found = problems(case_file(snippet))
    assert any((at, name) == (line, field) and reason in text for at, name, text in found), found


def test_all_problems_of_a_file_are_reported_at_once(case_file):
    found = problems(case_file(f"cases:\n  - {BASE}\n    dtype: float8\n  - {BASE}\n    seed: -1\n"))
    assert [(line, field) for line, field, _ in found] == [(7, "dtype"), (13, "seed")]


def test_duplicate_ids_across_files_are_rejected(case_file):
    a = case_file(f"cases:\n  - {BASE}\n", "a.yaml")
    case_file(f"cases:\n  - {BASE}\n", "b.yaml")
    with pytest.raises(CaseFileError) as info:
        load_cases([a.parent])
    assert "duplicate case id" in str(info.value) and "a.yaml:2" in str(info.value)


def test_unsafe_tags_are_rejected_not_executed(case_file, tmp_path):
    marker = tmp_path / "pwned"
    found = problems(case_file(f'cases:\n  - !!python/object/apply:os.system ["touch {marker}"]\n'))
    assert found[0][0] == 2 and "could not determine a constructor" in found[0][2]
    assert not marker.exists()


def test_error_cases_may_break_the_contract(case_file):
    path = case_file(f"""
        cases:
          - {{{BASE.replace(chr(10) + '    ', ', ')}, strides: [1, 2, 2, 2], expect: {{error: stride}}}}
          - {{{BASE.replace(chr(10) + '    ', ', ')}, pointwise_filter_shape: [1, 1, 3, 2], expect: error}}
        """)
    cases = load_cases([path])
    assert [c.expect_error for c in cases] == [True, True]
    assert cases[0].error_pattern == "stride"
    assert cases[1].id.endswith("pw1x1x3x2")


def test_default_bank_is_valid_large_and_covers_every_axis():
    cases: list[Case] = load_cases([Path(__file__).resolve().parent.parent / "cases"])
    assert len(cases) >= 300
    assert {c.data_format for c in cases} == {"NHWC", "NCHW"}
    assert {c.padding_kind for c in cases} == {"SAME", "VALID", "EXPLICIT"}
    assert {c.dtype for c in cases} == {"float16", "bfloat16", "float32", "float64"}
    assert {c.data for c in cases} == set(DISTRIBUTIONS)
    assert {1, 2, 3} <= {s for c in cases for s in c.spatial_strides}
    assert {1, 2, 3} <= {r for c in cases for r in c.rates}
    assert {1, 2, 3, 4} <= {c.channel_multiplier for c in cases}
    assert any(c.strides[0] != c.strides[1] for c in cases if len(c.strides) == 2)
    assert any(c.rates[0] != c.rates[1] for c in cases)
    assert any(c.kernel[0] != c.kernel[1] for c in cases)
    assert any(c.kernel == (1, 1) for c in cases)
    assert any(c.padding == "SAME" and c.kernel[0] > c.input[1] for c in cases)
    assert any(not isinstance(c.padding, str) and c.padding[0][0] != c.padding[0][1] for c in cases)
    assert {1} < {c.batch for c in cases}
    assert min(c.in_channels for c in cases) == 1 and max(c.in_channels for c in cases) >= 256
    assert sum(c.expect_error for c in cases) >= 8
