"""Command line: `sepconv-conformance run | list | validate | golden | export | merge | ...`.

Exit codes: 0 every selected case was judged and conforms; 1 some case does not; 2 bad usage, an invalid
input file, or a backend or reference that cannot run here; 3 a fault of the harness or an incomplete
result set; 4 nothing judged (no case selected, or all skipped); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

from conformance import __version__
from conformance.cases.case import Case
from conformance.cases.loader import CaseFileError, load_cases
from conformance.cases.selection import default_bank
from conformance.execution import config as run_options
from conformance.execution.backends import RUNTIME_SPEC, BackendError
from conformance.execution.faults import describe_exit
from conformance.execution.isolation import list_backends
from conformance.execution.reference_process import opened_reference
from conformance.execution.session import run_suite
from conformance.exitcodes import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, usage_error
from conformance.judging.golden import build_goldens
from conformance.judging.reference import reference_unusable
from conformance.judging.references import add_reference_argument
from conformance.reporting.merge import MergeError, merge_runs
from conformance.tools.export import export_pack

# Commands that live in modules of their own: each module has HELP (one line), add_arguments(parser)
# and execute(args) -> exit code. They must be cheap to import (no TensorFlow, no CuPy at import time).
MODULE_COMMANDS: dict[str, str] = {
    "bench": "conformance.tools.bench",
    "report": "conformance.reporting.html_report",
    "selftest": "conformance.tools.selftest",
    "fuzz": "conformance.tools.fuzz",
    "shrink": "conformance.tools.shrink",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sepconv-conformance",
                                     description="Conformance suite for tf.nn.separable_conv2d.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run case files against backends, compared with TensorFlow")
    # Every option of `run` is declared once, in conformance.execution.config (the plugin's come from there too).
    run_options.add_arguments(run)
    run.add_argument("pytest_args", nargs="*", help="further pytest arguments, after --")

    golden = commands.add_parser("golden", help="golden references: TensorFlow's results, stored")
    golden_commands = golden.add_subparsers(dest="golden_command", required=True)
    build = golden_commands.add_parser("build", help="run TensorFlow once per case and store its results")
    build.add_argument("--cases", action="append", metavar="PATH", help="case file or folder (repeatable)")
    build.add_argument("--out", default="goldens", metavar="DIR", help="where entries go (default: goldens)")
    _add_skip_tag(build)

    export = commands.add_parser("export", help="write the bank as a language-neutral vector pack "
                                                "(manifest.json + .npy; see docs/vector-pack.md)")
    export.add_argument("--cases", action="append", metavar="PATH", help="case file or folder (repeatable)")
    export.add_argument("--out", required=True, metavar="DIR", help="where the pack goes")
    add_reference_argument(export, ("tensorflow", "oracle"))
    _add_skip_tag(export)

    merge = commands.add_parser("merge", help="combine the results of shard runs into one set of reports")
    merge.add_argument("folders", nargs="+", metavar="DIR", help="result folders of the shards")
    merge.add_argument("--out", required=True, metavar="DIR", help="where the merged reports go")

    backends = commands.add_parser("backends", help="list the named backends (bundled and installed by "
                                                    "packages), their versions and whether they run here")
    backends.add_argument("--json", action="store_true", help="print the list as JSON")

    for name, text in (("list", "list the case ids in the case files"),
                       ("validate", "check case files and report every problem")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--cases", action="append", metavar="PATH", help="case file or folder (repeatable)")
        _add_skip_tag(sub)
    for name, module_name in MODULE_COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(commands.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def _add_skip_tag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-tag", action="append", default=[], metavar="TAG",
                        help="leave out the cases with this tag (repeatable), e.g. bench: the full-size layers "
                             "hold most of the bytes of goldens and packs")


def _selected_cases(args: argparse.Namespace) -> list[Case]:
    """The cases of --cases (default: the bundled bank), less those with a --skip-tag tag."""
    skipped = set(args.skip_tag)
    return [c for c in load_cases(args.cases or [str(default_bank())]) if not skipped & set(c.tags)]


# Set in the child process that runs a --no-isolate session: where it writes its exit code once it has one.
VERDICT_FILE_ENV = "SEPCONV_RUN_VERDICT_FILE"


def _run_guarded(argv: Sequence[str]) -> int:
    """Run `run --no-isolate` in a child process and trust its exit code only with the verdict it wrote: a
    backend that calls os._exit(0) or exit() in the harness's process must never end the run green."""
    with tempfile.TemporaryDirectory(prefix="sepconv-run-") as folder:
        verdict = Path(folder) / "exit_code"
        done = subprocess.run([sys.executable, "-m", "conformance", *argv], check=False,
                              env={**os.environ, VERDICT_FILE_ENV: str(verdict)})
        written = verdict.read_text(encoding="utf-8").strip() if verdict.is_file() else None
    if written is not None and written == str(done.returncode):
        return done.returncode
    return usage_error("run", f"the run's process {describe_exit(done.returncode)} before reaching a verdict "
                              "(with --no-isolate the backend runs in that process): no verdict", EXIT_INTERNAL)


