"""pytest plugin: case files become test items, one per case x backend.

Active only when `--backend` is given, so ordinary test runs are untouched. Then `pytest --backend numpy`
(no paths) runs the default bank, and -k, -x, --lf, -n (pytest-xdist) and --junitxml work as usual.
Each item's `Result` travels to the controller as a user property (xdist ships those), where the
`ResultSink` journals it, and at the end judges the whole result set (conformance.judging.verdict) and writes
results.json, junit.xml and report.html.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance import __version__
from conformance.cases.case import Case
from conformance.cases.loader import CaseFileError, load_cases, load_file
from conformance.cases.selection import ShardError, bank_digest, default_bank, in_shard
from conformance.execution import config as run_options
from conformance.execution import runner
from conformance.execution.backends import Backend, BackendError
from conformance.execution.budget import default_case_budget, over_budget, parse_size
from conformance.execution.config import RunConfig
from conformance.execution.expectations import Expectations, apply_expectation, load_expectations
from conformance.execution.faults import DEFAULT_TIMEOUT_S
from conformance.execution.isolation import IsolatedBackend, declarations, load_backend
from conformance.execution.journal import JOURNAL, FolderLock, Journal, JournalError, header_mismatch, read_journal
from conformance.execution.reference_process import open_reference
from conformance.exitcodes import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_NONCONFORMING,
    EXIT_NOTHING_JUDGED,
    EXIT_OK,
    EXIT_USAGE,
)
from conformance.files import json_text
from conformance.judging import accuracy, subnormals
from conformance.judging.golden import GoldenStore, version_note
from conformance.judging.reference import reference_unusable, tensorflow_version
from conformance.judging.references import ReferenceSource
from conformance.judging.verdict import COMPLETE, INTERNAL_ERROR, INTERRUPTED, STOPPED, Verdict, judge
from conformance.reporting import html_report, reports
from conformance.result import Kind, ReferenceStatus, Result, Status, is_failing

RESULT_PROPERTY = reports.RESULT_PROPERTY
CASE_SUFFIXES = (".yaml", ".yml")
BACKENDS = pytest.StashKey[list["Backend"]]()
RUN = pytest.StashKey[RunConfig]()
PROBED_INPUT = "sepconv_probed_backends"  # xdist workerinput key: {spec: declarations}, pickled
REFERENCE = pytest.StashKey[ReferenceSource]()  # what every case is judged against, opened once per process
DONE = pytest.StashKey["set[tuple[str, str]]"]()
EXPECTATIONS = pytest.StashKey["dict[str, Expectations | None]"]()
WARNINGS = pytest.StashKey[list[str]]()
HEADER = pytest.StashKey[dict[str, Any]]()
REPRODUCE = pytest.StashKey[list[str]]()  # the run's options, for every reproducer line
GOLDEN_VERSIONS = pytest.StashKey["dict[str, int] | None"]()
EXIT_CODE = pytest.StashKey[int]()  # our exit code (conformance.exitcodes), for `sepconv-conformance run`
# Our exit codes as pytest's, for `pytest --backend ...` used directly.
PYTEST_CODES = {EXIT_OK: 0, EXIT_NONCONFORMING: 1, EXIT_USAGE: 4, EXIT_INTERNAL: 3, EXIT_NOTHING_JUDGED: 5,
                EXIT_INTERRUPTED: 2}


def pytest_addoption(parser: pytest.Parser) -> None:
    """The options of `sepconv-conformance run`, under the same names (conformance.execution.config); a
    --backend enables collection of case files."""
    run_options.add_arguments(parser.getgroup("sepconv-conformance", "separable_conv2d conformance"), plugin=True)


def _load_backends(config: pytest.Config, run: RunConfig) -> list[Backend]:
    """Each backend once (conformance.execution.isolation.load_backend). A pytest-xdist worker takes what
    the controller's probe found (handed over in its workerinput) instead of loading every backend again."""
    handed = getattr(config, "workerinput", {}).get(PROBED_INPUT)
    probed: dict[str, Any] = pickle.loads(handed) if handed else {}
    return [load_backend(spec, run.case_timeout, run.isolate, probed.get(spec)) for spec in dict.fromkeys(run.backends)]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist, on the controller: a run's items go out by case (conformance.execution.scheduling)."""
    if RUN in config.stash and config.getoption("dist") == "loadgroup":
        from conformance.execution.scheduling import CaseGroupScheduling  # xdist is there: it calls this

        return CaseGroupScheduling(config, log)
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist, on the controller, before a worker starts: hand it the backends' probe results."""
    isolated = [b for b in node.config.stash.get(BACKENDS, []) if isinstance(b.fn, IsolatedBackend)]
    node.workerinput[PROBED_INPUT] = pickle.dumps({b.name: declarations(b) for b in isolated})
    for backend in isolated:  # the workers call the backends; the controller's probing children may go
        backend.fn.close()


