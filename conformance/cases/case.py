"""The one frozen `Case` that travels from the loader to the reports.

A case describes one call of `tf.nn.separable_conv2d`: logical sizes (whatever the layout), the
operator's arguments, the data distribution and seed, and what is expected (a result or an error).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

DTYPES = ("float16", "bfloat16", "float32", "float64")
DATA_FORMATS = ("NHWC", "NCHW")
PADDING_NAMES = ("SAME", "VALID")
DISTRIBUTIONS = ("normal", "uniform", "integers", "nonfinite", "positive", "subnormal")
EXPECTS = ("result", "error")  # what a case expects (Case.expect; Result.expect)
# forward: the operator's output; backward: its three gradients for an output gradient (conformance.judging.backward)
MODES = ("forward", "backward")


def expect_name(expect_error: bool) -> str:
    """What a case expects, as records and reports name it: "error" (the contract forbids the input) or
    "result"."""
    return EXPECTS[1] if expect_error else EXPECTS[0]


# Explicit padding: ((top, bottom), (left, right)), or (for error cases only) the operator's 4
# (before, after) pairs in layout order, which can pad the batch and channel dimensions too.
ExplicitPadding = tuple[tuple[int, int], ...]
Padding = Literal["SAME", "VALID"] | ExplicitPadding


def _fields(instance: Any) -> dict[str, Any]:
    """A dataclass's fields by name, one level deep: dataclasses.asdict deep-copies every value, and
    Case.parameters runs once per result."""
    return {item.name: getattr(instance, item.name) for item in dataclasses.fields(instance)}


@dataclass(frozen=True)
class Origin:
    """Where a case was declared: its file and the line of its mapping (1-based)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class ToleranceOverride:
    """Per-case adjustments of the default tolerance model (see conformance.judging.tolerance)."""

    scale: float = 1.0  # multiplies the per-element limit
    atol: float = 0.0  # added to the per-element limit, in output units
    statistics: bool = True  # run the tensor-level bias and energy checks


@dataclass(frozen=True)
class Case:
    """One separable convolution to run. Sizes are logical: input is [N, H, W, C] for both layouts."""

    input: tuple[int, int, int, int]
    kernel: tuple[int, int]
    channel_multiplier: int
    out_channels: int
    strides: tuple[int, ...]  # (sh, sw), or the 4 operator strides in layout order (error cases)
    rates: tuple[int, int]
    padding: Padding
    data_format: str
    dtype: str
    seed: int = 0
    data: str = "normal"
    mode: str = "forward"
    name: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    tolerance: ToleranceOverride = field(default_factory=ToleranceOverride)
    expect_error: bool = False
    error_pattern: str | None = None
    # Tensor shapes that differ from the ones the sizes imply: only for cases that expect an error.
    input_tensor_shape: tuple[int, ...] | None = None  # the input as passed (a rank other than 4)
    depthwise_filter_shape: tuple[int, ...] | None = None
    pointwise_filter_shape: tuple[int, ...] | None = None
    origin: Origin = Origin("<memory>", 0)

    @property
    def expect(self) -> str:
        """What the case expects, as results and reports name it: "error" or "result"."""
        return expect_name(self.expect_error)

    # --- derived sizes --------------------------------------------------------------------------
    @property
    def batch(self) -> int:
        return self.input[0]

    @property
    def in_channels(self) -> int:
        return self.input[3]

    @property
    def depthwise_channels(self) -> int:
        """C * M: the depth of the intermediate and the pointwise stage's accumulation length."""
        return self.in_channels * self.channel_multiplier

    @property
    def spatial_strides(self) -> tuple[int, int]:
        if len(self.strides) == 2:
            return (self.strides[0], self.strides[1])
        if self.data_format == "NHWC":
            return (self.strides[1], self.strides[2])
        return (self.strides[2], self.strides[3])

    @property
    def operator_strides(self) -> list[int]:
        """The 4 strides as tf.nn.separable_conv2d takes them, in the layout's order."""
        if len(self.strides) == 4:
            return list(self.strides)
        sh, sw = self.strides
        return [1, sh, sw, 1] if self.data_format == "NHWC" else [1, 1, sh, sw]

    @property
    def spatial_padding(self) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """Explicit padding as ((top, bottom), (left, right)); None for SAME and VALID."""
        if isinstance(self.padding, str):
            return None
        if len(self.padding) == 2:
            return (self.padding[0], self.padding[1])
        first = 1 if self.data_format == "NHWC" else 2
        return (self.padding[first], self.padding[first + 1])

    @property
    def operator_padding(self) -> str | list[list[int]]:
        """Padding as tf.nn.separable_conv2d takes it (explicit: one pair per dimension, layout order)."""
        if isinstance(self.padding, str):
            return self.padding
        if len(self.padding) == 4:
            return [list(pair) for pair in self.padding]
        (top, bottom), (left, right) = self.padding
        if self.data_format == "NHWC":
            return [[0, 0], [top, bottom], [left, right], [0, 0]]
        return [[0, 0], [0, 0], [top, bottom], [left, right]]

    @property
    def padding_kind(self) -> str:
        return self.padding if isinstance(self.padding, str) else "EXPLICIT"

    def layout_shape(self, logical: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """An [N, H, W, C] shape in this case's data format."""
        n, h, w, c = logical
        return (n, h, w, c) if self.data_format == "NHWC" else (n, c, h, w)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The input tensor's shape as passed: the override, else the sizes in the case's layout."""
        if self.input_tensor_shape is not None:
            return self.input_tensor_shape
        return self.layout_shape(self.input)

    @property
    def depthwise_shape(self) -> tuple[int, ...]:
        if self.depthwise_filter_shape is not None:
            return self.depthwise_filter_shape
        return (*self.kernel, self.in_channels, self.channel_multiplier)

    @property
    def pointwise_shape(self) -> tuple[int, ...]:
        if self.pointwise_filter_shape is not None:
            return self.pointwise_filter_shape
        return (1, 1, self.depthwise_channels, self.out_channels)

    # --- identity ---------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        """Stable, readable id: every parameter that changes the computation, then the name."""
        n, h, w, c = self.input
        kh, kw = self.kernel
        rh, rw = self.rates
        strides = "x".join(str(s) for s in self.strides)
        pad: str = self.padding if isinstance(self.padding, str) else \
            "P" + "_".join(str(p) for pair in self.padding for p in pair)  # 4 values, or 8 for 4 pairs
        parts = [f"n{n}_h{h}w{w}_c{c}_k{kh}x{kw}_m{self.channel_multiplier}_o{self.out_channels}",
                 f"s{strides}_r{rh}x{rw}_{pad}_{self.data_format}_{self.dtype}"]
        if self.data != "normal":
            parts.append(self.data)
        if self.mode != "forward":
            parts.append(self.mode)
        if self.seed:
            parts.append(f"seed{self.seed}")
        if self.input_tensor_shape is not None:
            parts.append("in" + "x".join(map(str, self.input_tensor_shape)))
        if self.depthwise_filter_shape is not None:
            parts.append("dw" + "x".join(map(str, self.depthwise_filter_shape)))
        if self.pointwise_filter_shape is not None:
            parts.append("pw" + "x".join(map(str, self.pointwise_filter_shape)))
        if self.name:
            parts.append(self.name)
        return "_".join(parts)

    def parameters(self) -> dict[str, Any]:
        """Every parameter as plain JSON data, for the results file and reports."""
        params = _fields(self)
        params["tolerance"] = _fields(self.tolerance)
        params["origin"] = str(self.origin)
        params["padding"] = self.padding if isinstance(self.padding, str) else [list(p) for p in self.padding]
        return params
