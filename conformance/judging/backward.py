"""The operator's backward pass: its three gradients for an output gradient, exactly (the oracle of a
backward case), and the error model each gradient is judged with.

For y = separable_conv2d(x, dw, pw) and an output gradient g = dL/dy, with the depthwise intermediate
z[n, i, j, c*M + m] = sum_taps x_padded[n, i*sh + a*rh, j*sw + b*rw, c] * dw[a, b, c, m] (the forward pass,
conformance.judging.oracle) and dz = g @ pw^T (the gradient reaching the intermediate, O terms):

- input_gradient[n, h, w, c] = sum over the taps (a, b) and m whose window covers (h, w) of
  dw[a, b, c, m] * dz[n, i, j, c*M + m]: O terms, then at most kh*kw*M;
- depthwise_filter_gradient[a, b, c, m] = sum_{n, i, j} x_padded[n, i*sh + a*rh, j*sw + b*rw, c] * dz[..., c*M + m]:
  O terms, then N*Ho*Wo;
- pointwise_filter_gradient[0, 0, k, o] = sum_{n, i, j} z[n, i, j, k] * g[n, i, j, o]: kh*kw terms, then N*Ho*Wo.

These are the vector-Jacobian products tf.GradientTape computes. Evaluated like the forward oracle: in
float64 on the dtype-rounded inputs (extended precision for float64 cases), padding as zeros, non-finite
values propagating as IEEE arithmetic says. Each gradient's bound is the same computation on absolute
values, and (float16/bfloat16) its variance sum_k p_k^2 q_k^2 over the final stage's products p_k * q_k,
for the probabilistic energy check (conformance.judging.tolerance). The filter gradients' reductions are
long (N*Ho*Wo terms): their worst-case limit grows with that length, which the tensor-level statistics and,
in float16/bfloat16, the root-mean-square check (which does not) make up for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from conformance.cases import contract
from conformance.cases.case import Case
from conformance.cases.data import Inputs, numpy_dtype
from conformance.judging.compare import Comparison, compare
from conformance.judging.oracle import LOW_PRECISION, OracleOutputs, working_precision
from conformance.judging.tolerance import Tolerance

GRADIENTS = ("input_gradient", "depthwise_filter_gradient", "pointwise_filter_gradient")
# The axes of the filter gradients, as the failure details name them (the input gradient has the case's
# layout): [kh, kw, C, M] and [1, 1, C*M, O]. Not images: no spatial maps (conformance.judging.diagnostics).
GRADIENT_LAYOUTS = {"depthwise_filter_gradient": "HWCM", "pointwise_filter_gradient": "HWKO"}


def _taps(case: Case) -> list[tuple[int, int, tuple[slice, slice]]]:
    """Each tap (a, b) with the rows and columns of the padded input it reads, one per output position."""
    g = contract.geometry(case)
    (kh, kw), (sh, sw), (rh, rw) = case.kernel, case.spatial_strides, case.rates
    return [(a, b, (slice(a * rh, a * rh + (g.out_h - 1) * sh + 1, sh),
                    slice(b * rw, b * rw + (g.out_w - 1) * sw + 1, sw)))
            for a in range(kh) for b in range(kw)]


def gradients(case: Case, x: np.ndarray, dw: np.ndarray, pw: np.ndarray, grad: np.ndarray,
              squared: bool = False) -> dict[str, np.ndarray]:
    """The three gradients on NHWC arrays (x and grad NHWC; dw [kh, kw, C, M], pw [1, 1, C*M, O]), in the
    arrays' precision. squared: the final stage's products squared instead (the variance)."""
    g = contract.geometry(case)
    n, _, _, c = x.shape
    m, o = case.channel_multiplier, case.out_channels
    padded = np.pad(x, ((0, 0), (g.pad_top, g.pad_bottom), (g.pad_left, g.pad_right), (0, 0)))
    taps = _taps(case)
    z = np.zeros((n, g.out_h, g.out_w, c, m), dtype=x.dtype)
    for a, b, (rows, columns) in taps:
        z += padded[:, rows, columns, :, None] * dw[a, b]
    dz = (grad.reshape(-1, o) @ pw[0, 0].T).reshape(n, g.out_h, g.out_w, c, m)
    power = 2 if squared else 1
    flat_z = z.reshape(-1, c * m) ** power
    pointwise = (flat_z.T @ (grad.reshape(-1, o) ** power)).reshape(1, 1, c * m, o)
    depthwise = np.zeros(dw.shape, dtype=x.dtype)
    padded_gradient = np.zeros(padded.shape, dtype=x.dtype)
    for a, b, (rows, columns) in taps:
        window = padded[:, rows, columns, :] ** power
        depthwise[a, b] = np.einsum("nijc,nijcm->cm", window, dz**power)
        padded_gradient[:, rows, columns, :] += np.einsum("nijcm,cm->nijc", dz**power, dw[a, b] ** power)
    h, w = x.shape[1], x.shape[2]
    return {"input_gradient": padded_gradient[:, g.pad_top:g.pad_top + h, g.pad_left:g.pad_left + w, :],
            "depthwise_filter_gradient": depthwise, "pointwise_filter_gradient": pointwise}


def to_nhwc(case: Case, array: np.ndarray) -> np.ndarray:
    return array.transpose(0, 2, 3, 1) if case.data_format == "NCHW" else array


def from_nhwc(case: Case, array: np.ndarray) -> np.ndarray:
    return array.transpose(0, 3, 1, 2) if case.data_format == "NCHW" else array


def backward_oracle(case: Case, inputs: Inputs) -> dict[str, OracleOutputs]:
    """Each gradient exactly (the input gradient in the case's layout), with its bound and (float16,
    bfloat16) its variance."""
    assert inputs.output_gradient is not None
    precision = working_precision(case)
    x = to_nhwc(case, inputs.input.astype(precision))
    grad = to_nhwc(case, inputs.output_gradient.astype(precision))
    dw: np.ndarray = inputs.depthwise_filter.astype(precision)
    pw: np.ndarray = inputs.pointwise_filter.astype(precision)
    with np.errstate(invalid="ignore", over="ignore"):
        exact = gradients(case, x, dw, pw, grad)
        bound = gradients(case, np.abs(x), np.abs(dw), np.abs(pw), np.abs(grad))
        variance = gradients(case, x, dw, pw, grad, squared=True) if case.dtype in LOW_PRECISION else None

    def laid_out(name: str, values: np.ndarray) -> np.ndarray:
        values = from_nhwc(case, values) if name == "input_gradient" else values
        return np.ascontiguousarray(values, dtype=np.float64)
    return {name: OracleOutputs(laid_out(name, exact[name]), laid_out(name, bound[name]),
                                None if variance is None else laid_out(name, variance[name]))
            for name in GRADIENTS}


def reduction_lengths(case: Case) -> dict[str, tuple[int, int]]:
    """Each gradient's two stages: (terms of the first, terms of the second) per element, at most."""
    g = contract.geometry(case)
    taps = case.kernel[0] * case.kernel[1]
    positions = case.batch * g.out_h * g.out_w
    return {"input_gradient": (case.out_channels, taps * case.channel_multiplier),
            "depthwise_filter_gradient": (case.out_channels, positions),
            "pointwise_filter_gradient": (taps, positions)}


def gradient_tolerance(case: Case, name: str, accumulators: Mapping[str, str] | None = None) -> Tolerance:
    """The forward error model (conformance.judging.tolerance) with this gradient's reduction lengths."""
    first, second = reduction_lengths(case)[name]
    return dataclasses.replace(Tolerance.for_case(case, accumulators), accumulation=first + second + 1)


def compare_gradients(case: Case, got: Sequence[Any], expected: Sequence[np.ndarray] | None,
                      exact: Mapping[str, OracleOutputs],
                      accumulators: Mapping[str, str] | None = None) -> dict[str, Comparison]:
    """Each gradient a backend computed (in GRADIENTS' order) judged on its own: against `expected`
    (TensorFlow's, both sides carrying rounding error) or, without it, against the exact gradient."""
    return {name: compare(value, exact[name].output if expected is None else expected[index], exact[name].output,
                          exact[name].bound, gradient_tolerance(case, name, accumulators),
                          1 if expected is None else 2, numpy_dtype(case.dtype),
                          GRADIENT_LAYOUTS.get(name, case.data_format), exact[name].variance)
            for index, (name, value) in enumerate(zip(GRADIENTS, got))}
