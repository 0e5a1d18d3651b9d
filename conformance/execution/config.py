"""The run's configuration: every `run` option declared once, and one frozen, validated `RunConfig`.

`RUN_OPTIONS` is the single declaration. From it come the `run` subcommand's arguments (conformance.cli),
the pytest plugin's options (conformance.execution.plugin), the pytest argument list `run` starts pytest
with, and the options a case's reproducer repeats. `RunConfig.from_values` builds and validates the
configuration from option values, whichever of the two parsers produced them: a pure function, so every
rule is tested without starting pytest, and both entry points (`sepconv-conformance run` and
`pytest --backend ...`) refuse the same bad input with the same message.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.cases.selection import parse_shard
from conformance.execution.budget import parse_size
from conformance.execution.faults import DEFAULT_TIMEOUT_S, ratio_limit, seconds
from conformance.judging.references import REFERENCE_HELP, REFERENCES

_REFERENCE_HELP = "what backends are judged against: " + "; ".join(f"{c}: {h}" for c, h in REFERENCE_HELP.items())


def _size(text: str) -> str:
    parse_size(text)  # raises ValueError with the reason
    return text


def _whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise ValueError(f"must be at least {least}, got {value}")
    return value


def _repeat(text: str) -> int:
    return _whole(text, 1)


def _count(text: str) -> int:
    return _whole(text, 0)


def _ratio(text: str) -> float:
    value = ratio_limit(text)
    assert value is not None
    return value


@dataclass(frozen=True)
class Option:
    """One `run` option. `name` is RunConfig's field; `flag` its spelling on `sepconv-conformance run`;
    `pytest_flag` its spelling as a pytest option where pytest or a common plugin owns `flag` (pytest-timeout
    owns --timeout), "" where pytest itself provides it (-k, -x, -q, -n) and the plugin declares nothing."""

    name: str
    flag: str
    help: str
    kind: str = "value"  # value | list | flag (a store_true switch)
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None  # text -> value; raises ValueError with the reason
    choices: tuple[str, ...] | None = None
    pytest_flag: str | None = None  # None: the same as flag
    reproduce: bool = False  # a case's reproducer repeats it (it changes how the case is judged)

    @property
    def plugin_flag(self) -> str:
        return self.flag if self.pytest_flag is None else self.pytest_flag


RUN_OPTIONS: tuple[Option, ...] = (
    Option("cases", "--cases", "case file or folder (repeatable; default: the bundled bank)", "list", "PATH"),
    Option("backends", "--backend", "numpy, cupy, tensorflow, module:function, path/to/file.py:function or "
           "cmd:PROGRAM (repeatable; default numpy)", "list", "SPEC"),
    Option("out", "--out", "where reports go: results.jsonl, results.json, junit.xml, report.html (default: "
           "reports)", metavar="DIR"),
    Option("keyword", "-k", "select cases by id/tag expression (pytest -k)", metavar="EXPR", pytest_flag=""),
    Option("case_ids", "--id", "run only the case with this exact id (repeatable)", "list", "CASE_ID"),
    Option("workers", "-n", "parallel workers (pytest-xdist), e.g. 2 or auto", metavar="N", pytest_flag=""),
    Option("reference", "--reference", _REFERENCE_HELP, choices=REFERENCES, reproduce=True),
    Option("golden", "--golden", "golden references made by `sepconv-conformance golden build` (with "
           "--reference golden)", metavar="DIR", reproduce=True),
    Option("shard", "--shard", "run only shard K of N (1-based): a deterministic split by case id, the same "
           "on every machine", metavar="K/N"),
    Option("timeout", "--timeout", f"per-case limit on a backend call (default {DEFAULT_TIMEOUT_S:g}); a hang "
           "is recorded as `timeout` and the run goes on", metavar="SECONDS", parse=seconds,
           pytest_flag="--case-timeout", reproduce=True),
    Option("no_isolate", "--no-isolate", "call backends in the harness's process (faster to debug; a crash "
           "then ends the run)", "flag", reproduce=True),
    Option("resume", "--resume", "keep the results in OUT/results.jsonl (e.g. of a killed run) and run only "
           "the rest", "flag"),
    Option("expectations", "--expectations", "a backend's expectations file (cases -> xfail/skip with "
           "reasons; the file's `backend:` says which backend, else it applies to all; repeatable); bundled "
           "backends use their own unless one is given", "list", "FILE", reproduce=True),
    Option("no_strict_expectations", "--no-strict-expectations", "a listed xfail case that passes is a pass "
           "with a note, not an xpass failure", "flag", reproduce=True),
    Option("repeat", "--repeat", "call the backend K times per case; outputs that differ bitwise are "
           "`nondeterministic`", metavar="K", parse=_repeat, reproduce=True),
    Option("max_case_memory", "--max-case-memory", "refuse, before allocating anything, a case whose "
           "estimated peak memory exceeds SIZE (e.g. 8GiB, 512MiB; default: a quarter of this machine's "
           "memory)", metavar="SIZE", parse=_size, reproduce=True),
    Option("max_error_ratio", "--max-error-ratio", "opt-in gate: fail a case whose error against the oracle "
           "is more than R times TensorFlow's (R >= 1)", metavar="R", parse=_ratio, reproduce=True),
    Option("exitfirst", "-x", "stop at the first failing case", "flag", pytest_flag=""),
    Option("quiet", "-q", "print only the verdict and the failure groups", "flag", pytest_flag=""),
    Option("max_failures_shown", "--max-failures-shown", "after the failure groups, list at most N failures "
           "one by one (default 10; all are in the reports)", metavar="N", parse=_count),
)
OPTIONS_BY_NAME = {option.name: option for option in RUN_OPTIONS}


class ConfigError(ValueError):
    """A bad option value or combination; the message names the option."""


@dataclass(frozen=True)
class RunConfig:
    """One run, validated: built by `from_values` (or directly, which validates too) and never changed."""

    cases: Sequence[str] = ()
    backends: Sequence[str] = ("numpy",)
    out: str | None = None  # None: no report files (`run` passes its default, "reports")
    keyword: str | None = None
    case_ids: Sequence[str] = ()
    workers: str | None = None
    reference: str = "tensorflow"
    golden: str | None = None
    shard: str | None = None
    timeout: float | None = None  # None: DEFAULT_TIMEOUT_S (and no --timeout in reproducers)
    no_isolate: bool = False
    resume: bool = False
    expectations: Sequence[str] = ()
    no_strict_expectations: bool = False
    repeat: int = 1
    max_case_memory: str | None = None
    max_error_ratio: float | None = None
    exitfirst: bool = False
    quiet: bool = False
    max_failures_shown: int = 10
    extra: Sequence[str] = field(default_factory=tuple)  # further pytest arguments

    def __post_init__(self) -> None:
        for name in ("cases", "backends", "case_ids", "expectations", "extra"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in (option.name for option in RUN_OPTIONS if option.parse is not None):
            value = getattr(self, name)
            if isinstance(value, str) or (name != "max_case_memory" and value is not None):
                object.__setattr__(self, name, _parsed(OPTIONS_BY_NAME[name], str(value)))
        _validate(self)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> RunConfig:
        """From option values keyed by RunConfig field (None or missing: the default); text values are
        parsed as on the command line."""
        known = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in values.items() if k in known and v is not None}
        return cls(**given)

    @property
    def isolate(self) -> bool:
        return not self.no_isolate

    @property
    def strict_expectations(self) -> bool:
        return not self.no_strict_expectations

    @property
    def case_timeout(self) -> float:
        return DEFAULT_TIMEOUT_S if self.timeout is None else self.timeout

    @property
    def shard_part(self) -> tuple[int, int] | None:
        return parse_shard(self.shard)

    def reproducer_arguments(self) -> list[str]:
        """The options a case's reproducer needs to be judged as in this run, writing to its own folder."""
        return [*_arguments(self, [o for o in RUN_OPTIONS if o.reproduce], plugin=False),
                "--out", str(Path(self.out or "reports") / "reproduce")]

    def pytest_arguments(self, plugin: str) -> list[str]:
        """pytest's command line for this run, with `plugin` (the module holding our hooks) loaded."""
        arguments = [*self.cases, "-p", "no:sepconv_conformance", "-p", plugin,
                     "-o", f"cache_dir={Path(self.out or 'reports') / '.pytest_cache'}",  # --lf per folder
                     "-W", "ignore::pytest.PytestAssertRewriteWarning",
                     "-rN", "--tb=no"]  # our summary groups the failures; pytest's sections would repeat them
        arguments += _arguments(self, [o for o in RUN_OPTIONS if o.name != "cases"], plugin=True)
        if self.workers:
            arguments += ["--dist", "loadgroup"]
        return [*arguments, *self.extra]


