"""Load and validate YAML case files into frozen `Case`s.

Pure: no registry, no side effects. Every problem is reported with file, line, field and reason, all
problems of a file at once. YAML is read with the safe loader: tags that would construct objects are
rejected, never executed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from conformance import contract
from conformance.case import DATA_FORMATS, DISTRIBUTIONS, DTYPES, PADDING_NAMES, Case, Origin, ToleranceOverride
from conformance.data import integer_range

FORMAT_VERSION = 1
TOP_LEVEL_KEYS = ("version", "defaults", "cases", "sweeps")
SWEEP_KEYS = ("name", "description", "base", "grid")
FIELD_DEFAULTS: dict[str, Any] = {
    "strides": [1, 1], "rates": [1, 1], "data_format": "NHWC", "dtype": "float32", "seed": 0,
    "data": "normal", "name": "", "description": "", "tags": [], "tolerance": {}, "expect": "result",
}
REQUIRED_FIELDS = ("input", "kernel", "channel_multiplier", "out_channels", "padding")
TOLERANCE_KEYS = ("scale", "atol", "statistics")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


class CaseFileError(Exception):
    """One or more invalid case files; `problems` lists every finding."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class _Mapping(dict):
    """A YAML mapping that remembers the line of itself and of each value."""

    line: int
    lines: dict[str, int]


class _LineLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> _Mapping:  # type: ignore[override]
        mapping = _Mapping(super().construct_mapping(node, deep=True))
        mapping.line = node.start_mark.line + 1
        mapping.lines = {str(k.value): v.start_mark.line + 1 for k, v in node.value}
        return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_mapping)


# --- field checkers: each returns the normalized value or raises ValueError with the reason ----------
def _int(value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"must be >= {minimum}, got {value}")
    return value


def _ints(length: int | tuple[int, ...], minimum: int) -> Callable[[Any], tuple[int, ...]]:
    lengths = (length,) if isinstance(length, int) else length

    def check(value: Any) -> tuple[int, ...]:
        if not isinstance(value, list) or len(value) not in lengths:
            raise ValueError(f"expected a list of {' or '.join(map(str, lengths))} integers, got {value!r}")
        return tuple(_int(v, minimum) for v in value)
    return check


def _choice(options: Sequence[str]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return value
    return check


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _tags(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"expected a list of strings, got {value!r}")
    return tuple(value)


def _padding(value: Any) -> Any:
    if isinstance(value, str):
        return _choice(PADDING_NAMES)(value)
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(p, list) and len(p) == 2 for p in value)):
        (t, b), (left, right) = value
        return ((_int(t, -(2**31)), _int(b, -(2**31))), (_int(left, -(2**31)), _int(right, -(2**31))))
    raise ValueError(f"expected SAME, VALID or [[top, bottom], [left, right]], got {value!r}")


