"""pytest plugin: case files become test items, one per case x backend.

Active only when `--backend` is given, so ordinary test runs are untouched. Then `pytest --backend numpy`
(no paths) runs the default bank, and -k, -x, --lf, -n (pytest-xdist) and --junitxml work as usual.
Each item's `Result` travels to the controller as a user property (xdist ships those), where the
`ResultSink` writes results.json and prints the summary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance import __version__, html_report, reports, runner
from conformance.backends import Backend, BackendError, resolve_backend
from conformance.case import Case
from conformance.expectations import Expectations, apply_expectation, load_expectations
from conformance.external import ExternalCommand
from conformance.isolation import IsolatedBackend
from conformance.loader import CaseFileError, load_cases, load_file
from conformance.reference import reference_unusable
from conformance.result import FAILING_STATUSES, Result
from conformance.runner import run_case

RESULT_PROPERTY = "sepconv_result"
CASE_SUFFIXES = (".yaml", ".yml")
BACKENDS = pytest.StashKey[list["Backend"]]()
SHARD = pytest.StashKey["tuple[int, int] | None"]()
DONE = pytest.StashKey["set[tuple[str, str]]"]()
BANK_DIGEST = pytest.StashKey[str]()
EXPECTATIONS = pytest.StashKey["dict[str, Expectations | None]"]()
EXPECTATION_WARNINGS = pytest.StashKey[list[str]]()


def bank_digest(cases: list[Case]) -> str:
    """Identifies the whole bank a run drew from (before -k, --id and --shard): shards of one bank agree."""
    text = "\n".join(sorted(json.dumps(c.parameters() | {"origin": None}, sort_keys=True) for c in cases))
    return hashlib.sha256(text.encode()).hexdigest()
JOURNAL = "results.jsonl"


def read_journal(path: Path) -> list[Result]:
    """Results already journaled; a last line cut short by a kill is ignored (that case runs again)."""
    if not path.is_file():
        return []
    results = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            results.append(Result.from_dict(json.loads(line)))
        except (ValueError, TypeError):
            continue
    return results


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'K/N' -> (K, N) with 1 <= K <= N; raises pytest.UsageError otherwise."""
    if text is None:
        return None
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise pytest.UsageError(f"--shard {text!r}: expected K/N with 1 <= K <= N, e.g. 2/4")
    return int(k), int(n)


def in_shard(case_id: str, shard: tuple[int, int] | None) -> bool:
    """Stable across machines, Python versions and bank edits: depends on the id alone."""
    if shard is None:
        return True
    k, n = shard
    return int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "big") % n == k - 1


def default_bank() -> Path:
    """The bundled bank: packaged as conformance/bank in a wheel, the repo's cases/ in a checkout."""
    packaged = Path(__file__).parent / "bank"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "cases"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sepconv-conformance", "separable_conv2d conformance")
    group.addoption("--backend", action="append", default=[], metavar="SPEC",
                    help="backend to test: numpy, cupy, module:function or path/to/file.py:function "
                         "(repeatable); enables collection of case files")
    group.addoption("--cases", action="append", default=[], metavar="PATH",
                    help="case file or folder (repeatable; default: the bundled bank)")
    group.addoption("--id", action="append", default=[], dest="case_ids", metavar="CASE_ID",
                    help="run only the case with this exact id (repeatable)")
    group.addoption("--reference", choices=("tensorflow", "oracle", "golden"), default="tensorflow",
                    help="tensorflow (default): TensorFlow checked against the float64 oracle; golden: "
                         "stored TensorFlow results (--golden DIR), no TensorFlow needed; oracle: the "
                         "float64 oracle alone")
    group.addoption("--golden", default=None, metavar="DIR",
                    help="golden references made by `sepconv-conformance golden build`")
    group.addoption("--shard", default=None, metavar="K/N",
                    help="run only shard K of N (1-based): a deterministic split by case id, the same on "
                         "every machine")
    group.addoption("--case-timeout", type=float, default=None, metavar="SECONDS",
                    help="per-case limit on a backend call: a hang is recorded as `timeout`")
    group.addoption("--no-isolate", action="store_false", dest="isolate",
                    help="call backends in the test process (faster to debug; a crash ends the run)")
    group.addoption("--resume", action="store_true",
                    help="keep the results already in DIR/results.jsonl and run only the missing ones")
    group.addoption("--expectations", action="append", default=[], metavar="FILE",
                    help="a backend's expectations (YAML: cases -> xfail or skip, with reasons); the file's "
                         "`backend:` says which backend, else it applies to all (repeatable). Bundled "
                         "backends use theirs unless one is given")
    group.addoption("--no-strict-expectations", action="store_false", dest="strict_expectations",
                    help="a listed xfail case that passes is a pass with a note, not an `xpass` failure")
    group.addoption("--repeat", type=int, default=1, metavar="K",
                    help="call the backend K times per case; outputs that differ bitwise between calls "
                         "are the status `nondeterministic`")
    group.addoption("--report-dir", default=None, metavar="DIR",
                    help="write results.json (and junit.xml unless --junitxml is given) here")