def _parsed(option: Option, text: str) -> Any:
    if option.parse is None:
        return text
    try:
        return option.parse(text)
    except ValueError as error:
        raise ConfigError(f"{option.flag}: {error}") from None


def _validate(config: RunConfig) -> None:
    """The rules that join options; each value alone was checked by its Option.parse."""
    if config.reference not in REFERENCES:
        raise ConfigError(f"--reference {config.reference}: must be one of {', '.join(REFERENCES)}")
    if config.reference == "golden" and not (config.golden and Path(config.golden).is_dir()):
        raise ConfigError(f"--reference golden needs --golden DIR, a folder of golden entries (got {config.golden!r})")
    if config.no_isolate and config.timeout is not None and not all(s.startswith("cmd:") for s in config.backends):
        raise ConfigError("--timeout needs isolated backends (drop --no-isolate)")
    if config.out and Path(config.out).exists() and not Path(config.out).is_dir():
        raise ConfigError(f"--out {config.out}: exists and is not a folder")
    if config.resume and not config.out:
        raise ConfigError("--resume needs --out (the folder holding results.jsonl)")
    try:
        parse_shard(config.shard)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if not config.backends:
        raise ConfigError("--backend: at least one backend is needed")


def _arguments(config: RunConfig, options: Sequence[Option], plugin: bool) -> list[str]:
    """Command-line arguments that give `options` their values in `config` (defaults left out)."""
    defaults = RunConfig.__dataclass_fields__
    arguments: list[str] = []
    for option in options:
        flag = option.plugin_flag or option.flag if plugin else option.flag
        value = getattr(config, option.name)
        default = defaults[option.name].default
        if option.kind == "list":
            for item in value:
                arguments += [flag, str(item)]
        elif option.kind == "flag":
            arguments += [flag] if value else []
        elif value is not None and (value != default or option.name == "reference"):
            if option.name == "golden" and config.reference != "golden":
                continue
            arguments += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return arguments


