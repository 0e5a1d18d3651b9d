"""Load and validate YAML case files into frozen `Case`s.

Pure: no registry, no side effects. Every problem is reported with file, line, field and reason, all
problems of a file at once. YAML is read with the safe loader: tags that would construct objects are
rejected, never executed.

Hostile input is refused quickly, never with a traceback: values are quoted in messages through a bounded
repr (an alias bomb is a small graph that expands to billions of items: nothing here walks it), nesting,
file size and case counts are limited before anything is expanded, and every number must be finite and
fit NumPy's int64 or float64.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import reprlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conformance.cases import contract
from conformance.cases.case import (
    DATA_FORMATS,
    DISTRIBUTIONS,
    DTYPES,
    MODES,
    PADDING_NAMES,
    Case,
    Origin,
    ToleranceOverride,
)
from conformance.cases.data import integer_range

FORMAT_VERSION = 1
TOP_LEVEL_KEYS = ("version", "defaults", "cases", "sweeps")
SWEEP_KEYS = ("name", "description", "base", "grid")
FIELD_DEFAULTS: dict[str, Any] = {
    "strides": [1, 1], "rates": [1, 1], "data_format": "NHWC", "dtype": "float32", "seed": 0,
    "data": "normal", "mode": "forward", "name": "", "description": "", "tags": [], "tolerance": {},
    "expect": "result",
}
# The data a backward case may draw: integer sums over N*Ho*Wo terms leave the exact range, and the backward
# pass's NaN/Inf and subnormal behaviour is not judged yet.
BACKWARD_DATA = ("normal", "uniform", "positive")
REQUIRED_FIELDS = ("input", "kernel", "channel_multiplier", "out_channels", "padding")
TOLERANCE_KEYS = ("scale", "atol", "statistics")
# Limits on what one file may ask for, checked before anything is expanded or built.
MAX_FILE_BYTES = 64 << 20  # the bank's files are a few KiB; generated ones a few MiB
MAX_NESTING = 64  # YAML nesting levels (the composer recurses: deeper input would end in RecursionError)
# Cases: loading takes about 0.1 ms and 2 KiB each, so 100,000 cases are 10 s and 200 MiB.
MAX_SWEEP_CASES = 100_000  # combinations of one sweep's grid
MAX_FILE_CASES = 100_000  # cases of one file: its cases plus its sweeps' combinations
MAX_TOTAL_CASES = 250_000  # cases of all files of one load
INT64_LIMIT = 2**63  # every integer must satisfy |v| < 2**63, so NumPy can hold it


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
    depth = 0  # nesting level of the node being composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # An alias refers to a node composed before it: only written nesting counts, and it is limited
        # here so that deep input is a YAML error at its line, not a RecursionError.
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_NESTING} levels deep",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        # A key written twice would silently drop the first value; merged keys (<<) may be overridden.
        node = super().compose_mapping_node(anchor)
        seen = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if key.value in seen:
                    raise yaml.composer.ComposerError(None, None, f"found duplicate key {show(key.value)}",
                                                      key.start_mark)
                seen.add(key.value)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> _Mapping:
        mapping = _Mapping(super().construct_mapping(node, deep=True))
        mapping.line = node.start_mark.line + 1
        # The key's line: an alias value's node starts where its anchor is. Keys are scalars here (others
        # are unhashable, rejected above); a node graph is never str()'d.
        mapping.lines = {str(k.value): k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
        return mapping

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError as error:  # Python refuses to read integers of more than 4300 digits
            raise yaml.constructor.ConstructorError(None, None, f"cannot read the integer: {error}",
                                                    node.start_mark) from None


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:int", _LineLoader.construct_yaml_int)


class _BoundedRepr(reprlib.Repr):
    """repr for messages: a few levels, items and characters of any value, without walking the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict, self.maxset = 2, 6, 6, 4, 6
        self.maxstring, self.maxother, self.maxlong = 60, 60, 40

    def repr1(self, x: Any, level: int) -> str:
        if isinstance(x, dict):  # reprlib looks methods up by type name: _Mapping would get a full repr
            return self.repr_dict(x, level)
        return super().repr1(x, level)

    def repr_int(self, x: int, level: int) -> str:
        # repr() of a huge integer is slow, and refused beyond 4300 digits (sys.set_int_max_str_digits)
        return f"<an integer of {x.bit_length()} bits>" if x.bit_length() > 128 else super().repr_int(x, level)


