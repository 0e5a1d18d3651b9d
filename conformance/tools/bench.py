"""`sepconv-conformance bench`: time backends against TensorFlow on the CPU, side by side in one process.

Method (docs/performance.md says more):
- the shapes are cases of the bank (by default those tagged `bench`), with the run's seeded inputs;
  `--dtype` re-types them, to time a dtype without adding cases;
- TensorFlow: tf.nn.separable_conv2d called eagerly on /CPU:0 with TF32 off (the harness's own set-up),
  inputs converted to tensors before timing, `.numpy()` inside the timed call so the work is complete;
- a backend: its function called in this process (no isolation child, so no IPC in the timing; a `cmd:`
  backend's time does include writing .npy files and starting its program), np.asarray of its result
  inside the timed call;
- `warmup` untimed calls of each, then `repeats` timed rounds that interleave TensorFlow and the backends,
  alternating the order each round, so machine noise hits all alike; the figure is the median. Each timed
  call comes right after an untimed call of the same side (`--no-prime`: right after the other side's):
  BLAS and TensorFlow keep their worker threads spinning for a while after a call, and a side timed in
  the other's wake would pay for them; primed, each side runs as in a sequence of its own calls;
- each backend's first output is checked against TensorFlow's with the harness's comparison (against the
  oracle where TensorFlow refuses the case), so a fast but wrong backend is flagged, not celebrated;
- flops per call: depthwise 2*N*Ho*Wo*C*M*kh*kw plus pointwise 2*N*Ho*Wo*C*M*O (padding taps counted).
Rows TensorFlow refuses are printed as "TF n/a" and left out of the ratio summary, like wrong results.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from conformance.exitcodes import EXIT_NONCONFORMING, EXIT_OK, usage_error

HELP = "time backends against TensorFlow (CPU) on the bank's bench shapes: median times, ratio, GFLOP/s"
DEFAULT_TAG = "bench"
FORMAT_VERSION = 1
THREADS_ENV = "SEPCONV_NUMPY_THREADS"  # read by the bundled NumPy backend
DTYPE_CHOICES = ("float16", "bfloat16", "float32", "float64")


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value <= 60:
        raise argparse.ArgumentTypeError(f"must be between 0 and 60, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", action="append", metavar="SPEC",
                        help="backend to time (repeatable; default numpy): a name, module:function, "
                             "path/to/file.py:function or cmd:PROGRAM (cmd: times include the file I/O and "
                             "process start)")
    parser.add_argument("--cases", action="append", metavar="PATH",
                        help="case file or folder (repeatable; default: the bundled bank)")
    parser.add_argument("--tag", action="append", metavar="TAG",
                        help=f"time the cases carrying this tag (repeatable: every tag given; default {DEFAULT_TAG})")
    parser.add_argument("--id", action="append", default=[], dest="case_ids", metavar="CASE_ID",
                        help="time only the case with this exact id (repeatable; replaces the tag selection)")
    parser.add_argument("--dtype", action="append", choices=DTYPE_CHOICES,
                        help="time the selected shapes in this dtype instead of each case's own (repeatable)")
    parser.add_argument("--mode", choices=("forward", "backward"), default="forward",
                        help="time the forward pass, or the backward pass (the three gradients: a backend's "
                             "backprop against tf.GradientTape) on the same shapes (default forward)")
    parser.add_argument("--repeats", type=_count(1), default=10, metavar="N",
                        help="timed calls of each side per shape (default 10); the median is reported")
    parser.add_argument("--warmup", type=_count(0), default=2, metavar="N",
                        help="untimed calls of each side per shape first (default 2)")
    parser.add_argument("--pause", type=_seconds, default=0.0, metavar="SECONDS",
                        help="sleep this long before each timed call, so that neither side starts while the other's "
                             "idle worker threads still spin (BLAS and TensorFlow spin-wait after a call; default 0)")
    parser.add_argument("--no-prime", action="store_true",
                        help="time each call right after the other side's (by default an untimed call of the same "
                             "side comes first, so that no side is timed while the other's threads still spin)")
    parser.add_argument("--threads", type=_count(1), metavar="N",
                        help="threads for TensorFlow's intra-op pool and for the NumPy backend's depthwise stage "
                             f"(${THREADS_ENV}); default: every core for TensorFlow, the backend's own default (half "
                             "the cores). BLAS keeps its setting (OPENBLAS_NUM_THREADS, read when NumPy starts)")
    parser.add_argument("--json", metavar="FILE", help="also write the table, the summary and the set-up as JSON")


@dataclass
class Timing:
    """One side of one row: a backend, or TensorFlow."""

    name: str
    seconds: list[float] = field(default_factory=list)
    status: str = "ok"  # ok, wrong (its output fails the check), error (it raised), n/a (TensorFlow refused)
    detail: str = ""

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


@dataclass
class Row:
    case: Any  # conformance.cases.case.Case
    flops: int
    tensorflow: Timing
    backends: list[Timing]

    def ratio(self, timing: Timing) -> float | None:
        """backend / TensorFlow, only where both ran and the backend's output is right."""
        if timing.status != "ok" or self.tensorflow.status != "ok" or not timing.seconds:
            return None
        return timing.median / self.tensorflow.median  # type: ignore[operator]


