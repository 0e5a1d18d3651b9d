"""Reproduce each runtime finding of docs/runtime-findings.md and recompute it in float64.

    python docs/runtime-findings/reproduce.py            # every finding whose runtime is installed

For each finding: the bank's minimal case (cases/runtimes.yaml) is run on the runtime's adapter (the same
call the suite makes), and its output is compared with two float64 recomputations of the same inputs:
the oracle (TensorFlow's contract, exact products summed in float64) and the hypothesis that explains the
deviation. A finding is confirmed when the runtime matches the hypothesis and not the oracle.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from conformance.cases.contract import geometry  # noqa: E402
from conformance.cases.data import materialize  # noqa: E402
from conformance.cases.loader import load_cases  # noqa: E402
from conformance.judging.oracle import compute_oracle  # noqa: E402

BANK = {case.id: case for case in load_cases([ROOT / "cases" / "runtimes.yaml"])}


def nhwc(array: np.ndarray, layout: str) -> np.ndarray:
    return array.transpose(0, 2, 3, 1) if layout == "NCHW" else array


def dense_grouped(case, inputs) -> np.ndarray:
    """float64: the depthwise stage as one dense convolution whose filter is zero outside each channel's own
    block (0 * Inf = NaN from every other channel's input), then the pointwise stage."""
    x = nhwc(inputs.input.astype(np.float64), case.data_format)
    dw, pw = inputs.depthwise_filter.astype(np.float64), inputs.pointwise_filter.astype(np.float64)
    kh, kw, c, m = dw.shape
    dense = np.zeros((kh, kw, c, c * m))
    for channel in range(c):
        dense[:, :, channel, channel * m:(channel + 1) * m] = dw[:, :, channel, :]
    g = geometry(case)
    (sh, sw), (rh, rw) = case.spatial_strides, case.rates
    padded = np.pad(x, ((0, 0), (g.pad_top, g.pad_bottom), (g.pad_left, g.pad_right), (0, 0)))
    out = np.zeros((x.shape[0], g.out_h, g.out_w, c * m))
    with np.errstate(invalid="ignore", over="ignore"):
        for i in range(kh):
            for j in range(kw):
                window = padded[:, i * rh:i * rh + (g.out_h - 1) * sh + 1:sh, j * rw:j * rw + (g.out_w - 1) * sw + 1:sw]
                out += np.einsum("nhwc,cd->nhwd", window, dense[i, j])
        result = np.einsum("nhwd,do->nhwo", out, pw[0, 0])
    return result.transpose(0, 3, 1, 2) if case.data_format == "NCHW" else result


def in_float32(case, inputs) -> np.ndarray:
    """The oracle of the inputs rounded to float32 (what a float32 kernel computes, to float32 rounding)."""
    rounded = type(inputs)(**{**inputs.__dict__, **{k: getattr(inputs, k).astype(np.float32).astype(np.float64)
                                                   for k in ("input", "depthwise_filter", "pointwise_filter")}})
    return compute_oracle(case, rounded).output


def compare(name: str, got: np.ndarray, expected: np.ndarray, bound: np.ndarray) -> str:
    """Where the NaNs are, against `expected`'s; and the largest difference where both are finite, in units
    of float32's rounding of the sum of |products| (2**-24 * bound: ~1 for a float32 kernel, ~1e-8 for a
    float64 one)."""
    got, expected = got.astype(np.float64), expected.astype(np.float64)
    mine, theirs = np.isnan(got), np.isnan(expected)
    relation = "the same as" if np.array_equal(mine, theirs) else "a superset of" if (mine >= theirs).all() else \
        "a subset of" if (mine <= theirs).all() else "different from"
    finite = np.isfinite(got) & np.isfinite(expected) & (bound > 0)
    with np.errstate(invalid="ignore"):
        error = float(np.max(np.abs(got - expected)[finite] / (bound[finite] * 2.0**-24))) if finite.any() else 0.0
    return (f"  vs {name:<32} the runtime's {int(mine.sum())} NaN are {relation} its {int(theirs.sum())}; "
            f"largest finite difference: {error:.3g} x 2^-24 x bound")


FINDINGS = [  # (runtime spec, case id, hypothesis name, hypothesis)
    ("jax", "n1_h4w4_c2_k3x1_m1_o2_s1x1_r1x1_SAME_NHWC_float64_nonfinite_seed2_xla_f64_grouped_conv_nan",
     "dense conv, zero-filled filter", dense_grouped),
    ("openvino", "n1_h1w6_c3_k2x3_m1_o4_s1x1_r1x1_SAME_NHWC_bfloat16_nonfinite_seed9_openvino_bf16_grouped_conv_nan",
     "dense conv, zero-filled filter", dense_grouped),
    ("torch", "n1_h1w6_c3_k2x3_m1_o4_s1x1_r1x1_SAME_NHWC_bfloat16_nonfinite_seed9_openvino_bf16_grouped_conv_nan",
     "dense conv, zero-filled filter", dense_grouped),
    ("openvino", "n1_h4w4_c2_k3x3_m1_o2_s1x1_r1x1_SAME_NHWC_float64_openvino_f64_in_f32",
     "computed in float32", in_float32),
]


def main() -> int:
    from conformance.execution.backends import BackendError, resolve_backend

    for spec, case_id, name, hypothesis in FINDINGS:
        case = BANK[case_id]
        try:
            backend = resolve_backend(spec)
        except BackendError as error:
            print(f"{spec}: {case_id}: not run ({error})")
            continue
        inputs = materialize(case)
        got = backend.fn(inputs.input, inputs.depthwise_filter, inputs.pointwise_filter, case.operator_strides,
                         case.operator_padding, data_format=case.data_format, dilations=list(case.rates))
        print(f"{backend.version}: {case_id}")
        oracle = compute_oracle(case, inputs)
        print(compare("the oracle (float64)", got, oracle.output, oracle.bound))
        print(compare(f"{name} (float64)", got, hypothesis(case, inputs), oracle.bound))
    return 0


if __name__ == "__main__":
    sys.exit(main())