@pytest.hookimpl(tryfirst=True)  # before junitxml's configure reads --junitxml
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): keep a case's items on one xdist worker")
    specs: list[str] = config.getoption("backend")
    if not specs:
        return
    try:
        backends = [resolve_backend(spec) for spec in dict.fromkeys(specs)]
    except BackendError as error:
        raise pytest.UsageError(str(error)) from None
    timeout = config.getoption("case_timeout")
    for backend in backends:
        if isinstance(backend.fn, ExternalCommand) and timeout is not None:
            backend.fn.timeout = timeout  # its own process already: the per-case limit applies to it directly
    # TensorFlow too runs in a child process of its own, so that its aborting is one case's crash.
    runner.isolate_reference(runner.REFERENCE_SPEC if config.getoption("isolate") else None)
    if config.getoption("isolate"):  # each backend in its own process: crashes and hangs become results
        backends = [b if isinstance(b.fn, ExternalCommand)
                    else dataclasses.replace(b, fn=IsolatedBackend(b.name, timeout)) for b in backends]
    elif timeout is not None and not all(isinstance(b.fn, ExternalCommand) for b in backends):
        raise pytest.UsageError("--case-timeout needs isolated backends (drop --no-isolate)")
    if reason := reference_unusable(config.getoption("reference"), config.getoption("golden")):
        raise pytest.UsageError(reason)
    if config.getoption("cases"):
        config.args = config.getoption("cases")
    elif config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args = [str(default_bank())]
    if config.getoption("repeat") < 1:
        raise pytest.UsageError(f"--repeat {config.getoption('repeat')}: must be at least 1")
    try:  # validate every case file up front: a bad file is a usage error, not a half-run
        bank = load_cases(_case_paths(config.args))
        given = [load_expectations(file) for file in config.getoption("expectations")]
        expectations = {b.name: _expectations_for(b, given) for b in backends}
    except CaseFileError as error:
        raise pytest.UsageError(f"invalid case or expectations file(s):\n{error}") from None
    config.stash[BANK_DIGEST] = bank_digest(bank)
    config.stash[EXPECTATIONS] = expectations
    every_entry = Expectations(tuple(dict.fromkeys(e for x in expectations.values() if x for e in x.entries)))
    config.stash[EXPECTATION_WARNINGS] = [f"{entry.origin}: matches no case of the bank ({entry.status}: "
                                          f"{entry.reason})" for entry in every_entry.unmatched(bank)]
    config.stash[SHARD] = parse_shard(config.getoption("shard"))
    report_dir = config.getoption("report_dir")
    if config.getoption("resume") and not report_dir:
        raise pytest.UsageError("--resume needs --report-dir (the folder holding results.jsonl)")
    journaled = read_journal(Path(report_dir) / JOURNAL) if config.getoption("resume") else []
    config.stash[DONE] = {(r.case, r.backend) for r in journaled}
    if report_dir and not config.option.xmlpath:
        config.option.xmlpath = str(Path(report_dir) / "junit.xml")
    config.stash[BACKENDS] = backends
    if not hasattr(config, "workerinput"):  # the xdist controller, or a plain run
        config.pluginmanager.register(ResultSink(config, report_dir, journaled), "sepconv-result-sink")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the child processes this session started, so that a run inside another process (fuzz,
    selftest, tests calling run_suite) leaves nothing behind: the next run in-process starts clean."""
    if BACKENDS not in config.stash:
        return
    runner.isolate_reference(None)
    for backend in config.stash[BACKENDS]:
        if isinstance(backend.fn, IsolatedBackend):
            backend.fn.close()


def _expectations_for(backend: Backend, files: list[Expectations]) -> Expectations | None:
    """This backend's expectations: the entries of every file given that names it (or names no backend),
    in command-line order (the first matching entry wins); with none given, the file the backend ships
    (bundled ones in impls/expectations/, others as EXPECTATIONS)."""
    applying = [f for f in files if f.backend in (None, backend.name)]
    if not applying:
        return load_expectations(backend.expectations) if backend.expectations else None
    return Expectations(tuple(e for f in applying for e in f.entries), backend.name,
                        ", ".join(f.source for f in applying))


def _case_paths(args: list[str]) -> list[str]:
    """The case files and folders among pytest's arguments (node ids lose their '::' part)."""
    paths = [arg.split("::")[0] for arg in args]
    return [p for p in paths if Path(p).is_dir() or Path(p).suffix in CASE_SUFFIXES]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if BACKENDS in parent.config.stash and file_path.suffix in CASE_SUFFIXES:
        return CaseFile.from_parent(parent, path=file_path)
    return None


class CaseFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        wanted = set(self.config.getoption("case_ids"))
        for case in load_file(self.path):
            if (wanted and case.id not in wanted) or not in_shard(case.id, self.config.stash[SHARD]):
                continue
            for backend in self.config.stash[BACKENDS]:
                if (case.id, backend.name) in self.config.stash[DONE]:
                    continue  # resumed: its result is already in the journal
                yield CaseItem.from_parent(self, name=f"{case.id}[{backend.name}]", case=case, backend=backend)


