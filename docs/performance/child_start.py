"""Start-up of an isolated backend's child, side by side in one run: `python docs/performance/child_start.py
[BACKEND_SPEC] [STARTS]` (default numpy, 20). Each start is a fresh child that loads the backend and answers
one call. Three ways: the fork server as the harness starts children; the fork server with the main script
run again in each child, as multiprocessing does by default (this script imports the CLI, as the
`sepconv-conformance` console script does); and spawn, main script included, as before the fork server.
The first fork-server start includes the server's
own (once per harness) and is reported apart."""

from __future__ import annotations

import contextlib
import multiprocessing
import statistics
import sys
import time

import numpy as np

import conformance.cli  # noqa: F401 - what the console script, the usual main script, imports
from conformance.execution import isolation

ARGUMENTS = (np.zeros((1, 4, 4, 2), np.float32), np.zeros((3, 3, 2, 1), np.float32),
             np.zeros((1, 1, 2, 2), np.float32), [1, 1, 1, 1], "SAME")


def starts(spec: str, count: int) -> list[float]:
    seconds = []
    for _ in range(count):
        began = time.perf_counter()
        child = isolation.IsolatedBackend(spec)
        child(*ARGUMENTS)
        seconds.append(time.perf_counter() - began)
        child.close()
    return seconds


def main() -> None:
    spec, count = (sys.argv[1:] + ["numpy"])[0], int((sys.argv[2:] + ["20"])[0])
    assert isolation._context().get_start_method() == "forkserver", "no fork server here: nothing to compare"
    first, *forked = starts(spec, count + 1)
    isolation._main_left_out = contextlib.nullcontext  # type: ignore[assignment]
    with_main = starts(spec, count)
    isolation._context = lambda: multiprocessing.get_context("spawn")  # type: ignore[assignment]
    spawned = starts(spec, count)
    fork, main_again, spawn = (statistics.median(s) for s in (forked, with_main, spawned))
    print(f"{spec}, {count} starts each, median: fork server {fork * 1e3:.0f} ms (its first start, with the "
          f"server's own: {first * 1e3:.0f} ms); fork server running the main script again {main_again * 1e3:.0f} ms "
          f"({main_again / fork:.1f}x); spawn {spawn * 1e3:.0f} ms ({spawn / fork:.1f}x)")


if __name__ == "__main__":
    main()