def _tolerance(value: Any) -> ToleranceOverride:
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping with keys {', '.join(TOLERANCE_KEYS)}, got {value!r}")
    unknown = sorted(set(value) - set(TOLERANCE_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(TOLERANCE_KEYS)}")
    scale, atol = value.get("scale", 1.0), value.get("atol", 0.0)
    for key, number in (("scale", scale), ("atol", atol)):
        if isinstance(number, bool) or not isinstance(number, (int, float)) or number < 0:
            raise ValueError(f"{key} must be a non-negative number, got {number!r}")
    statistics = value.get("statistics", True)
    if not isinstance(statistics, bool):
        raise ValueError(f"statistics must be true or false, got {statistics!r}")
    return ToleranceOverride(float(scale), float(atol), statistics)


def _expect(value: Any) -> tuple[bool, str | None]:
    if value in ("result", "error"):
        return value == "error", None
    if isinstance(value, dict) and list(value) == ["error"] and isinstance(value["error"], str):
        return True, value["error"]
    raise ValueError(f"expected 'result', 'error' or {{error: PATTERN}}, got {value!r}")


FIELDS: dict[str, Callable[[Any], Any]] = {
    "name": _text, "description": _text, "tags": _tags,
    "input": _ints(4, 1), "kernel": _ints(2, 1),
    "channel_multiplier": lambda v: _int(v, 1), "out_channels": lambda v: _int(v, 1),
    "strides": _ints((2, 4), 1), "rates": _ints(2, 1), "padding": _padding,
    "data_format": _choice(DATA_FORMATS), "dtype": _choice(DTYPES), "seed": lambda v: _int(v, 0),
    "data": _choice(DISTRIBUTIONS), "tolerance": _tolerance, "expect": _expect,
    "depthwise_filter_shape": _ints(tuple(range(1, 7)), 1),
    "pointwise_filter_shape": _ints(tuple(range(1, 7)), 1),
}


class _FileLoader:
    """Turns one parsed file into cases, collecting problems instead of stopping at the first."""

    def __init__(self, path: str):
        self.path = path
        self.problems: list[Problem] = []

    def problem(self, line: int, field: str, reason: str) -> None:
        self.problems.append(Problem(self.path, line, field, reason))

    def check_keys(self, mapping: _Mapping, allowed: Iterable[str], what: str) -> None:
        allowed = list(allowed)
        for key in mapping:
            if key not in allowed:
                self.problem(mapping.lines.get(str(key), mapping.line), str(key),
                             f"unknown key in {what}; allowed: {', '.join(allowed)}")

    def mapping(self, value: Any, line: int, what: str) -> _Mapping | None:
        if isinstance(value, _Mapping):
            return value
        self.problem(line, what, f"expected a mapping, got {value!r}")
        return None

    def load(self, document: Any) -> list[Case]:
        if document is None:
            return []
        top = self.mapping(document, 1, "file")
        if top is None:
            return []
        self.check_keys(top, TOP_LEVEL_KEYS, "the file")
        version = top.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            self.problem(top.lines.get("version", 1), "version",
                         f"unsupported format version {version!r}; this loader reads version {FORMAT_VERSION}")
        defaults = self.mapping(top.get("defaults", _empty(top.line)), top.lines.get("defaults", 1), "defaults")
        if defaults is None:
            return []
        self.check_keys(defaults, FIELDS, "defaults")
        entries: list[tuple[dict[str, tuple[Any, int]], int]] = []
        for raw, line in self.items(top, "cases"):
            case = self.mapping(raw, line, "cases")
            if case is not None:
                self.check_keys(case, FIELDS, "a case")
                entries.append((_located(defaults) | _located(case), case.line))
        for raw, line in self.items(top, "sweeps"):
            sweep = self.mapping(raw, line, "sweeps")
            if sweep is not None:
                entries += self.expand(sweep, defaults)
        return [c for c in (self.build(fields, line) for fields, line in entries) if c is not None]

    def items(self, top: _Mapping, key: str) -> list[tuple[Any, int]]:
        value = top.get(key, [])
        line = top.lines.get(key, top.line)
        if not isinstance(value, list):
            self.problem(line, key, f"expected a list, got {value!r}")
            return []
        # Items of a list carry no line of their own unless they are mappings.
        return [(item, getattr(item, "line", line)) for item in value]

    def expand(self, sweep: _Mapping, defaults: _Mapping) -> list[tuple[dict[str, tuple[Any, int]], int]]:
        self.check_keys(sweep, SWEEP_KEYS, "a sweep")
        base = self.mapping(sweep.get("base", _empty(sweep.line)), sweep.lines.get("base", sweep.line), "base")
        grid = self.mapping(sweep.get("grid"), sweep.lines.get("grid", sweep.line), "grid")
        if base is None or grid is None:
            return []
        self.check_keys(base, FIELDS, "a sweep's base")
        self.check_keys(grid, FIELDS, "a sweep's grid")
        axes = []
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                self.problem(grid.lines[key], key, f"a grid axis must be a non-empty list, got {values!r}")
                return []
            axes.append([(key, v, grid.lines[key]) for v in values])
        common = _located(defaults) | _located(base)
        for key in ("name", "description"):
            if key in sweep:
                common[key] = (sweep[key], sweep.lines[key])
        return [(common | {k: (v, line) for k, v, line in combo}, sweep.line)
                for combo in itertools.product(*axes)]

    def build(self, fields: dict[str, tuple[Any, int]], line: int) -> Case | None:
        values: dict[str, Any] = {}
        ok = True
        for key, default in FIELD_DEFAULTS.items():
            fields.setdefault(key, (default, line))
        for key in REQUIRED_FIELDS:
            if key not in fields:
                self.problem(line, key, "required field is missing")
                ok = False
        for key, (raw, value_line) in fields.items():
            if key not in FIELDS:
                continue  # already reported as an unknown key
            try:
                values[key] = FIELDS[key](raw)
            except ValueError as error:
                self.problem(value_line, key, str(error))
                ok = False
        if not ok:
            return None
        expect_error, pattern = values.pop("expect")
        case = Case(**values, expect_error=expect_error, error_pattern=pattern, origin=Origin(self.path, line))
        return case if self.check_contract(case, fields, line) else None

    def check_contract(self, case: Case, fields: dict[str, tuple[Any, int]], line: int) -> bool:
        broken = contract.violations(case)
        if case.expect_error:
            if not broken:
                self.problem(fields["expect"][1], "expect",
                             "the case expects an error but its arguments are valid under the contract")
            return bool(broken)
        for field, reason in broken:
            self.problem(fields.get(field, (None, line))[1], field,
                         f"{reason} (the contract forbids this; add `expect: error` to test rejection)")
        if case.data == "integers" and not broken and integer_range(case) < 1:
            self.problem(fields["data"][1], "data",
                         f"integers cannot be exact for this case in {case.dtype}: C*M*kh*kw = "
                         f"{case.depthwise_channels * case.kernel[0] * case.kernel[1]} exceeds the dtype's "
                         "exact integer range")
            return False
        return not broken


def _empty(line: int) -> _Mapping:
    mapping = _Mapping()
    mapping.line, mapping.lines = line, {}
    return mapping


def _located(mapping: _Mapping) -> dict[str, tuple[Any, int]]:
    return {str(k): (v, mapping.lines.get(str(k), mapping.line)) for k, v in mapping.items()}


def read_yaml(path: Path | str) -> Any:
    """Parse a YAML file safely; mappings remember their lines (`.line`, and `.lines` per key).
    Raises CaseFileError naming the file and line of a syntax error."""
    path_text = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CaseFileError([Problem(path_text, 0, "", f"cannot read the file: {error}")]) from None
    try:
        return yaml.load(text, Loader=_LineLoader)  # noqa: S506 - _LineLoader is a SafeLoader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        reason = str(getattr(error, "problem", None) or error)
        context = getattr(error, "context", None)
        if context and "tag" not in reason:
            reason = f"{context}, {reason}"
        raise CaseFileError([Problem(path_text, line, "", f"invalid YAML: {reason}")]) from None


def load_file(path: Path | str) -> list[Case]:
    """Load one case file; raises CaseFileError listing every problem in it."""
    loader = _FileLoader(str(path))
    cases = loader.load(read_yaml(path))
    if loader.problems:
        raise CaseFileError(sorted(loader.problems, key=lambda p: p.line))
    return cases


def case_files(paths: Iterable[Path | str]) -> list[Path]:
    """The .yaml/.yml files named, or found (recursively, sorted) in the folders named."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        elif path.exists():
            files.append(path)
        else:
            raise CaseFileError([Problem(str(path), 0, "", "no such file or folder")])
    return files


def load_cases(paths: Iterable[Path | str]) -> list[Case]:
    """Load every case file under `paths`; problems of all files are reported together, and an id
    declared twice (in one file or across files) is a problem at both places."""
    problems: list[Problem] = []
    cases: list[Case] = []
    for path in case_files(paths):
        try:
            cases += load_file(path)
        except CaseFileError as error:
            problems += error.problems
    first_seen: dict[str, Case] = {}
    for case in cases:
        if case.id in first_seen:
            other = first_seen[case.id]
            problems.append(Problem(case.origin.file, case.origin.line, "",
                                    f"duplicate case id {case.id} (first declared at {other.origin}); "
                                    "give one of them a distinct `name`"))
        else:
            first_seen[case.id] = case
    if problems:
        raise CaseFileError(problems)
    return cases