def _run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    values = run_options.values_of(args) | {"extra": args.pytest_args}
    values["cases"] = args.cases or [str(default_bank())]
    values["backends"] = args.backends or ["numpy"]
    config = run_options.RunConfig.from_values(values)  # ConfigError (a ValueError): exit 2
    if reason := reference_unusable(config.reference, config.golden):
        return usage_error(args.command, reason)
    verdict_file = os.environ.pop(VERDICT_FILE_ENV, None)
    if config.no_isolate and verdict_file is None:
        return _run_guarded(argv)
    code = run_suite(config)
    if verdict_file is not None:
        Path(verdict_file).write_text(str(code), encoding="utf-8")
    return code


def _list_backends(as_json: bool) -> int:
    listing = list_backends()
    if as_json:
        print(json.dumps([{"name": b.name, "source": b.source, "target": b.target, "version": b.version,
                           "runs_here": b.problem is None, "problem": b.problem,
                           "supports": b.support.describe() if b.support else "everything"} for b in listing],
                         indent=1))
        return EXIT_OK
    rows = [("NAME", "SOURCE", "VERSION", "RUNS HERE")]
    rows += [(b.name, b.source, b.version or "-",
              f"yes, supports {b.support.describe() if b.support else 'everything'}" if b.problem is None
              else f"no: {b.problem}") for b in listing]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    print(f"\nRuntimes take a device and a precision mode: {RUNTIME_SPEC}, e.g. onnxruntime:CUDAExecutionProvider,"
          "\nopenvino:GPU, jax:gpu, torch:cuda, tensorflow:/GPU:0 (docs/runtimes.md).")
    print("Also: --backend module:function, path/to/file.py:function or cmd:PROGRAM (see docs/backends.md).")
    return EXIT_OK


LISTINGS = ("list", "backends", "validate")  # commands whose whole job is to print


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:  # argparse's usage errors (exit 2), --help and --version (exit 0)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    try:
        if args.command in MODULE_COMMANDS:
            return int(importlib.import_module(MODULE_COMMANDS[args.command]).execute(args))
        if args.command == "run":
            return _run(args, argv)
        if args.command == "backends":
            return _list_backends(args.json)
        if args.command == "golden":
            if reason := reference_unusable("tensorflow"):
                return usage_error(args.command, reason)
            Path(args.out).mkdir(parents=True, exist_ok=True)  # an unusable --out stops here, before TensorFlow
            with opened_reference("tensorflow") as source:
                summary = build_goldens(_selected_cases(args), Path(args.out), source)
            print(f"{summary['entries']} golden entries in {args.out}; TensorFlow per case: "
                  + ", ".join(f"{n} {s}" for s, n in sorted(summary["reference_statuses"].items())))
            return EXIT_OK
        if args.command == "export":
            if reason := reference_unusable(args.reference):
                return usage_error(args.command, reason)
            cases = _selected_cases(args)
            Path(args.out).mkdir(parents=True, exist_ok=True)  # as for golden: before any reference is computed
            with opened_reference(args.reference) as source:
                written = export_pack(cases, Path(args.out), source)
            print(f"exported {written['cases']} cases, {written['files']} files, {written['bytes']} bytes: "
                  f"{written['manifest']}")
            return EXIT_OK
        if args.command == "merge":
            verdict, count = merge_runs([Path(f) for f in args.folders], Path(args.out))
            print(f"merged {count} results from {len(args.folders)} folders into {args.out}: {verdict.sentence}")
            return verdict.exit_code
        cases = _selected_cases(args)
        if args.command == "list":
            for case in cases:
                print(f"{case.id}\t{case.origin}")
        else:
            print(f"{len(cases)} cases, no problems")
        return EXIT_OK
    except CaseFileError as error:
        return usage_error(args.command, f"invalid case file(s):\n{error}")
    except (BackendError, MergeError, ValueError) as error:
        return usage_error(args.command, str(error))
    except KeyboardInterrupt:
        return usage_error(args.command, "interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:  # the reader of our output went away (`list | head`)
        # Silence stdout, so that the interpreter's last flush does not fail the same way again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        # A listing is complete as far as its reader wanted; any other command's outcome was not all seen.
        return EXIT_OK if args.command in LISTINGS else EXIT_INTERNAL
    except OSError as error:  # an unwritable --out, a full disk: the file is named in the message
        return usage_error(args.command, f"{type(error).__name__}: {error}")
    except Exception:  # noqa: BLE001 - a bug of ours: exit 3, never 1 ("does not conform")
        traceback.print_exc()
        return usage_error(args.command, "internal error of the harness (traceback above); please report it",
                           EXIT_INTERNAL)