@pytest.hookimpl(tryfirst=True)  # before junitxml's configure reads --junitxml
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xdist_group(name): keep a case's items on one xdist worker")
    if not config.getoption("backends"):
        return
    try:
        _configure(config, RunConfig.from_values(run_options.values_of(config.option)))
    except (BackendError, CaseFileError, JournalError, ShardError, ValueError) as error:
        raise pytest.UsageError(str(error)) from None


def _configure(config: pytest.Config, run: RunConfig) -> None:
    environment = dict(os.environ)  # before any backend import: what TensorFlow's process starts with
    if reason := reference_unusable(run.reference, run.golden):
        raise ValueError(reason)
    config.stash[RUN] = run
    if run.cases:
        config.args = list(run.cases)
    elif config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args = [str(default_bank())]
    bank = load_cases(_case_paths(config.args))  # every case file validated up front: never a half-run
    wanted = set(run.case_ids)
    taken = [c for c in bank if (not wanted or c.id in wanted) and in_shard(c.id, run.shard_part)]
    budget = default_case_budget() if run.max_case_memory is None else parse_size(run.max_case_memory)
    if problems := over_budget(taken, budget):
        raise CaseFileError(problems)
    config.stash[GOLDEN_VERSIONS] = (GoldenStore(run.golden).tensorflow_versions(taken)
                                     if run.reference == "golden" and run.golden else None)
    given = [load_expectations(file) for file in run.expectations]
    backends = _load_backends(config, run)
    # TensorFlow too runs in a child process of its own, so that its aborting is recorded on one case.
    config.stash[REFERENCE] = open_reference(run.reference, run.golden, run.isolate, DEFAULT_TIMEOUT_S, environment)
    expectations = {b.name: _expectations_for(b, given) for b in backends}
    config.stash[BACKENDS] = backends
    config.stash[EXPECTATIONS] = expectations
    config.stash[WARNINGS] = _expectation_warnings(given, backends, expectations, bank)
    config.stash[REPRODUCE] = run.reproducer_arguments()
    header = _header(config, run, backends, expectations, bank)
    config.stash[HEADER] = header
    controller = not hasattr(config, "workerinput")  # the xdist controller, or a plain run
    lock = FolderLock(Path(run.out)) if run.out and controller else None
    if lock is not None:  # before the journal is read: no other run may be writing it
        lock.path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    try:
        resumed = _resumed(run.out, header) if run.resume and run.out else []
    except JournalError:
        if lock is not None:
            lock.release()
        raise
    config.stash[DONE] = {(r.case, r.backend) for r in resumed}
    if controller:
        config.pluginmanager.register(ResultSink(config, run.out, header, resumed, lock, {c.id: c for c in taken}),
                                      "sepconv-result-sink")


def _resumed(report_dir: str, header: dict[str, Any]) -> list[Result]:
    """The results of the journal in report_dir, when it was written by a run like this one."""
    saved, resumed = read_journal(Path(report_dir) / JOURNAL)
    if problem := header_mismatch(saved, header):
        raise JournalError(f"--resume {Path(report_dir) / JOURNAL}: {problem}; run without --resume "
                           "(or into another --out) to start afresh")
    return resumed


