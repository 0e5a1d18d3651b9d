"""`sepconv-conformance fuzz`: random cases across every axis, run like `run`, failures saved as a case file.

Valid cases draw every parameter independently (layout, padding SAME/VALID/explicit, strides, rates,
kernel, multiplier, channels, batch, dtype, distribution) at small sizes, so a few hundred run in
seconds; a draw the contract forbids is drawn again. A share of the cases (--invalid-fraction) instead
breaks exactly one rule of the contract (conformance.cases.contract says which draws are forbidden) and expects
an error. The cases are written to DIR/fuzz_cases.yaml and run through conformance.execution.session.run_suite,
so the reports are the same as `run`'s; the failing ones are then written to DIR/fuzz_failures.yaml,
ready for `run --cases` (or to be added to the bank) and for `shrink`. The same seed draws the same cases.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conformance.cases import contract
from conformance.cases.case import Case
from conformance.execution.faults import seconds_argument
from conformance.exitcodes import EXIT_NONCONFORMING, EXIT_OK, usage_error
from conformance.judging.references import add_reference_argument
from conformance.reporting.results_file import load_results
from conformance.result import is_failing

HELP = "run random valid cases (and forbidden ones that must be rejected); save failures as a case file"
CASES_FILE, FAILURES_FILE = "fuzz_cases.yaml", "fuzz_failures.yaml"
MAX_TRIES = 1000  # redraws before giving up on a valid draw (never reached in practice)

# Value weights per axis: common values first, but every value appears.
DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 1}
DATA = {"normal": 4, "uniform": 2, "integers": 2, "nonfinite": 1, "positive": 1, "subnormal": 1}
KERNELS = {1: 2, 2: 2, 3: 4, 4: 1, 5: 1}


def _pick(rng: random.Random, weights: dict[Any, int]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _valid_draw(rng: random.Random, name: str) -> Case:
    """One valid case: small sizes, every axis drawn."""
    from conformance.cases.data import (
        integer_range,  # NumPy: imported when drawing, not with the CLI
    )

    for _ in range(MAX_TRIES):
        mode = rng.choice(("plain", "strided", "dilated"))
        strides = (rng.randint(1, 3), rng.randint(1, 3)) if mode == "strided" else (1, 1)
        rates = (rng.randint(1, 3), rng.randint(1, 3)) if mode == "dilated" else (1, 1)
        padding_kind = rng.choice(("SAME", "VALID", "EXPLICIT"))
        padding: Any = padding_kind if padding_kind != "EXPLICIT" else \
            ((rng.randint(0, 3), rng.randint(0, 3)), (rng.randint(0, 3), rng.randint(0, 3)))
        case = Case(input=(rng.randint(1, 3), rng.randint(1, 10), rng.randint(1, 10), rng.randint(1, 8)),
                    kernel=(_pick(rng, KERNELS), _pick(rng, KERNELS)), channel_multiplier=rng.randint(1, 3),
                    out_channels=rng.randint(1, 8), strides=strides, rates=rates, padding=padding,
                    data_format=rng.choice(("NHWC", "NCHW")), dtype=_pick(rng, DTYPES), data=_pick(rng, DATA),
                    name=name, tags=("fuzz",))
        if contract.violations(case):
            continue
        if case.data == "integers" and integer_range(case) < 1:
            case = dataclasses.replace(case, data="normal")
        return case
    raise RuntimeError("no valid case drawn")  # pragma: no cover - the space is mostly valid


def _break_rate_with_stride(rng: random.Random, case: Case) -> Case:
    return dataclasses.replace(case, rates=(rng.randint(2, 3), rng.randint(1, 3)),
                               strides=(rng.randint(1, 3), rng.randint(2, 3)))


def _break_outer_stride(rng: random.Random, case: Case) -> Case:
    sh, sw = case.spatial_strides
    outer = rng.choice(((2, 1), (1, 2), (2, 2), (3, 1)))
    strides = (outer[0], sh, sw, outer[1]) if case.data_format == "NHWC" else (outer[0], outer[1], sh, sw)
    return dataclasses.replace(case, strides=strides)


def _break_padding(rng: random.Random, case: Case) -> Case:
    pads = [rng.randint(0, 2) for _ in range(4)]
    pads[rng.randrange(4)] = -rng.randint(1, 2)
    return dataclasses.replace(case, padding=((pads[0], pads[1]), (pads[2], pads[3])))


def _break_fit(rng: random.Random, case: Case) -> Case:
    height = case.input[1]
    return dataclasses.replace(case, padding="VALID", kernel=(height + rng.randint(1, 2), case.kernel[1]))


def _break_depthwise_channels(rng: random.Random, case: Case) -> Case:
    kh, kw = case.kernel
    return dataclasses.replace(case, depthwise_filter_shape=(kh, kw, case.in_channels + rng.randint(1, 2),
                                                             case.channel_multiplier))


def _break_pointwise(rng: random.Random, case: Case) -> Case:
    cm, o = case.depthwise_channels, case.out_channels
    shape = rng.choice(((1, 1, cm + 1, o), (1, 2, cm, o), (2, 1, cm, o)))
    return dataclasses.replace(case, pointwise_filter_shape=shape)


def _break_rank(rng: random.Random, case: Case) -> Case:
    kh, kw = case.kernel
    if rng.random() < 0.5:
        return dataclasses.replace(case, depthwise_filter_shape=(kh, kw, case.in_channels))
    return dataclasses.replace(case, pointwise_filter_shape=(1, case.depthwise_channels, case.out_channels))


VIOLATIONS: dict[str, Callable[[random.Random, Case], Case]] = {
    "rate_with_stride": _break_rate_with_stride, "outer_stride": _break_outer_stride,
    "negative_padding": _break_padding, "kernel_does_not_fit": _break_fit,
    "depthwise_channels": _break_depthwise_channels, "pointwise_shape": _break_pointwise,
    "filter_rank": _break_rank}


def draw_cases(count: int, seed: int, invalid_fraction: float = 0.2, backward_fraction: float = 0.0) -> list[Case]:
    """`count` cases, deterministic in `seed`; about `invalid_fraction` of them break one contract rule
    (and expect an error), about `backward_fraction` are backward cases (mode: backward; their data one the
    backward pass takes). Names fuzz{seed}_{i} keep ids unique within and across seeds."""
    from conformance.cases.loader import BACKWARD_DATA

    rng = random.Random(seed)
    modes = random.Random(f"{seed}:mode")  # its own stream: the forward draws stay what they were
    cases = []
    for index in range(count):
        case = _valid_draw(rng, f"fuzz{seed}_{index}")
        if modes.random() < backward_fraction:
            case = dataclasses.replace(case, mode="backward",
                                       data=case.data if case.data in BACKWARD_DATA else "normal")
        if rng.random() < invalid_fraction:
            violation = rng.choice(sorted(VIOLATIONS))
            case = VIOLATIONS[violation](rng, case)
            assert contract.violations(case), violation  # each breaker breaks the contract by construction
            case = dataclasses.replace(case, expect_error=True, data="normal", tags=("fuzz", "error", violation))
        cases.append(case)
    return cases


def failing_results(results_path: Path) -> dict[str, list[dict[str, Any]]]:
    """case id -> the failing result records of a results.json."""
    failing: dict[str, list[dict[str, Any]]] = {}
    for record in load_results(results_path)["results"]:
        if is_failing(record["status"]):
            failing.setdefault(record["case"], []).append(record)
    return failing


# --- command line -----------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", action="append", metavar="SPEC",
                        help="backend to fuzz (repeatable; default numpy)")
    parser.add_argument("--count", type=int, default=200, metavar="N", help="cases to draw (default 200)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--invalid-fraction", type=float, default=0.2, metavar="F",
                        help="share of cases that break the contract and must be rejected (default 0.2)")
    parser.add_argument("--backward-fraction", type=float, default=0.25, metavar="F",
                        help="share of cases that test the backward pass (mode: backward; default 0.25)")
    parser.add_argument("--out", default="reports/fuzz", metavar="DIR",
                        help="where the cases, the reports and the failures go (default reports/fuzz)")
    add_reference_argument(parser, ("tensorflow", "oracle"))
    parser.add_argument("-n", dest="workers", metavar="N", help="parallel workers (pytest-xdist)")
    parser.add_argument("--timeout", type=seconds_argument, metavar="SECONDS", help="per-case limit on a backend call")
    parser.add_argument("-q", "--quiet", action="store_true", help="less output")



def execute(args: argparse.Namespace) -> int:
    from conformance.cases.case_yaml import write_case_file
    from conformance.cases.loader import load_cases
    from conformance.execution.config import RunConfig
    from conformance.execution.session import run_suite
    from conformance.judging.reference import reference_unusable

    if args.count < 1:
        return usage_error("fuzz", f"--count {args.count}: must be at least 1")
    if args.seed < 0:
        return usage_error("fuzz", f"--seed {args.seed}: must be >= 0")
    if not 0.0 <= args.invalid_fraction <= 1.0:
        return usage_error("fuzz", f"--invalid-fraction {args.invalid_fraction}: must be between 0 and 1")
    if not 0.0 <= args.backward_fraction <= 1.0:
        return usage_error("fuzz", f"--backward-fraction {args.backward_fraction}: must be between 0 and 1")
    if reason := reference_unusable(args.reference):
        return usage_error("fuzz", reason)
    backends = args.backend or ["numpy"]
    out = Path(args.out)
    cases = draw_cases(args.count, args.seed, args.invalid_fraction, args.backward_fraction)
    command = (f"sepconv-conformance fuzz --seed {args.seed} --count {args.count} "
               f"--invalid-fraction {args.invalid_fraction:g} --backward-fraction {args.backward_fraction:g}")
    cases_path = write_case_file(out / CASES_FILE, cases, [f"Drawn by: {command}"])
    load_cases([cases_path])  # our own output must be a valid case file
    invalid = sum(c.expect_error for c in cases)
    print(f"fuzz: {len(cases)} cases ({invalid} forbidden, must be rejected) in {cases_path}", flush=True)
    options = RunConfig(cases=[str(cases_path)], backends=backends, out=str(out), reference=args.reference,
                         workers=args.workers, timeout=args.timeout, quiet=args.quiet)
    code = run_suite(options)
    results = out / "results.json"
    if code not in (EXIT_OK, EXIT_NONCONFORMING) or not results.is_file():
        return code
    failing = failing_results(results)
    by_id = {c.id: c for c in cases}
    saved = [by_id[case_id] for case_id in by_id if case_id in failing]
    comments = [[f"{r['backend']}: {r['status']}: {' '.join(str(r['message']).split())[:200]}"
                 for r in failing[c.id]]
                + [f"sepconv-conformance shrink --cases {out / FAILURES_FILE} --id {c.id} --backend {r['backend']}"
                   for r in failing[c.id][:1]] for c in saved]
    path = write_case_file(out / FAILURES_FILE, saved,
                           [f"Failing cases of: {command} --backend {' --backend '.join(backends)}",
                            f"Run them: sepconv-conformance run --cases {out / FAILURES_FILE} --backend SPEC"],
                           comments)
    if saved:
        print(f"fuzz: {len(saved)} of {len(cases)} cases failed; saved as a case file: {path}")
    else:
        print(f"fuzz: none of {len(cases)} cases failed ({path} holds no case)")
    return code
