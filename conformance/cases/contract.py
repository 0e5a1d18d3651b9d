"""The operator's contract: which arguments are valid, and the output geometry they imply.

Written from TensorFlow's documentation of tf.nn.separable_conv2d (shared/seed), not from its code:
where TensorFlow disagrees with the contract, the contract stands and the disagreement is recorded as a
reference deviation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conformance.cases.case import Case


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
    """Output geometry of a valid case (or of any case with strides >= 1; sizes may then be < 1)."""
    _, h, w, _ = case.input
    (kh, kw), (sh, sw), (rh, rw) = case.kernel, case.spatial_strides, case.rates
    explicit = case.spatial_padding
    if explicit is not None:
        (pt, pb), (pl, pr) = explicit
    elif case.padding == "SAME":
        pt, pb = same_padding(h, kh, sh, rh)
        pl, pr = same_padding(w, kw, sw, rw)
    else:
        pt = pb = pl = pr = 0
    return Geometry(output_size(h, kh, sh, rh, pt, pb), output_size(w, kw, sw, rw, pl, pr), pt, pb, pl, pr)


def output_shape(case: Case) -> tuple[int, int, int, int]:
    """The result's shape in the case's layout."""
    g = geometry(case)
    return case.layout_shape((case.batch, g.out_h, g.out_w, case.out_channels))


def structurally_safe(case: Case) -> bool:
    """Whether TensorFlow can be called without risking a fatal check: it aborts the whole process on
    some malformed ranks instead of raising. Observed with TensorFlow 2.21 (CPU): filters of a rank other
    than 4, and a rank-3 input (both layouts), abort; inputs of rank 1, 2, 5 and 6, zero or negative
    strides and rates, empty filters and batch/channel padding raise or are accepted."""
    return len(case.depthwise_shape) == 4 and len(case.pointwise_shape) == 4 and len(case.input_shape) != 3


Violation = tuple[str, str]  # (case field, what is wrong)


def violations(case: Case) -> list[Violation]:
    """Every way the case's arguments break the contract; empty for a valid case."""
    problems: list[Violation] = []
    if case.input_tensor_shape is not None and len(case.input_tensor_shape) != 4:
        problems.append(("input_tensor_shape", f"{list(case.input_tensor_shape)}: the input must have rank 4"))
    problems += _stride_violations(case)
    problems += _size_violations(case)
    problems += _filter_violations(case.depthwise_shape, case.pointwise_shape, case.in_channels)
    problems += _padding_violations(case)
    if not problems:
        g = geometry(case)
        if g.out_h < 1 or g.out_w < 1:
            problems.append(("kernel", (f"output size {g.out_h}x{g.out_w}: the (dilated) kernel does not "
                                        "fit in the padded input")))
    return problems


def batch_and_channel(values: Sequence[Any], data_format: str) -> list[Any]:
    """The batch and channel entries of 4 per-dimension values (strides, padding pairs) in layout order."""
    return [values[0], values[3]] if data_format == "NHWC" else [values[0], values[1]]


def _stride_violations(case: Case) -> list[Violation]:
    problems = []
    if len(case.strides) == 4 and batch_and_channel(case.strides, case.data_format) != [1, 1]:
        problems.append(("strides", f"{list(case.strides)}: the batch and channel strides must be 1"))
    if min(case.spatial_strides) < 1:
        problems.append(("strides", f"{list(case.strides)}: strides must be >= 1"))
    if min(case.rates) < 1:
        problems.append(("rates", f"{list(case.rates)}: dilation rates must be >= 1"))
    elif any(r > 1 for r in case.rates) and any(s > 1 for s in case.spatial_strides):
        problems.append(("rates", (f"{list(case.rates)} with strides {list(case.spatial_strides)}: "
                                   "if any rate is > 1, all strides must be 1")))
    return problems


def _size_violations(case: Case) -> list[Violation]:
    """Sizes that leave a filter with no elements (TensorFlow: "filter must not have zero elements")."""
    problems = []
    if min(case.kernel) < 1:
        problems.append(("kernel", (f"{list(case.kernel)}: kernel sizes must be >= 1 (the depthwise filter "
                                    "would have no elements)")))
    for field, value in (("channel_multiplier", case.channel_multiplier), ("out_channels", case.out_channels)):
        if value < 1:
            problems.append((field, f"{value}: must be >= 1 (a filter would have no elements)"))
    return problems


def _padding_violations(case: Case) -> list[Violation]:
    spatial = case.spatial_padding
    if spatial is None:
        return []
    padding = [list(p) for p in case.padding]
    problems = []
    if len(padding) == 4 and batch_and_channel(padding, case.data_format) != [[0, 0], [0, 0]]:
        problems.append(("padding", f"{padding}: explicit padding of the batch and channel dimensions must be 0"))
    if any(p < 0 for pair in spatial for p in pair):
        problems.append(("padding", f"{padding}: explicit padding must be >= 0"))
    return problems


def _filter_violations(dw: Sequence[int], pw: Sequence[int], in_channels: int) -> list[Violation]:
    problems = []
    if len(dw) != 4:
        problems.append(("depthwise_filter_shape", f"{list(dw)}: must have rank 4 [kh, kw, C, M]"))
    elif dw[2] != in_channels:
        problems.append(("depthwise_filter_shape", (f"{list(dw)}: in_channels {dw[2]} != input channels "
                                                    f"{in_channels}")))
    if len(pw) != 4:
        problems.append(("pointwise_filter_shape", f"{list(pw)}: must have rank 4 [1, 1, C*M, O]"))
    elif len(dw) == 4 and (pw[0], pw[1], pw[2]) != (1, 1, dw[2] * dw[3]):
        problems.append(("pointwise_filter_shape", f"{list(pw)}: must be [1, 1, {dw[2] * dw[3]}, O]"))
    return problems