def flop_count(case: Any) -> int:
    """Flops of one call: depthwise 2*N*Ho*Wo*C*M*kh*kw, pointwise 2*N*Ho*Wo*C*M*O. Backward: the
    intermediate again, the gradient reaching it and the pointwise filter gradient (2 pointwise stages), the
    depthwise filter and input gradients (2 depthwise stages): 2*N*Ho*Wo*C*M*(3*kh*kw + 2*O)."""
    from conformance.cases import contract

    geometry = contract.geometry(case)
    pixels = case.batch * geometry.out_h * geometry.out_w
    kh, kw = case.kernel
    if case.mode == "backward":
        return 2 * pixels * case.depthwise_channels * (3 * kh * kw + 2 * case.out_channels)
    return 2 * pixels * case.depthwise_channels * (kh * kw + case.out_channels)


def _select(cases: Sequence[Any], tags: Sequence[str], case_ids: Sequence[str], dtypes: Sequence[str],
            mode: str = "forward") -> list[Any]:
    if case_ids:
        chosen = [c for c in cases if c.id in set(case_ids)]
    else:
        chosen = [c for c in cases if set(tags) <= set(c.tags)]
    chosen = [c if c.mode == mode else replace(c, mode=mode) for c in chosen if not c.expect_error]
    if dtypes:
        chosen = [c if c.dtype == d else replace(c, dtype=d) for c in chosen for d in dtypes]
    chosen = list({c.id: c for c in chosen}.values())  # a shape re-typed into a dtype the bank has it in: once
    return sorted(chosen, key=lambda c: c.dtype != "float32")  # float32 first (the goals), else file order


def _tensorflow(threads: int | None) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from conformance.judging.reference import tensorflow_module as configured

    if threads is not None:  # must precede TensorFlow's first op
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    return configured()  # the harness's set-up of TensorFlow (TF32 off), shared with every reference


@dataclass(frozen=True)
class Schedule:
    """How the timed calls are laid out (see the module docstring)."""

    repeats: int
    warmup: int
    pause: float = 0.0  # seconds of sleep before each timed call
    prime: bool = True  # an untimed call of the same side right before each timed call


def _check(case: Any, inputs: Any, outputs: dict[str, Any], sides: Sequence[Timing]) -> None:
    """Judge each backend's first output with the harness's comparison: against TensorFlow's (both sides
    carry rounding error), or against the float64 oracle where TensorFlow refused the case; backward, each
    gradient with its own error model."""
    from conformance.cases.data import numpy_dtype
    from conformance.judging.backward import backward_oracle, compare_gradients
    from conformance.judging.compare import compare
    from conformance.judging.oracle import compute_oracle
    from conformance.judging.tolerance import Tolerance

    reference = outputs.get("tensorflow")
    if case.mode == "backward":
        gradients = backward_oracle(case, inputs)

        def judge(got: Any) -> dict[str, Any]:
            return compare_gradients(case, got, reference, gradients)
    else:
        oracle = compute_oracle(case, inputs)

        def judge(got: Any) -> dict[str, Any]:
            expected, sides_with_error = (oracle.output, 1) if reference is None else (reference, 2)
            return {"": compare(got, expected, oracle.output, oracle.bound, Tolerance.for_case(case), sides_with_error,
                                numpy_dtype(case.dtype), case.data_format, oracle.variance)}
    for timing in (t for t in sides if t.status == "ok"):
        verdicts = judge(outputs[timing.name])
        if wrong := [f"{name}: {v.reason}" if name else v.reason for name, v in verdicts.items() if not v.passed]:
            timing.status, timing.detail = "wrong", wrong[0]


