"""Cases to YAML case files and back from results: what fuzz and shrink write, and how shrink reads a case
from a results.json record.

Written files hold one block mapping per case with flow-style values (strings that are not plain
identifiers are written as JSON, a subset of YAML), so every number and string round-trips exactly and
the file reads like a hand-written one. Only fields that differ from the loader's defaults are written,
except the ones that make a case readable at a glance.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from conformance.cases import contract
from conformance.cases.case import MODES, Case, Origin, ToleranceOverride
from conformance.cases.loader import FORMAT_VERSION, tolerance_override

# Field order in a written case: the name first, then sizes, then the operator's arguments, then data.
_ALWAYS = ("input", "kernel", "channel_multiplier", "out_channels", "padding", "data_format", "dtype")


def case_mapping(case: Case) -> dict[str, Any]:
    """The case as a case-file mapping (plain JSON data), loadable back into an equal case."""
    mapping: dict[str, Any] = {}
    if case.name:
        mapping["name"] = case.name
    if case.description:
        mapping["description"] = case.description
    padding = case.padding if isinstance(case.padding, str) else [list(p) for p in case.padding]
    values = {"input": list(case.input), "kernel": list(case.kernel), "channel_multiplier": case.channel_multiplier,
              "out_channels": case.out_channels, "padding": padding, "data_format": case.data_format,
              "dtype": case.dtype}
    mapping.update((key, values[key]) for key in _ALWAYS)
    if tuple(case.strides) != (1, 1):
        mapping["strides"] = list(case.strides)
    if tuple(case.rates) != (1, 1):
        mapping["rates"] = list(case.rates)
    if case.data != "normal":
        mapping["data"] = case.data
    if case.mode != "forward":
        mapping["mode"] = case.mode
    if case.seed:
        mapping["seed"] = case.seed
    if case.input_tensor_shape is not None:
        mapping["input_tensor_shape"] = list(case.input_tensor_shape)
    if case.depthwise_filter_shape is not None:
        mapping["depthwise_filter_shape"] = list(case.depthwise_filter_shape)
    if case.pointwise_filter_shape is not None:
        mapping["pointwise_filter_shape"] = list(case.pointwise_filter_shape)
    if case.tolerance != ToleranceOverride():
        mapping["tolerance"] = {"scale": case.tolerance.scale, "atol": case.tolerance.atol,
                                "statistics": case.tolerance.statistics}
    if case.expect_error:
        mapping["expect"] = {"error": case.error_pattern} if case.error_pattern else "error"
    if case.tags:
        mapping["tags"] = list(case.tags)
    return mapping


_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}  # YAML 1.1 reads these as non-strings


def _yaml_value(value: Any) -> str:
    """A flow-style YAML value: identifiers plain, other strings and numbers as JSON (valid YAML)."""
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and _PLAIN.fullmatch(value) and value.lower() not in _RESERVED:
        return value
    return json.dumps(value)


def _comment(lines: Iterable[str], indent: str = "") -> str:
    return "".join(f"{indent}# {line}".rstrip() + "\n" for text in lines for line in text.splitlines() or [""])


def render_case_file(cases: Sequence[Case], header: Sequence[str] = (),
                     case_comments: Sequence[Sequence[str]] | None = None) -> str:
    """YAML text of a case file holding `cases`, with `header` (and per-case comment lines) as comments."""
    parts = [_comment(header), f"version: {FORMAT_VERSION}\n", "cases:\n" if cases else "cases: []\n"]
    for index, case in enumerate(cases):
        if case_comments is not None and case_comments[index]:
            parts.append(_comment(case_comments[index], "  "))
        for position, (key, value) in enumerate(case_mapping(case).items()):
            parts.append(f"{'  - ' if position == 0 else '    '}{key}: {_yaml_value(value)}\n")
    return "".join(parts)


def write_case_file(path: Path | str, cases: Sequence[Case], header: Sequence[str] = (),
                    case_comments: Sequence[Sequence[str]] | None = None) -> Path:
    """Write `cases` as a case file (creating its folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_case_file(cases, header, case_comments), encoding="utf-8")
    return path


class ParameterError(ValueError):
    """A results record whose parameters do not make a valid case."""


def _ints(value: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in value)


def _optional_ints(value: Any) -> tuple[int, ...] | None:
    return None if value is None else _ints(value)


def _tolerance(value: Any) -> ToleranceOverride:
    try:
        return tolerance_override(value or {})
    except ValueError as error:
        raise ValueError(f"tolerance: {error}") from None


def _padding(value: Any) -> Any:
    """SAME/VALID, or 2 (spatial) or 4 (layout order, error cases) [before, after] pairs."""
    if isinstance(value, str):
        return value
    pairs = tuple((int(before), int(after)) for before, after in value)
    if len(pairs) not in (2, 4):
        raise ValueError(f"padding must have 2 or 4 [before, after] pairs, got {len(pairs)}")
    return pairs


def case_from_parameters(parameters: dict[str, Any]) -> Case:
    """Rebuild the Case a results.json record was made from (its `parameters`, as Case.parameters()
    writes them). Raises ParameterError naming the field that does not fit."""
    try:
        file, _, line = str(parameters.get("origin", "<results>:0")).rpartition(":")
        case = Case(input=_ints(parameters["input"]), kernel=_ints(parameters["kernel"]),  # type: ignore[arg-type]
                    channel_multiplier=int(parameters["channel_multiplier"]),
                    out_channels=int(parameters["out_channels"]), strides=_ints(parameters["strides"]),
                    rates=_ints(parameters["rates"]), padding=_padding(parameters["padding"]),  # type: ignore[arg-type]
                    data_format=str(parameters["data_format"]), dtype=str(parameters["dtype"]),
                    seed=int(parameters.get("seed", 0)), data=str(parameters.get("data", "normal")),
                    mode=str(parameters.get("mode", "forward")),
                    name=str(parameters.get("name", "")), description=str(parameters.get("description", "")),
                    tags=tuple(parameters.get("tags", ())),
                    tolerance=_tolerance(parameters.get("tolerance")),
                    expect_error=bool(parameters.get("expect_error", False)),
                    error_pattern=parameters.get("error_pattern"),
                    input_tensor_shape=_optional_ints(parameters.get("input_tensor_shape")),
                    depthwise_filter_shape=_optional_ints(parameters.get("depthwise_filter_shape")),
                    pointwise_filter_shape=_optional_ints(parameters.get("pointwise_filter_shape")),
                    origin=Origin(file or "<results>", int(line) if line.isdigit() else 0))
        if case.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {case.mode!r}")
    except KeyError as error:
        raise ParameterError(f"parameters: missing field {error.args[0]!r}") from None
    except (TypeError, ValueError) as error:
        raise ParameterError(f"parameters: {error}") from None
    broken = contract.violations(case)
    if bool(broken) != case.expect_error:
        what = "; ".join(f"{field}: {reason}" for field, reason in broken) or "its arguments are valid"
        raise ParameterError(f"parameters do not make a {'forbidden' if case.expect_error else 'valid'} case: "
                             f"{what}")
    return case