def _header(config: pytest.Config, run: RunConfig, backends: list[Backend],
            expectations: dict[str, Expectations | None], bank: list[Case]) -> dict[str, Any]:
    """What produced a run's results: a resumed journal must match it, shards merged must agree on it."""
    golden = run.golden
    return {"version": __version__, "bank_digest": bank_digest(bank), "reference": run.reference,
            "golden": str(Path(golden).resolve()) if golden and run.reference == "golden" else None,
            "backends": [b.name for b in backends],
            "backend_versions": {b.name: b.version for b in backends},
            "backend_fingerprints": {b.name: b.fingerprint for b in backends},
            "repeat": run.repeat, "strict_expectations": run.strict_expectations,
            "max_error_ratio": run.max_error_ratio,
            "expectations": {name: e.source for name, e in expectations.items() if e},
            "shard": run.shard,
            "selection": {"keyword": config.option.keyword or None, "markers": config.option.markexpr or None,
                          "ids": sorted(run.case_ids)}}


def _expectations_for(backend: Backend, files: list[Expectations]) -> Expectations | None:
    """This backend's expectations: the entries of every file given that names it (or names no backend),
    in command-line order (the first matching entry wins); with none given, the file the backend ships
    (bundled ones in impls/expectations/, others as EXPECTATIONS)."""
    applying = [f for f in files if f.backend in (None, backend.name)]
    if not applying:
        return load_expectations(backend.expectations) if backend.expectations else None
    return Expectations(tuple(e for f in applying for e in f.entries), backend.name,
                        ", ".join(f.source for f in applying))


def _expectation_warnings(given: list[Expectations], backends: list[Backend],
                          expectations: dict[str, Expectations | None], bank: list[Case]) -> list[str]:
    names = [b.name for b in backends]
    warnings = [f"{f.source}: names backend {f.backend!r}, which is not in this run ({', '.join(names)}): "
                "not applied (a typo?)" for f in given if f.backend is not None and f.backend not in names]
    every_entry = Expectations(tuple(dict.fromkeys(e for x in expectations.values() if x for e in x.entries)))
    warnings += [f"{entry.origin}: matches no case of the bank ({entry.status}: {entry.reason})"
                 for entry in every_entry.unmatched(bank)]
    return warnings


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the child processes this session started, so that a run inside another process (fuzz,
    selftest, tests calling run_suite) leaves nothing behind: the next run in-process starts clean."""
    if BACKENDS not in config.stash:
        return
    config.stash[REFERENCE].close()
    for backend in config.stash[BACKENDS]:
        if isinstance(backend.fn, IsolatedBackend):
            backend.fn.close()


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
        run = self.config.stash[RUN]
        wanted = set(run.case_ids)
        for case in load_file(self.path):
            if (wanted and case.id not in wanted) or not in_shard(case.id, run.shard_part):
                continue
            for backend in self.config.stash[BACKENDS]:
                if (case.id, backend.name) in self.config.stash[DONE]:
                    continue  # resumed: its result is already in the journal
                name = f"{case.id}[{backend.name}]"
                # The node id given whole, so that pytest 9 parses it as --lf's cache does: the backend
                # as the parameter (else `-- --lf` finds no previous failure and reruns everything).
                yield CaseItem.from_parent(self, name=name, nodeid=f"{self.nodeid}::{name}", case=case,
                                           backend=backend)


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
        options = self.config.stash[REPRODUCE]
        try:
            result = self._result(options)
        except Exception as error:  # noqa: BLE001 - a bug of ours around run_case: never the backend's verdict
            result = runner.harness_fault(self.case, self.backend.name, error, options)
        self.user_properties.append((RESULT_PROPERTY, json_text(result.to_dict())))
        if is_failing(result.status):
            raise CaseFailure(result)
        if result.status == "skip":
            pytest.skip(result.message)
        if result.status == "xfail":
            pytest.xfail(result.message)

    def _result(self, options: list[str]) -> Result:
        run = self.config.stash[RUN]
        expectations = self.config.stash[EXPECTATIONS].get(self.backend.name)
        expected = expectations.lookup(self.case) if expectations else None
        if expected is not None and expected.status == "skip":
            return runner.skipped(self.case, self.backend.name, f"skipped by {expected.origin}: {expected.reason}",
                                  options)
        result = runner.run_case(self.case, self.backend, self.config.stash[REFERENCE], run.repeat, options,
                                 run.max_error_ratio)
        return apply_expectation(result, expected, run.strict_expectations)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, CaseFailure):
            return reports.describe_failure(excinfo.value.result)
        if isinstance(excinfo.value, pytest.xfail.Exception):  # an expected failure: its reason, not pytest's
            return str(excinfo.value.msg)  # traceback, which parses the source of every frame (0.1 s each)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.case.origin.line - 1, f"{self.case.id} [{self.backend.name}]"


def _lost_result(report: pytest.TestReport, no_isolate: bool, case: Case, backend: str, options: list[str]) -> Result:
    """The record of an item that ended without a result: its test process died under it (pytest-xdist
    reports a crashed worker this way), or pytest failed it outside the test itself (setup, teardown). Only
    a death during the test with --no-isolate can be the backend's crash: the backend runs in that process.
    Otherwise the backend ran in a child of its own, and the fault is the harness's."""
    text = str(report.longrepr or "")[-500:]
    common: dict[str, Any] = {"case": case.id, "backend": backend, "expect": case.expect,
                              "reference_status": ReferenceStatus.NOT_RUN, "parameters": case.parameters(),
                              "reproducer": runner.reproducer(case, backend, options)}
    if no_isolate and report.when not in ("setup", "teardown"):  # pytest-xdist's dead worker: when "???"
        return Result(status=Status.CRASH, kind=Kind.CRASH, message=f"the test process died during this case: {text}",
                      **common)
    return Result(status=Status.ERROR, fault="harness", kind=Kind.HARNESS,
                  message=f"harness fault: the case ended without a result: {text}", **common)


