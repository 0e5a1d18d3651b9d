"""The case features that failure groups are contrasted on (conformance.reporting.diagnosis): the axes
hardware bugs live on. Each reads a result's `parameters` (Case.parameters(), as results.json holds them)
and gives a short value in words, or None where the feature does not apply (an error case's 4 strides)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conformance.cases.contract import same_padding

Parameters = dict[str, Any]

REDUCTION_BUCKETS = (16, 64, 256, 1024)  # C*M, the pointwise sum's length: where accumulators run out


def _joined(values: Any) -> str | None:
    return "x".join(map(str, values)) if values else None


def _padding_name(p: Parameters) -> str:
    return p["padding"] if isinstance(p.get("padding"), str) else "EXPLICIT"


def _spatial_strides(p: Parameters) -> tuple[int, int] | None:
    strides: list[int] = list(p.get("strides") or [])
    return (int(strides[0]), int(strides[1])) if len(strides) == 2 else None


def _padding_total(p: Parameters, axis: int) -> int | None:
    """Rows (axis 0) or columns (axis 1) of padding TensorFlow applies in all, before and after."""
    strides, padding = _spatial_strides(p), p.get("padding")
    if strides is None or not p.get("input") or not p.get("kernel") or not p.get("rates"):
        return None
    if min(*strides, *p["kernel"], *p["rates"]) < 1:  # a case the contract forbids: no padding to speak of
        return None
    if padding == "VALID":
        return 0
    if padding == "SAME":
        return sum(same_padding(p["input"][1 + axis], p["kernel"][axis], strides[axis], p["rates"][axis]))
    if isinstance(padding, list) and len(padding) == 2:
        return int(sum(padding[axis]))
    return None


def _parity(total: int | None) -> str | None:
    return None if total is None else "none" if total == 0 else "odd" if total % 2 else "even"


def _reduction(p: Parameters) -> str | None:
    if not p.get("input") or not p.get("channel_multiplier"):
        return None
    length = p["input"][3] * p["channel_multiplier"]
    low = 1
    for high in REDUCTION_BUCKETS:
        if length <= high:
            return f"{low}..{high}"
        low = high + 1
    return f"> {REDUCTION_BUCKETS[-1]}"


def _modulo(key: str, divisor: int) -> Callable[[Parameters], str | None]:
    def read(p: Parameters) -> str | None:
        value = p.get("input", [0, 0, 0, 0])[3] if key == "in_channels" else p.get(key)
        return None if not value else "= 0" if value % divisor == 0 else "!= 0"
    return read


def _tolerant(read: Callable[[Parameters], str | None]) -> Callable[[Parameters], str | None]:
    """A feature that is None on parameters it cannot read (a hand-edited or older results file): a report
    must render whatever the file holds, and a feature is only a hint."""
    def safe(p: Parameters) -> str | None:
        try:
            return read(p)
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return safe


_READERS: dict[str, Callable[[Parameters], str | None]] = {
    "dtype": lambda p: p.get("dtype"),
    "layout": lambda p: p.get("data_format"),
    "padding": _padding_name,
    "strides": lambda p: _joined(p.get("strides")),
    "largest stride": lambda p: str(max(s)) if (s := _spatial_strides(p)) else None,
    "padding with strides": lambda p: f"{_padding_name(p)} at {_joined(p.get('strides'))}",
    "rows of padding": lambda p: _parity(_padding_total(p, 0)),
    "columns of padding": lambda p: _parity(_padding_total(p, 1)),
    "rates": lambda p: _joined(p.get("rates")),
    "kernel": lambda p: _joined(p.get("kernel")),
    "multiplier": lambda p: str(p["channel_multiplier"]) if p.get("channel_multiplier") else None,
    "C*M": _reduction,
    "out_channels % 8": _modulo("out_channels", 8),
    "out_channels % 16": _modulo("out_channels", 16),
    "out_channels % 32": _modulo("out_channels", 32),
    "in_channels % 8": _modulo("in_channels", 8),
    "batch": lambda p: None if not p.get("input") else "1" if p["input"][0] == 1 else "> 1",
    "data": lambda p: p.get("data"),
}
FEATURES: dict[str, Callable[[Parameters], str | None]] = {name: _tolerant(read) for name, read in _READERS.items()}