_repr = _BoundedRepr()


def show(value: Any) -> str:
    """A value as quoted in an error message: bounded in size and time whatever the value is."""
    return _repr.repr(value)


# --- field checkers: each returns the normalized value or raises ValueError with the reason ----------
def _int(value: Any, minimum: int | None = None, why: str = "") -> int:
    """An integer within int64 and >= minimum (None: no minimum beyond int64's); `why` explains the minimum."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {show(value)}")
    if abs(value) >= INT64_LIMIT:
        raise ValueError(f"{show(value)} is out of range: integers must lie strictly between -2**63 and 2**63")
    if minimum is not None and value < minimum:
        raise ValueError(f"must be >= {minimum}{why}, got {value}")
    return value


_SIZE_MINIMUM = ": a size cannot be negative (0 is allowed only in cases that expect an error)"


def _size(value: Any) -> int:
    return _int(value, 0, _SIZE_MINIMUM)


def _ints(length: int | tuple[int, ...], minimum: int | None, why: str = "") -> Callable[[Any], tuple[int, ...]]:
    lengths = (length,) if isinstance(length, int) else length

    def check(value: Any) -> tuple[int, ...]:
        if not isinstance(value, list) or len(value) not in lengths:
            raise ValueError(f"expected a list of {' or '.join(map(str, lengths))} integers, got {show(value)}")
        return tuple(_int(v, minimum, why) for v in value)
    return check


def _input_tensor_shape(value: Any) -> tuple[int, ...]:
    shape = _ints(tuple(range(1, 7)), 1)(value)
    if len(shape) == 4:
        raise ValueError("a rank-4 input is given by `input`; this field is for an input of another rank (1 to 6)")
    return shape


def _choice(options: Sequence[str]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {show(value)}")
        return value
    return check


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {show(value)}")
    return value


def _tags(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"expected a list of strings, got {show(value)}")
    return tuple(value)


def _padding(value: Any) -> Any:
    if isinstance(value, str):
        return _choice(PADDING_NAMES)(value)
    if (isinstance(value, list) and len(value) in (2, 4)
            and all(isinstance(p, list) and len(p) == 2 for p in value)):
        return tuple((_int(before), _int(after)) for before, after in value)
    raise ValueError(f"expected SAME, VALID, [[top, bottom], [left, right]] or (for error cases) 4 [before, "
                     f"after] pairs in layout order, got {show(value)}")


def _finite(key: str, value: Any, positive: bool) -> float:
    """A finite float >= 0 (> 0 if `positive`): NaN or Inf would make every comparison pass."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number, got {show(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float64's range
        number = math.inf
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise ValueError(f"{key} must be a finite number {'> 0' if positive else '>= 0'}, got {show(value)}")
    return number


