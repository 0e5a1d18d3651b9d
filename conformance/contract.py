"""The operator's contract: which arguments are valid, and the output geometry they imply.

Written from TensorFlow's documentation of tf.nn.separable_conv2d (shared/seed), not from its code:
where TensorFlow disagrees with the contract, the contract stands and the disagreement is recorded as a
reference deviation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conformance.case import Case


@dataclass(frozen=True)
class Geometry:
    """Output size and the padding actually applied, per spatial axis."""

    out_h: int
    out_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int


def same_padding(size: int, kernel: int, stride: int, rate: int) -> tuple[int, int]:
    """TensorFlow's SAME split: the odd pixel goes after (bottom/right)."""
    effective = (kernel - 1) * rate + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def output_size(size: int, kernel: int, stride: int, rate: int, before: int, after: int) -> int:
    effective = (kernel - 1) * rate + 1
    return (size + before + after - effective) // stride + 1


def geometry(case: Case) -> Geometry:
    """Output geometry of a valid case."""
    _, h, w, _ = case.input
    (kh, kw), (sh, sw), (rh, rw) = case.kernel, case.spatial_strides, case.rates
    if case.padding == "SAME":
        pt, pb = same_padding(h, kh, sh, rh)
        pl, pr = same_padding(w, kw, sw, rw)
    elif case.padding == "VALID":
        pt = pb = pl = pr = 0
    else:
        (pt, pb), (pl, pr) = case.padding
    return Geometry(output_size(h, kh, sh, rh, pt, pb), output_size(w, kw, sw, rw, pl, pr), pt, pb, pl, pr)


def output_shape(case: Case) -> tuple[int, int, int, int]:
    """The result's shape in the case's layout."""
    g = geometry(case)
    return case.layout_shape((case.batch, g.out_h, g.out_w, case.out_channels))


def structurally_safe(case: Case) -> bool:
    """Whether every tensor has rank 4, so that TensorFlow can be called without risking a fatal check
    (TensorFlow aborts the whole process on some malformed ranks instead of raising)."""
    return len(case.depthwise_shape) == 4 and len(case.pointwise_shape) == 4


Violation = tuple[str, str]  # (case field, what is wrong)


def violations(case: Case) -> list[Violation]:
    """Every way the case's arguments break the contract; empty for a valid case."""
    problems: list[Violation] = []
    strides = case.operator_strides
    if len(case.strides) == 4:
        outer = (strides[0], strides[3]) if case.data_format == "NHWC" else (strides[0], strides[1])
        if outer != (1, 1):
            problems.append(("strides", f"{strides}: the batch and channel strides must be 1"))
    if any(r > 1 for r in case.rates) and any(s > 1 for s in case.spatial_strides):
        problems.append(("rates", f"{list(case.rates)} with strides {list(case.spatial_strides)}: "
                                  "if any rate is > 1, all strides must be 1"))
    problems += _filter_violations(case.depthwise_shape, case.pointwise_shape, case.in_channels)
    if not isinstance(case.padding, str) and any(p < 0 for pair in case.padding for p in pair):
        problems.append(("padding", f"{[list(p) for p in case.padding]}: explicit padding must be >= 0"))
    if not problems:
        g = geometry(case)
        if g.out_h < 1 or g.out_w < 1:
            problems.append(("kernel", f"output size {g.out_h}x{g.out_w}: the (dilated) kernel does not "
                                       "fit in the padded input"))
    return problems


def _filter_violations(dw: Sequence[int], pw: Sequence[int], in_channels: int) -> list[Violation]:
    problems = []
    if len(dw) != 4:
        problems.append(("depthwise_filter_shape", f"{list(dw)}: must have rank 4 [kh, kw, C, M]"))
    elif dw[2] != in_channels:
        problems.append(("depthwise_filter_shape", f"{list(dw)}: in_channels {dw[2]} != input channels "
                                                   f"{in_channels}"))
    if len(pw) != 4:
        problems.append(("pointwise_filter_shape", f"{list(pw)}: must have rank 4 [1, 1, C*M, O]"))
    elif len(dw) == 4 and (pw[0], pw[1], pw[2]) != (1, 1, dw[2] * dw[3]):
        problems.append(("pointwise_filter_shape", f"{list(pw)}: must be [1, 1, {dw[2] * dw[3]}, O]"))
    return problems