def _time(calls: Sequence[tuple[Timing, Callable[[], Any]]], schedule: Schedule) -> None:
    """Warm up, then time `repeats` rounds, alternating the order of the sides from round to round."""
    for _ in range(schedule.warmup):
        for _, call in calls:
            call()
    gc.collect()
    gc.disable()  # no collection inside a timed call
    try:
        for round_ in range(schedule.repeats):
            for timing, call in (calls if round_ % 2 == 0 else calls[::-1]):
                if schedule.pause > 0:
                    time.sleep(schedule.pause)
                if schedule.prime:
                    call()
                start = time.perf_counter()
                call()
                timing.seconds.append(time.perf_counter() - start)
    finally:
        gc.enable()


def _bench_case(tf: Any, case: Any, backends: Sequence[Any], schedule: Schedule) -> Row:
    import numpy as np

    from conformance.cases.data import materialize
    from conformance.judging.reference import error_summary

    inputs = materialize(case)
    arguments = {"strides": case.operator_strides, "padding": case.operator_padding,
                 "data_format": case.data_format, "dilations": list(case.rates)}
    with tf.device("/CPU:0"):
        tensors = [tf.constant(a) for a in (inputs.input, inputs.depthwise_filter, inputs.pointwise_filter)]

    def call_tensorflow() -> Any:
        with tf.device("/CPU:0"):
            if case.mode == "forward":
                return tf.nn.separable_conv2d(*tensors, **arguments).numpy()
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                output = tf.nn.separable_conv2d(*tensors, **arguments)
            found = tape.gradient(output, tensors, output_gradients=tf.constant(inputs.output_gradient))
            return tuple(g.numpy() for g in found)

    def caller(backend: Any) -> Callable[[], Any]:
        operands = (inputs.input, inputs.depthwise_filter, inputs.pointwise_filter)
        if case.mode == "forward":
            return lambda: np.asarray(backend.fn(*operands, **arguments))
        if backend.backprop is None:
            def missing() -> Any:
                raise ValueError(f"{backend.name} has no backward pass (backprop)")
            return missing
        return lambda: tuple(np.asarray(g) for g in backend.backprop(*operands, inputs.output_gradient, **arguments))

    sides = [(Timing("tensorflow"), call_tensorflow)] + [(Timing(b.name), caller(b)) for b in backends]
    outputs = {}
    for timing, call in sides:
        try:
            outputs[timing.name] = call()
        except Exception as error:  # noqa: BLE001 - a refusal or a failure is this row's finding
            timing.status = "n/a" if timing.name == "tensorflow" else "error"
            timing.detail = error_summary(error)[:200]
    _check(case, inputs, outputs, [t for t, _ in sides[1:]])
    _time([(t, call) for t, call in sides if t.status in ("ok", "wrong")], schedule)
    return Row(case, flop_count(case), sides[0][0], [t for t, _ in sides[1:]])


def _geometry(case: Any) -> str:
    n, h, w, c = case.input
    kh, kw = case.kernel
    padding = case.padding if isinstance(case.padding, str) else "explicit"
    return (f"{n}x{h}x{w}x{c} k{kh}x{kw} m{case.channel_multiplier} o{case.out_channels} "
            f"s{'x'.join(map(str, case.spatial_strides))} r{'x'.join(map(str, case.rates))} {padding}")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def _gflops(row: Row, timing: Timing) -> str:
    return "-" if timing.median is None else f"{row.flops / timing.median / 1e9:.1f}"