def tolerance_override(value: Any) -> ToleranceOverride:
    """A `tolerance` mapping checked and converted; raises ValueError naming the key that is wrong."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping with keys {', '.join(TOLERANCE_KEYS)}, got {show(value)}")
    unknown = sorted((k for k in value if k not in TOLERANCE_KEYS), key=str)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(show(k) for k in unknown[:5])}; allowed: "
                         f"{', '.join(TOLERANCE_KEYS)}")
    statistics = value.get("statistics", True)
    if not isinstance(statistics, bool):
        raise ValueError(f"statistics must be true or false, got {show(statistics)}")
    return ToleranceOverride(_finite("scale", value.get("scale", 1.0), positive=True),
                             _finite("atol", value.get("atol", 0.0), positive=False), statistics)


def _expect(value: Any) -> tuple[bool, str | None]:
    if isinstance(value, str) and value in ("result", "error"):
        return value == "error", None
    if isinstance(value, dict) and list(value) == ["error"] and isinstance(value["error"], str):
        try:
            re.compile(value["error"])
        except re.error as error:
            raise ValueError(f"the error pattern {show(value['error'])} is not a valid regular expression: "
                             f"{error}") from None
        return True, value["error"]
    raise ValueError(f"expected 'result', 'error' or {{error: PATTERN}}, got {show(value)}")


FIELDS: dict[str, Callable[[Any], Any]] = {
    "name": _text, "description": _text, "tags": _tags,
    # Zero sizes, and strides, rates and padding of any sign, pass here: the contract rejects them in
    # cases that expect a result, and cases that expect an error are about them.
    "input": _ints(4, 1), "kernel": _ints(2, 0, _SIZE_MINIMUM),
    "channel_multiplier": _size, "out_channels": _size,
    "strides": _ints((2, 4), None), "rates": _ints(2, None), "padding": _padding,
    "data_format": _choice(DATA_FORMATS), "dtype": _choice(DTYPES), "seed": lambda v: _int(v, 0),
    "data": _choice(DISTRIBUTIONS), "mode": _choice(MODES), "tolerance": tolerance_override, "expect": _expect,
    "input_tensor_shape": _input_tensor_shape,
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
                self.problem(mapping.lines.get(str(key), mapping.line), _clip(str(key)),
                             f"unknown key in {what}; allowed: {', '.join(allowed)}")

    def mapping(self, value: Any, line: int, what: str) -> _Mapping | None:
        if isinstance(value, _Mapping):
            return value
        self.problem(line, what, f"expected a mapping, got {show(value)}")
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
                         f"unsupported format version {show(version)}; this loader reads version {FORMAT_VERSION}")
        defaults = self.mapping(top.get("defaults", _empty(top.line)), top.lines.get("defaults", 1), "defaults")
        if defaults is None:
            return []
        self.check_keys(defaults, FIELDS, "defaults")
        entries: list[tuple[dict[str, tuple[Any, int]], int]] = []
        for raw, line in self.items(top, "cases", MAX_FILE_CASES):
            case = self.mapping(raw, line, "cases")
            if case is not None:
                self.check_keys(case, FIELDS, "a case")
                entries.append((_located(defaults) | _located(case), case.line))
        for raw, line in self.items(top, "sweeps", MAX_FILE_CASES):
            sweep = self.mapping(raw, line, "sweeps")
            if sweep is not None:
                entries += self.expand(sweep, defaults, MAX_FILE_CASES - len(entries))
        return [c for c in (self.build(fields, line) for fields, line in entries) if c is not None]

    def items(self, top: _Mapping, key: str, limit: int) -> list[tuple[Any, int]]:
        value = top.get(key, [])
        line = top.lines.get(key, top.line)
        if not isinstance(value, list):
            self.problem(line, key, f"expected a list, got {show(value)}")
            return []
        if len(value) > limit:  # aliases make long lists from short text: count before building
            self.problem(line, key, f"{len(value):,} items, more than the limit of {limit:,} per file")
            return []
        # Items of a list carry no line of their own unless they are mappings.
        return [(item, getattr(item, "line", line)) for item in value]

    def expand(self, sweep: _Mapping, defaults: _Mapping, room: int) -> list[tuple[dict[str, tuple[Any, int]], int]]:
        """The sweep's combinations, counted before they are built: none if they are more than
        MAX_SWEEP_CASES, or than `room` (what the file's limit leaves)."""
        self.check_keys(sweep, SWEEP_KEYS, "a sweep")
        base = self.mapping(sweep.get("base", _empty(sweep.line)), sweep.lines.get("base", sweep.line), "base")
        grid = self.mapping(sweep.get("grid"), sweep.lines.get("grid", sweep.line), "grid")
        if base is None or grid is None:
            return []
        self.check_keys(base, FIELDS, "a sweep's base")
        self.check_keys(grid, FIELDS, "a sweep's grid")
        axes = []
        for key, values in grid.items():
            line = grid.lines.get(str(key), grid.line)
            if not isinstance(values, list) or not values:
                self.problem(line, _clip(str(key)), f"a grid axis must be a non-empty list, got {show(values)}")
                return []
            axes.append([(key, v, line) for v in values])
        count = math.prod(len(axis) for axis in axes)
        if count > min(MAX_SWEEP_CASES, room):
            limit = f"the limit of {MAX_SWEEP_CASES:,} per sweep" if count > MAX_SWEEP_CASES else \
                f"the {room:,} left of the limit of {MAX_FILE_CASES:,} per file"
            sizes = " x ".join(str(len(axis)) for axis in axes)
            self.problem(sweep.line, "grid", f"the grid expands to {count:,} cases ({sizes}), more than {limit}; "
                                             "split the sweep or shorten its axes")
            return []
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
            if not broken:  # at the case's line: `expect` may come from the defaults, shared by many
                self.problem(line, "expect", f"the case {case.id} expects an error but its arguments are valid "
                                             "under the contract")
            return bool(broken)
        for field, reason in broken:
            self.problem(fields.get(field, (None, line))[1], field,
                         f"{reason} (the contract forbids this; add `expect: error` to test rejection)")
        # The operator's 4-value forms exist to reach the batch and channel dimensions; a valid case says
        # the same with the 2 spatial values, under one id.
        four = [key for key, value in (("strides", case.strides), ("padding", case.padding))
                if not isinstance(value, str) and len(value) == 4]
        for field in four:
            self.problem(fields[field][1], field, "4 values in layout order are for cases that expect an error; "
                                                  "a valid case gives the 2 spatial values")
        if case.mode == "backward" and case.data not in BACKWARD_DATA:
            self.problem(fields["data"][1], "data", f"a backward case takes {', '.join(BACKWARD_DATA)} data, "
                                                    f"not {case.data}")
            return False
        if case.data == "integers" and not broken and integer_range(case) < 1:
            self.problem(fields["data"][1], "data",
                         f"integers cannot be exact for this case in {case.dtype}: C*M*kh*kw = "
                         f"{case.depthwise_channels * case.kernel[0] * case.kernel[1]} exceeds the dtype's "
                         "exact integer range")
            return False
        return not broken and not four


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


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
        size = Path(path).stat().st_size
        if size > MAX_FILE_BYTES:
            raise CaseFileError([Problem(path_text, 0, "", f"the file has {size:,} bytes, more than the limit of "
                                                          f"{MAX_FILE_BYTES:,}")])
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CaseFileError([Problem(path_text, 0, "", f"cannot read the file: {error}")]) from None
    try:
        return yaml.load(text, Loader=_LineLoader)  # _LineLoader is a SafeLoader
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        reason = str(getattr(error, "problem", None) or error)
        context = getattr(error, "context", None)
        if context and "tag" not in reason:
            reason = f"{context}, {reason}"
        raise CaseFileError([Problem(path_text, line, "", f"invalid YAML: {_clip(reason, 300)}")]) from None
    except RecursionError as error:  # not expected (nesting is limited), but never a traceback
        raise CaseFileError([Problem(path_text, 0, "", f"invalid YAML: {_clip(str(error), 300)}")]) from None


def load_file(path: Path | str) -> list[Case]:
    """Load one case file; raises CaseFileError listing every problem in it. Parsed once per process while
    the file is unchanged: a run needs the bank when it starts, when pytest is configured and at
    collection, and Cases are frozen, so one parse serves all three."""
    try:
        stat = Path(path).stat()
    except OSError:
        return _parse_file(str(path))  # read_yaml says why it cannot be read
    return list(_parsed_file(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=256)
def _parsed_file(path: str, mtime_ns: int, size: int) -> tuple[Case, ...]:
    return tuple(_parse_file(path))  # a CaseFileError is raised, never cached


def _parse_file(path: str) -> list[Case]:
    loader = _FileLoader(path)
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
        if len(cases) > MAX_TOTAL_CASES:
            raise CaseFileError([*problems, Problem(str(path), 0, "", f"the files up to this one hold "
                                                                     f"{len(cases):,} cases, more than the limit "
                                                                     f"of {MAX_TOTAL_CASES:,} per run")])
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