class CaseFailure(Exception):
    """Raised by an item whose result does not conform; carries the result for the report."""

    def __init__(self, result: Result):
        super().__init__(result.message)
        self.result = result


class CaseItem(pytest.Item):
    def __init__(self, *, case: Case, backend: Backend, **kwargs: Any):
        super().__init__(**kwargs)
        self.case = case
        self.backend = backend
        self.add_marker(pytest.mark.xdist_group(case.id))
        self.extra_keyword_matches.update(case.tags)  # lets -k select by tag

    def runtest(self) -> None:
        reference = self.config.getoption("reference")
        golden = self.config.getoption("golden") if reference == "golden" else None
        expectations = self.config.stash[EXPECTATIONS].get(self.backend.name)
        expected = expectations.lookup(self.case) if expectations else None
        if expected is not None and expected.status == "skip":
            result = runner.skipped(self.case, self.backend.name, f"skipped by {expected.origin}: {expected.reason}")
        else:
            result = run_case(self.case, self.backend, reference == "tensorflow", golden,
                              self.config.getoption("repeat"))
            result = apply_expectation(result, expected, self.config.getoption("strict_expectations"))
        self.user_properties.append((RESULT_PROPERTY, json.dumps(result.to_dict())))
        if result.status in FAILING_STATUSES:
            raise CaseFailure(result)
        if result.status == "skip":
            pytest.skip(result.message)
        if result.status == "xfail":
            pytest.xfail(result.message)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, CaseFailure):
            return reports.describe_failure(excinfo.value.result)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.case.origin.line - 1, f"{self.case.id} [{self.backend.name}]"


class ResultSink:
    """Collects results on the controller: appends each to the journal (DIR/results.jsonl, flushed per
    result, so a killed run keeps what it computed), then writes results.json and the terminal summary."""

    def __init__(self, config: pytest.Config, report_dir: str | None, resumed: list[Result]):
        self.config = config
        self.report_dir = Path(report_dir) if report_dir else None
        self.results: list[Result] = []
        self.started = time.time()
        self.journal = None
        self.report_problem = ""
        if self.report_dir is not None:
            self.report_dir.mkdir(parents=True, exist_ok=True)
            # Rewritten, not appended: drops a line a kill cut short, and the results of a previous run
            # unless resumed.
            self.journal = open(self.report_dir / JOURNAL, "w", encoding="utf-8")  # noqa: SIM115
        for result in resumed:
            self.record(result)

    def record(self, result: Result) -> None:
        self.results.append(result)
        if self.journal is not None:
            self.journal.write(json.dumps(reports.json_safe(result.to_dict())) + "\n")
            self.journal.flush()

    @pytest.hookimpl(tryfirst=True)  # before junitxml copies the properties into junit.xml
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for index, (name, value) in enumerate(report.user_properties):
            if name != RESULT_PROPERTY:
                continue
            data = json.loads(value)
            if report.when == "call":  # every phase's report carries the item's properties
                self.record(Result.from_dict(data))
            if data.get("details"):
                # The error maps (up to ~5 kB a failure) belong in results.json and report.html; in
                # junit.xml they would only make a CI server's parser slow.
                report.user_properties[index] = (name, json.dumps({**data, "details": {}}))

    def run_info(self) -> dict[str, Any]:
        return {"backends": [b.name for b in self.config.stash[BACKENDS]],
                "backend_versions": {b.name: b.version for b in self.config.stash[BACKENDS]},
                "reference": self.config.getoption("reference"),
                "cases": [str(p) for p in self.config.args], "bank_digest": self.config.stash[BANK_DIGEST],
                "shard": self.config.getoption("shard"), "version": __version__,
                "repeat": self.config.getoption("repeat"),
                "expectations": {name: e.source for name, e in self.config.stash[EXPECTATIONS].items() if e},
                "expectation_warnings": self.config.stash[EXPECTATION_WARNINGS],
                "started": self.started, "duration_s": time.time() - self.started}

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.journal is not None:
            self.journal.close()
        # Resumed results count too: a resumed failure keeps the gate red, and a run with nothing left
        # to do is judged by what the journal holds rather than as "no tests collected".
        if self.results and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            conforms = not any(r.status in FAILING_STATUSES for r in self.results)
            session.exitstatus = pytest.ExitCode.OK if conforms else pytest.ExitCode.TESTS_FAILED
        if self.report_dir is not None:
            reports.write_results_json(self.report_dir / "results.json", self.results, self.run_info())
            try:  # a rendering problem must never change the gate's verdict, nor lose results.json
                html_report.write_report(self.report_dir)
            except (html_report.ReportError, OSError) as error:
                self.report_problem = f"warning: report.html not written: {error}"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = [f"warning: expectations entry {w}" for w in self.config.stash[EXPECTATION_WARNINGS]]
        lines += reports.terminal_summary(self.results, self.run_info())
        if self.report_dir is not None:
            lines.append(self.report_problem or f"report: {self.report_dir / 'report.html'}")
            lines.append(f"reports: {self.report_dir / 'results.json'}, {self.config.option.xmlpath}")
        terminalreporter.section("sepconv-conformance")
        for line in lines:
            terminalreporter.write_line(line)
