"""What a backend declares it supports, and why a case falls outside it.

A Python backend declares support with a plain mapping, as an attribute of its function
(`separable_conv2d.supports = {...}`) or of its module (`SUPPORTS = {...}`):

    {"dtypes": ["float16", "float32"], "data_formats": ["NHWC"], "paddings": ["SAME", "VALID"],
     "modes": ["forward"], "max_rate": 1, "max_channels": 1024, "max_elements": 16_777_216,
     "reasons": {"dtypes": "the tensor cores take float16 only"}}

Every key is optional; a missing key means no restriction. A case outside the declaration is recorded
as `skip` with the reason (counted and shown, never silently dropped); `reasons` says why, per key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from conformance.cases.case import DATA_FORMATS, DTYPES, MODES, PADDING_NAMES, Case

PADDING_KINDS = (*PADDING_NAMES, "EXPLICIT")
# Size limits: key -> (what it limits, how to read it off a case).
SIZE_LIMITS = {
    "max_batch": ("batch", lambda c: c.batch),
    "max_height": ("input height", lambda c: c.input[1]),
    "max_width": ("input width", lambda c: c.input[2]),
    "max_channels": ("input channels", lambda c: c.in_channels),
    "max_multiplier": ("channel multiplier", lambda c: c.channel_multiplier),
    "max_out_channels": ("output channels", lambda c: c.out_channels),
    "max_kernel": ("kernel size", lambda c: max(c.kernel)),
    "max_stride": ("stride", lambda c: max(c.spatial_strides)),
    "max_rate": ("dilation rate", lambda c: max(c.rates)),
    "max_elements": ("input elements", lambda c: math.prod(c.input)),
}
CHOICES = {"dtypes": DTYPES, "data_formats": DATA_FORMATS, "paddings": PADDING_KINDS, "modes": MODES}
# `accumulator`: dtype -> the precision the backend accumulates that dtype in (conformance.judging.tolerance judges
# float16/bfloat16 as accumulated in float32 unless declared); each dtype may name itself or a wider one.
ACCUMULATORS = {"float16": ("float16", "float32", "float64"), "bfloat16": ("bfloat16", "float32", "float64"),
                "float32": ("float32", "float64"), "float64": ("float64",)}


class SupportError(ValueError):
    """A support declaration that is malformed; the message names the key."""


@dataclass(frozen=True)
class Support:
    dtypes: tuple[str, ...] = DTYPES
    data_formats: tuple[str, ...] = DATA_FORMATS
    paddings: tuple[str, ...] = PADDING_KINDS
    modes: tuple[str, ...] = MODES  # forward and/or backward cases
    limits: tuple[tuple[str, int], ...] = ()  # (key of SIZE_LIMITS, largest supported value)
    accumulators: tuple[tuple[str, str], ...] = ()  # (dtype, accumulator dtype), as declared
    subnormals: str | None = None  # "preserve" or "flush" as declared; None: either (conformance.judging.subnormals)
    reasons: tuple[tuple[str, str], ...] = ()  # (key, why the backend is limited there), as declared

    @property
    def accumulator(self) -> dict[str, str]:
        return dict(self.accumulators)

    @classmethod
    def from_mapping(cls, declared: Mapping[str, Any]) -> Support:
        if not isinstance(declared, Mapping):
            raise SupportError(f"expected a mapping, got {type(declared).__name__}")
        numerics = ("accumulator", "subnormals", "reasons")
        unknown = sorted(set(map(str, declared)) - set(CHOICES) - set(SIZE_LIMITS) - set(numerics))
        if unknown:
            raise SupportError(f"unknown key(s) {', '.join(unknown)}; known: "
                               f"{', '.join([*CHOICES, *SIZE_LIMITS, *numerics])}")
        subnormals = declared.get("subnormals")
        if subnormals is not None and subnormals not in ("preserve", "flush"):
            raise SupportError(f"subnormals: expected preserve or flush, got {subnormals!r:.40}")
        fields: dict[str, Any] = {}
        for key, allowed in CHOICES.items():
            if key not in declared:
                continue
            values = declared[key]
            if not isinstance(values, (list, tuple)) or not values or not all(isinstance(v, str) for v in values):
                raise SupportError(f"{key}: expected a non-empty list of names, got {values!r}")
            if bad := [v for v in values if v not in allowed]:
                raise SupportError(f"{key}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
            fields[key] = tuple(values)
        limits = []
        for key in SIZE_LIMITS:
            if key in declared:
                value = declared[key]
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise SupportError(f"{key}: expected a positive integer, got {value!r}")
                limits.append((key, value))
        reasons = declared.get("reasons", {})
        if not isinstance(reasons, Mapping) or not all(isinstance(v, str) for v in reasons.values()):
            raise SupportError(f"reasons: expected a mapping of key to text, got {reasons!r:.80}")
        if bad := sorted(set(map(str, reasons)) - set(CHOICES) - set(SIZE_LIMITS)):
            raise SupportError(f"reasons: {', '.join(bad)} is not a key that limits cases")
        return cls(**fields, limits=tuple(limits), accumulators=_accumulators(declared.get("accumulator", {})),
                   subnormals=subnormals, reasons=tuple((str(k), v) for k, v in reasons.items()))

    def reason_to_skip(self, case: Case) -> str | None:
        """Why this backend does not take the case (with the declared reason), or None if it does."""
        found = self._limit(case)
        if found is None:
            return None
        key, message = found
        why = dict(self.reasons).get(key)
        return f"{message}: {why}" if why else message

    def _limit(self, case: Case) -> tuple[str, str] | None:
        if case.dtype not in self.dtypes:
            return "dtypes", f"the backend does not support dtype {case.dtype} (supports {', '.join(self.dtypes)})"
        if case.data_format not in self.data_formats:
            return ("data_formats",
                    f"the backend does not support {case.data_format} (supports {', '.join(self.data_formats)})")
        if case.padding_kind not in self.paddings:
            return ("paddings", f"the backend does not support {case.padding_kind} padding "
                                f"(supports {', '.join(self.paddings)})")
        if case.mode not in self.modes:
            return "modes", f"the backend does not run {case.mode} cases (supports {', '.join(self.modes)})"
        for key, largest in self.limits:
            what, measure = SIZE_LIMITS[key]
            if (value := measure(case)) > largest:
                return key, f"{what} {value} exceeds the backend's {key}: {largest}"
        return None

    def describe(self) -> str:
        """One line for `sepconv-conformance backends`."""
        parts = [f"{key}={','.join(getattr(self, key))}" for key in CHOICES if getattr(self, key) != CHOICES[key]]
        parts += [f"{key}={value}" for key, value in self.limits]
        parts += [f"accumulator[{dtype}]={accumulator}" for dtype, accumulator in self.accumulators]
        parts += [f"subnormals={self.subnormals}"] if self.subnormals else []
        return " ".join(parts) or "everything"


def _accumulators(declared: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(declared, Mapping):
        raise SupportError(f"accumulator: expected a mapping of dtype to accumulator dtype, got {declared!r:.80}")
    pairs = []
    for dtype, accumulator in declared.items():
        if dtype not in ACCUMULATORS:
            raise SupportError(f"accumulator: unknown dtype {dtype!r:.40}; choose from {', '.join(ACCUMULATORS)}")
        if accumulator not in ACCUMULATORS[dtype]:
            raise SupportError(f"accumulator: {dtype} cannot accumulate in {accumulator!r:.40}; choose from "
                               f"{', '.join(ACCUMULATORS[dtype])}")
        pairs.append((dtype, accumulator))
    return tuple(pairs)