def add_arguments(parser: Any, plugin: bool = False) -> None:
    """Declare RUN_OPTIONS on an argparse parser (`run`) or, with plugin=True, on a pytest option group
    (under their pytest spellings, leaving out pytest's own: -k, -n, -x, -q)."""
    for option in RUN_OPTIONS:
        flag = option.plugin_flag if plugin else option.flag
        if not flag:
            continue
        spec: dict[str, Any] = {"dest": option.name, "help": option.help}
        if option.name == "out" and not plugin:
            spec["default"] = "reports"
        if option.kind == "flag":
            spec["action"] = "store_true"
        else:
            spec["metavar"] = option.metavar
            if option.kind == "list":
                spec["action"], spec["default"] = "append", []
            if option.choices:
                spec["choices"] = option.choices
            if option.parse is not None and not plugin:  # the CLI refuses a bad value while parsing: exit 2
                spec["type"] = _argparse_type(option)
        flags = [flag, "--report-dir"] if plugin and option.name == "out" else [flag]
        parser.addoption(*flags, **spec) if plugin else parser.add_argument(*flags, **spec)


def _argparse_type(option: Option) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        assert option.parse is not None
        try:
            return option.parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return convert


def values_of(namespace: Any) -> dict[str, Any]:
    """RunConfig field values from a parsed argparse namespace or pytest's option namespace."""
    return {option.name: getattr(namespace, option.name, None) for option in RUN_OPTIONS}
