"""The run configuration (conformance.execution.config): each option declared once, validated once, by a
pure function, without pytest; the CLI, the plugin, reproducers and pytest's argument list all derive
from the one declaration."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from conformance.execution import config as run_options
from conformance.execution.config import RUN_OPTIONS, ConfigError, RunConfig


class _Group:
    """A pytest option group's addoption, onto an argparse parser (what pytest does underneath)."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser

    def addoption(self, *flags: str, **spec: Any) -> None:
        self.parser.add_argument(*flags, **spec)


def _plugin_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    run_options.add_arguments(_Group(parser), plugin=True)
    for flag, dest in (("-k", "keyword"), ("-n", "workers")):  # pytest's and xdist's own
        parser.add_argument(flag, dest=dest)
    for flag, dest in (("-x", "exitfirst"), ("-q", "quiet")):
        parser.add_argument(flag, dest=dest, action="store_true")
    parser.add_argument("--dist")
    return parser


def test_every_option_is_on_the_command_line_and_in_the_plugin() -> None:
    cli = argparse.ArgumentParser()
    run_options.add_arguments(cli)
    cli_dests = {action.dest for action in cli._actions}
    plugin_dests = {action.dest for action in _plugin_parser()._actions}
    assert {o.name for o in RUN_OPTIONS} <= cli_dests
    assert {o.name for o in RUN_OPTIONS} <= plugin_dests


def test_pytest_arguments_give_the_plugin_the_same_configuration(tmp_path: Path) -> None:
    (tmp_path / "golden").mkdir()
    config = RunConfig(cases=["a.yaml"], backends=["numpy", "cmd:./x"], out=str(tmp_path / "out"),
                       keyword="float16", case_ids=["x", "y"], workers="2", reference="golden",
                       golden=str(tmp_path / "golden"), shard="2/3", timeout=7.5, resume=True,
                       expectations=["e.yaml"], no_strict_expectations=True, repeat=3, max_case_memory="1GiB",
                       max_error_ratio=2.0, exitfirst=True, quiet=True)
    arguments = config.pytest_arguments("plugin")
    assert arguments[:5] == ["a.yaml", "-p", "no:sepconv_conformance", "-p", "plugin"]
    assert "--case-timeout" in arguments and "--timeout" not in arguments  # pytest-timeout owns --timeout
    known, _ = _plugin_parser().parse_known_args(arguments[1:])
    again = RunConfig.from_values(run_options.values_of(known) | {"cases": ["a.yaml"]})
    assert again == config


def test_reproducers_repeat_only_what_changes_a_cases_verdict(tmp_path: Path) -> None:
    config = RunConfig(cases=["a.yaml"], backends=["numpy"], out="reports", keyword="x", shard="1/2",
                       timeout=3, repeat=2, reference="oracle", max_error_ratio=1.5, resume=True)
    assert config.reproducer_arguments() == ["--reference", "oracle", "--timeout", "3", "--repeat", "2",
                                             "--max-error-ratio", "1.5", "--out", "reports/reproduce"]


@pytest.mark.parametrize(("values", "message"), [
    ({"timeout": "0"}, "--timeout: expected a finite number of seconds > 0"),
    ({"timeout": "inf"}, "--timeout: expected a finite number"),
    ({"repeat": "0"}, "--repeat: must be at least 1, got 0"),
    ({"repeat": "two"}, "--repeat: expected a whole number"),
    ({"max_case_memory": "lots"}, "--max-case-memory:"),
    ({"max_error_ratio": "0.5"}, "--max-error-ratio:"),
    ({"reference": "golden"}, "--reference golden needs --golden DIR"),
    ({"reference": "magic"}, "--reference magic: must be one of tensorflow, oracle, golden"),
    ({"no_isolate": True, "timeout": "5"}, "--timeout needs isolated backends"),
    ({"resume": True}, "--resume needs --out"),
    ({"shard": "3/2"}, "shard"),
    ({"backends": []}, "--backend: at least one backend"),
])
def test_bad_values_and_combinations_name_the_option(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as raised:
        RunConfig.from_values(values)
    assert message in str(raised.value)


def test_an_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        RunConfig(out=str(tmp_path / "file"))


def test_a_command_backend_may_have_a_timeout_without_isolation() -> None:
    assert RunConfig(backends=["cmd:prog"], no_isolate=True, timeout=2).case_timeout == 2


def test_the_configuration_is_frozen() -> None:
    with pytest.raises(AttributeError):
        RunConfig().repeat = 2  # type: ignore[misc]