class _Table:
    """Rows printed as they are measured; text columns sized from the selection up front."""

    HEADER = ("shape", "geometry", "layout", "dtype", "GFLOP", "TF ms", "TF GFLOP/s", "backend", "ms", "GFLOP/s",
              "ratio", "check")

    def __init__(self, cases: Sequence[Any], backends: Sequence[str]):
        texts = [[c.name or c.id for c in cases], [_geometry(c) for c in cases], ["NCHW"], [*DTYPE_CHOICES],
                 ["0000.000"], ["TF n/a", "00000.00"], ["0000.0"], list(backends), ["00000.00"], ["0000.0"],
                 ["000.00"]]
        self.widths = [max(len(h), *(len(t) for t in column)) for h, column in zip(self.HEADER, texts)]

    def line(self, cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, self.widths)) + "  " + cells[-1]

    def header(self) -> str:
        return self.line(self.HEADER)

    def rows(self, row: Row) -> list[str]:
        tf_ms = "TF n/a" if row.tensorflow.status == "n/a" else _ms(row.tensorflow.median)
        lines = []
        for timing in row.backends:
            ratio = row.ratio(timing)
            check = timing.status if timing.status == "ok" else f"{timing.status.upper()}: {timing.detail}"
            lines.append(self.line([row.case.name or row.case.id, _geometry(row.case), row.case.data_format,
                                    row.case.dtype, f"{row.flops / 1e9:.3f}", tf_ms, _gflops(row, row.tensorflow),
                                    timing.name, _ms(timing.median), _gflops(row, timing),
                                    "-" if ratio is None else f"{ratio:.2f}", check]))
        return lines


def summarize(rows: Sequence[Row], backend: str, dtype: str) -> dict[str, Any]:
    """Median and worst ratio of one backend in one dtype (the goals are stated per dtype), over the rows
    where both sides ran and the backend's output was right."""
    rows = [row for row in rows if row.case.dtype == dtype]
    ratios = [(row.ratio(t), row.case.id) for row in rows for t in row.backends if t.name == backend]
    counted = [(r, case_id) for r, case_id in ratios if r is not None]
    statuses = [t.status for row in rows for t in row.backends if t.name == backend]
    summary: dict[str, Any] = {"backend": backend, "dtype": dtype, "shapes": len(ratios), "compared": len(counted),
                               "tensorflow_na": sum(row.tensorflow.status == "n/a" for row in rows),
                               "wrong": statuses.count("wrong"), "errors": statuses.count("error")}
    if counted:
        worst, worst_case = max(counted)
        summary |= {"median_ratio": statistics.median(r for r, _ in counted), "worst_ratio": worst,
                    "worst_case": worst_case}
    return summary


def _summary_line(summary: dict[str, Any]) -> str:
    if "median_ratio" not in summary:
        text = f"{summary['backend']} {summary['dtype']}: no shape where both it and TensorFlow ran correctly"
    else:
        text = (f"{summary['backend']} {summary['dtype']}: median ratio {summary['median_ratio']:.2f}, "
                f"worst {summary['worst_ratio']:.2f} ({summary['worst_case']}) over {summary['compared']} shapes")
    left_out = [f"{summary[k]} {label}" for k, label in (("tensorflow_na", "TF n/a"), ("wrong", "WRONG"),
                                                          ("errors", "raised")) if summary[k]]
    return text + (f"; left out: {', '.join(left_out)}" if left_out else "")