class ResultSink:
    """Collects results on the controller: journals each (DIR/results.jsonl, flushed per result, so a
    killed run keeps what it computed), judges the set at the end, writes the reports and the summary."""

    def __init__(self, config: pytest.Config, report_dir: str | None, header: dict[str, Any],
                 resumed: list[Result], lock: FolderLock | None, cases: dict[str, Case]):
        self.config = config
        self.cases = cases  # by id: what a lost result records (its parameters, its reproducer)
        self.report_dir = Path(report_dir) if report_dir else None
        self.resumed = resumed
        self.results: dict[tuple[str, str], Result] = {(r.case, r.backend): r for r in resumed}
        self.collected: int | None = None
        self.started = time.time()
        self.journal = Journal(self.report_dir / JOURNAL, header) if self.report_dir else None
        self.lock = lock
        self.interruption: str | None = None
        self.verdict: Verdict | None = None
        self.report_problem = ""

    def record(self, result: Result) -> None:
        key = (result.case, result.backend)
        if key in self.results:
            return  # an item reported twice (a rerun plugin): the first result stands
        self.results[key] = result
        if self.journal is not None:
            if not self.journal.started:  # the first result: only now may the previous run's files go
                self.journal.start(self.resumed)
            self.journal.append(result)

    @pytest.hookimpl(tryfirst=True)  # before junitxml copies the properties into junit.xml
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = [(i, value) for i, (name, value) in enumerate(report.user_properties) if name == RESULT_PROPERTY]
        if not properties and report.failed and report.nodeid.split("::")[0].endswith(CASE_SUFFIXES):
            case, _, backend = report.nodeid.rsplit("::", 1)[-1].partition("[")
            self.record(_lost_result(report, self.config.stash[RUN].no_isolate, self.cases[case], backend[:-1],
                                     self.config.stash[REPRODUCE]))
        for index, value in properties:
            data = json.loads(str(value))
            if report.when == "call":  # every phase's report carries the item's properties
                self.record(Result.from_dict(data))
            if data.get("details"):
                # The error maps (up to ~5 kB a failure) belong in results.json and report.html; in
                # junit.xml they would only make a CI server's parser slow.
                report.user_properties[index] = (RESULT_PROPERTY, json.dumps({**data, "details": {}}))

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.collected = len(session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.collected = max(self.collected or 0, len(ids))

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        self.interruption = f"{excinfo.typename}: {excinfo.value}"

    def pytest_internalerror(self, excrepr: Any, excinfo: Any) -> None:
        self.interruption = "INTERNALERROR"

    @property
    def expected(self) -> int | None:
        """How many results the run set out to have: the resumed ones and the items collected to run."""
        return None if self.collected is None else len(self.resumed) + self.collected

    def _completion(self, session: pytest.Session) -> str:
        if self.interruption is None:
            if session.shouldfail:
                return STOPPED
            # Without a collection count the set cannot be proven complete: never judged as complete.
            unproven = self.collected is None and not self.config.option.collectonly
            return INTERNAL_ERROR if session.exitstatus == pytest.ExitCode.INTERNAL_ERROR or unproven else COMPLETE
        if self.interruption.startswith("KeyboardInterrupt"):
            return INTERRUPTED
        return STOPPED if "stopping after" in self.interruption else INTERNAL_ERROR

    def run_info(self, completion: str, verdict: Verdict) -> dict[str, Any]:
        header: dict[str, Any] = self.config.stash[HEADER]
        return {**header,
                "cases": [str(p) for p in self.config.args], "expectation_warnings": self.config.stash[WARNINGS],
                "golden_tensorflow_versions": self.config.stash[GOLDEN_VERSIONS],
                "started": self.started, "duration_s": time.time() - self.started,
                "completion": completion, "expected_results": self.expected, "resumed_results": len(self.resumed),
                "verdict": {"exit_code": verdict.exit_code, "sentence": verdict.sentence}}

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.journal is not None:
            self.journal.close()
        results = list(self.results.values())
        completion = self._completion(session)
        verdict = judge(results, self.expected, completion)
        if self.config.option.collectonly:
            verdict = Verdict(EXIT_NOTHING_JUDGED, "NOTHING JUDGED: --collect-only runs no case")
        self.verdict = verdict
        self.config.stash[EXIT_CODE] = verdict.exit_code
        session.exitstatus = PYTEST_CODES[verdict.exit_code]
        if self.report_dir is not None and results:
            run = self.run_info(completion, verdict)
            reports.write_results_json(self.report_dir / "results.json", results, run)
            reports.write_junit(self.report_dir / "junit.xml", results)
            try:  # a rendering problem must never change the gate's verdict, nor lose results.json
                html_report.write_report(self.report_dir)
            except (html_report.ReportError, OSError) as error:
                self.report_problem = f"warning: report.html not written: {error}"
        if self.lock is not None:
            self.lock.release()

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = [f"warning: expectations entry {w}" for w in self.config.stash[WARNINGS]]
        if (versions := self.config.stash[GOLDEN_VERSIONS]) is not None:
            note = version_note(versions, tensorflow_version())
            lines.append(f"warning: {note}" if note else f"goldens made with TensorFlow {', '.join(sorted(versions))}")
        results = list(self.results.values())
        if results:
            run, quiet = self.config.stash[RUN], self.config.get_verbosity() < 0
            path = str(self.report_dir / "results.json") if self.report_dir is not None else "results.json"
            lines += reports.terminal_summary(results, {"reference": run.reference,
                                                        "duration_s": time.time() - self.started},
                                              quiet, run.max_failures_shown, path)
            if not quiet:
                lines += accuracy.summary_lines(results) + subnormals.summary_lines(results)
        if self.report_dir is not None and results:
            lines.append(self.report_problem or f"report: {self.report_dir / 'report.html'}, "
                                                f"summary: {self.report_dir / html_report.SUMMARY}")
            lines.append(f"reports: {self.report_dir / 'results.json'}, {self.report_dir / 'junit.xml'}")
        elif self.report_dir is not None:
            lines.append(f"no result: the reports in {self.report_dir} were left as they were")
        if self.verdict is not None:
            lines.append(self.verdict.sentence)
        terminalreporter.section("sepconv-conformance")
        for line in lines:
            terminalreporter.write_line(line)
