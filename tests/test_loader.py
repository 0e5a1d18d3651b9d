"""Loading case files: expansion, ids, and every kind of rejection with file, line and field."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from conformance.cases import contract
from conformance.cases.case import DISTRIBUTIONS, Case
from conformance.cases.case_yaml import case_from_parameters, render_case_file
from conformance.cases.data import PRECISION_BITS, integer_range, materialize
from conformance.cases.loader import FIELDS, CaseFileError, load_cases

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
    (f"cases:\n  - {BASE.replace('multiplier: 1', 'multiplier: two')}\n", 4, "channel_multiplier",
     "expected an integer"),
    (("cases:\n  - input: [1, 0, 5, 2]\n    kernel: [3, 3]\n    channel_multiplier: 1\n    out_channels: 2\n"
     "    padding: SAME\n"), 2, "input", "must be >= 1"),
    (f"cases:\n  - {BASE}\n    dtype: float8\n", 7, "dtype", "expected one of"),
    (f"cases:\n  - {BASE}\n    data_format: NWHC\n", 7, "data_format", "expected one of"),
    (f"cases:\n  - {BASE.replace('SAME', '[1, 2]')}\n", 6, "padding", "expected SAME, VALID"),
    (f"cases:\n  - {BASE}\n    strides: [2, 2]\n    rates: [2, 1]\n", 8, "rates", "if any rate is > 1"),
    (f"cases:\n  - {BASE}\n    expect: error\n", 2, "expect", "arguments are valid"),
    (f"cases:\n  - {BASE.replace('SAME', '[[-1, 0], [0, 0]]')}\n", 6, "padding", "must be >= 0"),
    (("cases:\n  - input: [1, 2, 2, 2]\n    kernel: [5, 5]\n    channel_multiplier: 1\n    out_channels: 2\n"
     "    padding: VALID\n"), 3, "kernel", "does not fit"),
    (("cases:\n  - input: [1, 5, 5, 256]\n    kernel: [3, 3]\n    channel_multiplier: 1\n    out_channels: 2\n"
     "    padding: SAME\n    dtype: bfloat16\n    data: integers\n"), 8, "data", "cannot be exact"),
    ("cases:\n  - kernel: [3, 3]\n    channel_multiplier: 1\n    out_channels: 2\n    padding: SAME\n",
     2, "input", "required field is missing"),
    (f"version: 7\ncases:\n  - {BASE}\n", 1, "version", "unsupported format version"),
    (("sweeps:\n  - base: {input: [1, 5, 5, 2], kernel: [3, 3], channel_multiplier: 1, out_channels: 2,"
     " padding: SAME}\n    grid: {dtype: []}\n"), 3, "dtype", "non-empty list"),
    (f"cases:\n  - {BASE}\n    tolerance: {{scale: -1}}\n", 7, "tolerance", "scale must be a finite number > 0"),
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


# --- numbers must be finite and fit NumPy ----------------------------------------------------------------
def one_case(fields: str) -> str:
    """A file whose one case (line 3) is the defaults plus `fields` (YAML flow-mapping items)."""
    return ("defaults: {input: [1, 5, 5, 2], kernel: [3, 3], channel_multiplier: 1, out_channels: 2, padding: SAME}"
            f"\ncases:\n  - {{{fields}}}\n")


@pytest.mark.parametrize("tolerance, reason", [
    ("{scale: .nan}", "scale must be a finite number > 0, got nan"),
    ("{scale: .inf}", "scale must be a finite number > 0, got inf"),
    ("{scale: 1.0e+400}", "scale must be a finite number > 0, got inf"),
    (f"{{scale: 1{'0' * 400}}}", "scale must be a finite number > 0, got <an integer of 1329 bits>"),
    ("{scale: 0}", "scale must be a finite number > 0, got 0"),
    ("{atol: .inf}", "atol must be a finite number >= 0, got inf"),
    ("{atol: -.inf}", "atol must be a finite number >= 0, got -inf"),
    ("{atol: .nan}", "atol must be a finite number >= 0, got nan"),
    ("{atol: -1.0e-9}", "atol must be a finite number >= 0, got -1e-09"),
    ("{scale: '2'}", "scale must be a number, got '2'"),
    ("{1: 2, b: 3}", "unknown key(s) 1, 'b'; allowed: scale, atol, statistics"),
])
def test_tolerances_must_be_finite_and_in_range(case_file, tolerance, reason):
    assert problems(case_file(one_case(f"tolerance: {tolerance}"))) == [(3, "tolerance", reason)]


@pytest.mark.parametrize("fields, field, value", [
    ("seed: 9223372036854775808", "seed", "9223372036854775808"),
    ("strides: [1, -9223372036854775808]", "strides", "-9223372036854775808"),
    ("padding: [[0, 9223372036854775808], [0, 0]]", "padding", "9223372036854775808"),
    ("rates: [1, 18446744073709551616]", "rates", "18446744073709551616"),
    ("input: [1, 5, 9223372036854775808, 2]", "input", "9223372036854775808"),
    ("out_channels: -9223372036854775809", "out_channels", "-9223372036854775809"),
])
def test_integers_must_fit_int64(case_file, fields, field, value):
    assert problems(case_file(one_case(fields))) == [
        (3, field, f"{value} is out of range: integers must lie strictly between -2**63 and 2**63")]


def test_the_largest_int64_loads(case_file):
    [case] = load_cases([case_file(one_case("seed: 9223372036854775807"))])
    assert case.seed == 2**63 - 1


def test_an_invalid_error_pattern_is_refused(case_file):
    assert problems(case_file(one_case("strides: [0, 1], expect: {error: '('}"))) == [
        (3, "expect", ("the error pattern '(' is not a valid regular expression: missing ), unterminated subpattern "
                      "at position 0"))]


def test_odd_keys_are_problems_not_tracebacks(case_file):
    path = case_file(f"sweeps:\n  - base: {{{BASE.replace(chr(10) + '    ', ', ')}}}\n    grid: {{1: [2]}}\n")
    assert problems(path) == [(3, "1", "unknown key in a sweep's grid; allowed: " + ", ".join(FIELDS))]


def test_duplicate_keys_are_refused(case_file):
    assert problems(case_file(one_case("seed: 1, seed: 2"))) == [(3, "", "invalid YAML: found duplicate key 'seed'")]


# --- forbidden inputs, expressible under `expect: error` only ------------------------------------------
FORBIDDEN = [  # (fields, violated field, the contract's reason)
    ("strides: [0, 1]", "strides", "[0, 1]: strides must be >= 1"),
    ("strides: [1, -2]", "strides", "[1, -2]: strides must be >= 1"),
    ("strides: [1, 0, 1, 1]", "strides", "[1, 0, 1, 1]: strides must be >= 1"),
    ("strides: [1, -1, 1, 1], data_format: NCHW", "strides", "[1, -1, 1, 1]: the batch and channel strides must be 1"),
    ("rates: [0, 1]", "rates", "[0, 1]: dilation rates must be >= 1"),
    ("rates: [-1, -3]", "rates", "[-1, -3]: dilation rates must be >= 1"),
    ("kernel: [0, 3]", "kernel", "[0, 3]: kernel sizes must be >= 1 (the depthwise filter would have no elements)"),
    ("kernel: [3, 0]", "kernel", "[3, 0]: kernel sizes must be >= 1 (the depthwise filter would have no elements)"),
    ("channel_multiplier: 0", "channel_multiplier", "0: must be >= 1 (a filter would have no elements)"),
    ("out_channels: 0", "out_channels", "0: must be >= 1 (a filter would have no elements)"),
    ("input_tensor_shape: [5, 5, 2]", "input_tensor_shape", "[5, 5, 2]: the input must have rank 4"),
    ("input_tensor_shape: [1, 2, 5, 5, 1], data_format: NCHW", "input_tensor_shape",
     "[1, 2, 5, 5, 1]: the input must have rank 4"),
    ("padding: [[1, 0], [1, 1], [1, 1], [0, 0]]", "padding",
     "[[1, 0], [1, 1], [1, 1], [0, 0]]: explicit padding of the batch and channel dimensions must be 0"),
    ("padding: [[0, 0], [1, 1], [1, 1], [0, 2]]", "padding",
     "[[0, 0], [1, 1], [1, 1], [0, 2]]: explicit padding of the batch and channel dimensions must be 0"),
    ("padding: [[0, 0], [0, 1], [1, 1], [1, 1]], data_format: NCHW", "padding",
     "[[0, 0], [0, 1], [1, 1], [1, 1]]: explicit padding of the batch and channel dimensions must be 0"),
    ("padding: [[0, 3], [0, 0], [1, 1], [1, 1]], data_format: NCHW", "padding",
     "[[0, 3], [0, 0], [1, 1], [1, 1]]: explicit padding of the batch and channel dimensions must be 0"),
]


@pytest.mark.parametrize("fields, field, reason", FORBIDDEN)
def test_forbidden_inputs_load_as_error_cases_and_materialize(case_file, fields, field, reason):
    [case] = load_cases([case_file(one_case(f"{fields}, expect: error"))])
    assert contract.violations(case) == [(field, reason)]
    inputs = materialize(case)
    assert inputs.input.shape == case.input_shape and inputs.input.dtype == np.float32
    assert (inputs.depthwise_filter.shape, inputs.pointwise_filter.shape) == (case.depthwise_shape,
                                                                              case.pointwise_shape)
    # TensorFlow aborts the process on a rank-3 input (it raises or accepts the others): never sent to it
    assert contract.structurally_safe(case) == (len(case.input_shape) != 3)
    assert case_from_parameters(case.parameters()) == case
    [again] = load_cases([case_file(render_case_file([case]), "again.yaml")])
    assert again == dataclasses.replace(case, origin=again.origin)


@pytest.mark.parametrize("fields, field, reason", FORBIDDEN)
def test_forbidden_inputs_are_refused_in_cases_that_expect_a_result(case_file, fields, field, reason):
    found = problems(case_file(one_case(fields)))
    assert (3, field, f"{reason} (the contract forbids this; add `expect: error` to test rejection)") in found


@pytest.mark.parametrize("fields, field, reason", [
    ("kernel: [-1, 3]", "kernel", ("must be >= 0: a size cannot be negative (0 is allowed only in cases that "
                                  "expect an error), got -1")),
    ("channel_multiplier: -1", "channel_multiplier", ("must be >= 0: a size cannot be negative (0 is allowed only in "
                                                     "cases that expect an error), got -1")),
    ("out_channels: -2", "out_channels", ("must be >= 0: a size cannot be negative (0 is allowed only in cases that "
                                         "expect an error), got -2")),
    ("input: [1, 0, 5, 2]", "input", "must be >= 1, got 0"),
    ("input_tensor_shape: [1, 5, 5, 2]", "input_tensor_shape",
     "a rank-4 input is given by `input`; this field is for an input of another rank (1 to 6)"),
    ("input_tensor_shape: [5, 0, 2]", "input_tensor_shape", "must be >= 1, got 0"),
])
def test_shapes_that_cannot_be_materialized_are_refused_even_in_error_cases(case_file, fields, field, reason):
    assert problems(case_file(one_case(f"{fields}, expect: error"))) == [(3, field, reason)]


@pytest.mark.parametrize("fields, field", [
    ("strides: [1, 2, 2, 1]", "strides"), ("padding: [[0, 0], [1, 1], [1, 1], [0, 0]]", "padding")])
def test_the_four_value_forms_are_for_error_cases(case_file, fields, field):
    assert problems(case_file(one_case(fields))) == [
        (3, field, ("4 values in layout order are for cases that expect an error; a valid case gives the 2 spatial "
                   "values"))]


def test_ids_show_the_input_override_and_the_four_padding_pairs(case_file):
    cases = load_cases([case_file(one_case("input_tensor_shape: [5, 5, 2], expect: error") +
                                  "  - {padding: [[1, 0], [1, 1], [1, 1], [0, 0]], expect: error}\n")])
    assert [c.id for c in cases] == ["n1_h5w5_c2_k3x3_m1_o2_s1x1_r1x1_SAME_NHWC_float32_in5x5x2",
                                     "n1_h5w5_c2_k3x3_m1_o2_s1x1_r1x1_P1_0_1_1_1_1_0_0_NHWC_float32"]
    assert cases[1].operator_padding == [[1, 0], [1, 1], [1, 1], [0, 0]]
    assert cases[1].spatial_padding == ((1, 1), (1, 1))


def test_integer_range_closed_form_equals_counting_up():
    def counted(case: Case) -> int:  # the definition: the largest r for which both sums stay exact
        taps, limit, r = case.kernel[0] * case.kernel[1], 2 ** PRECISION_BITS[case.dtype], 0
        while taps * (r + 1) ** 2 <= limit and case.depthwise_channels * taps * (r + 1) ** 3 <= limit:
            r += 1
        return r

    base = Case(input=(1, 5, 5, 1), kernel=(1, 1), channel_multiplier=1, out_channels=1, strides=(1, 1),
                rates=(1, 1), padding="SAME", data_format="NHWC", dtype="float32")
    checked = 0
    for dtype, kh, kw, c, m in itertools.product(("float16", "bfloat16", "float32"), (1, 2, 3, 5, 7, 11),
                                                 (1, 2, 3, 4, 9), (1, 2, 3, 8, 64, 100, 1000), (1, 2, 4)):
        case = dataclasses.replace(base, dtype=dtype, kernel=(kh, kw), input=(1, 5, 5, c), channel_multiplier=m)
        assert integer_range(case) == counted(case), case
        checked += 1
    assert checked == 1890
    float64 = dataclasses.replace(base, dtype="float64")  # 208,064 steps of counting up: now one root
    assert integer_range(float64) == counted(float64) == 208_063
    assert integer_range(dataclasses.replace(base, kernel=(0, 3))) == 2**24  # no products: r itself exact


def test_a_file_is_parsed_once_per_process_while_unchanged(tmp_path):
    """A run needs the bank when it starts, at pytest's configure and at collection: one parse."""
    from conformance.cases import loader

    path = tmp_path / "cases.yaml"
    case = "cases:\n  - {input: [1, %d, 4, 2], kernel: [3, 3], channel_multiplier: 1, out_channels: 2, padding: SAME}\n"
    path.write_text(case % 4, encoding="utf-8")
    first = loader.load_file(path)
    hits = loader._parsed_file.cache_info().hits
    assert loader.load_file(path) == first and loader._parsed_file.cache_info().hits == hits + 1
    path.write_text(case % 10, encoding="utf-8")
    assert [c.input for c in loader.load_file(path)] == [(1, 10, 4, 2)]  # changed: parsed again