def environment(tf: Any, backends: Sequence[Any]) -> dict[str, Any]:
    """The machine and the threading each side uses, as printed in the header and stored in the JSON."""
    import numpy as np

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    blas_env = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
                if k in os.environ}
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    threads = {}
    for backend in backends:
        module = sys.modules.get(getattr(backend.fn, "__module__", "") or "")
        count = getattr(module, "threads", None)
        threads[backend.name] = count() if callable(count) else None
    return {"cpu": model, "cores_available": cores, "platform": platform.platform(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(), "numpy": np.__version__, "tensorflow": tf.__version__,
            "blas": f"{blas.get('name', '?')} {blas.get('version', '')}".strip(), "blas_env": blas_env,
            "tensorflow_intra_op_threads": intra or f"default ({cores})",
            "backend_threads": threads, "backend_versions": {b.name: b.version for b in backends}}


def _to_json(rows: Sequence[Row], summaries: list[dict[str, Any]], setup: dict[str, Any]) -> dict[str, Any]:
    def side(row: Row, timing: Timing) -> dict[str, Any]:
        median = timing.median
        return {"name": timing.name, "status": timing.status, "detail": timing.detail, "median_s": median,
                "seconds": timing.seconds, "gflops": None if median is None else row.flops / median / 1e9,
                "ratio": None if timing.name == "tensorflow" else row.ratio(timing)}

    return {"format_version": FORMAT_VERSION, "setup": setup, "summary": summaries,
            "rows": [{"case": row.case.id, "origin": str(row.case.origin), "geometry": _geometry(row.case),
                      "data_format": row.case.data_format, "dtype": row.case.dtype, "flops": row.flops,
                      "tensorflow": side(row, row.tensorflow), "backends": [side(row, t) for t in row.backends]}
                     for row in rows]}


def _print_setup(setup: dict[str, Any], backends: Sequence[Any], schedule: Schedule, shapes: int,
                 mode: str = "forward") -> None:
    primed = "each after an untimed call of the same side" if schedule.prime else "not primed"
    pause = f", {schedule.pause:g} s pause before each" if schedule.pause else ""
    print(f"bench: {shapes} shapes; per side {schedule.repeats} interleaved timed calls ({primed}{pause}) after "
          f"{schedule.warmup} warm-up calls; median times; ratio = backend / TensorFlow")
    print(f"machine: {setup['cpu']}, {setup['cores_available']} cores available, load average "
          f"{' '.join(f'{v:.2f}' for v in setup['load_average'] or [])}; {setup['platform']}")
    print(f"TensorFlow {setup['tensorflow']} on CPU, eager, TF32 off, intra-op threads "
          f"{setup['tensorflow_intra_op_threads']}; NumPy {setup['numpy']} with {setup['blas']}"
          + (f" ({setup['blas_env']})" if setup["blas_env"] else ""))
    for backend in backends:
        threads = setup["backend_threads"][backend.name]
        print(f"backend {backend.name} (version {backend.version or '?'})"
              + (f": threads() = {threads}" if threads else "")
              + (": times include .npy files and starting the program" if backend.name.startswith("cmd:") else ""))
    if mode == "backward":
        print("GFLOP per call = 2*N*Ho*Wo*C*M*(3*kh*kw + 2*O) / 1e9 (the three gradients: tf.GradientTape on "
              "TensorFlow's side, the backend's backprop on the other)\n")
    else:
        print("GFLOP per call = 2*N*Ho*Wo*C*M*(kh*kw + O) / 1e9 (depthwise + pointwise)\n")



def execute(args: argparse.Namespace) -> int:
    from conformance.cases.loader import CaseFileError, load_cases
    from conformance.cases.selection import default_bank
    from conformance.execution.backends import BackendError, resolve_backend
    from conformance.judging.reference import tensorflow_missing

    if reason := tensorflow_missing():
        return usage_error("bench", f"bench times backends against TensorFlow: {reason}")
    tags = args.tag or [DEFAULT_TAG]
    try:
        cases = _select(load_cases(args.cases or [str(default_bank())]), tags, args.case_ids, args.dtype or [],
                        args.mode)
    except CaseFileError as error:
        return usage_error("bench", f"invalid case file(s):\n{error}")
    if not cases:
        what = f"the ids {args.case_ids}" if args.case_ids else f"every tag of {tags}"
        return usage_error("bench", f"no valid case matches {what} (cases that expect an error are never timed)")
    if args.threads is not None:
        os.environ[THREADS_ENV] = str(args.threads)
    try:
        backends = [resolve_backend(spec) for spec in args.backend or ["numpy"]]
    except BackendError as error:
        return usage_error("bench", str(error))
    schedule = Schedule(args.repeats, args.warmup, args.pause, not args.no_prime)
    tf = _tensorflow(args.threads)
    setup = environment(tf, backends) | dataclasses.asdict(schedule)
    _print_setup(setup, backends, schedule, len(cases), args.mode)
    table, rows = _Table(cases, [b.name for b in backends]), []
    print(table.header())
    for case in cases:
        rows.append(_bench_case(tf, case, backends, schedule))
        print("\n".join(table.rows(rows[-1])), flush=True)
    dtypes = [d for d in DTYPE_CHOICES if any(row.case.dtype == d for row in rows)]
    summaries = [summarize(rows, b.name, d) for b in backends for d in sorted(dtypes, key=lambda d: d != "float32")]
    print("\n".join(f"summary: {_summary_line(s)}" for s in summaries))
    if args.json:
        setup["load_average_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        path = Path(args.json)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(_to_json(rows, summaries, setup), indent=1) + "\n", encoding="utf-8")
        except OSError as error:
            return usage_error("bench", f"--json {args.json}: cannot write: {error}")
        print(f"json: {path}")
    wrong = any(t.status in ("wrong", "error") for row in rows for t in row.backends)
    return EXIT_NONCONFORMING if wrong else EXIT_OK
