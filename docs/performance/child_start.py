"""Start-up of an isolated backend's child, the fork server against spawn, side by side in one run:
`python docs/performance/child_start.py [BACKEND_SPEC] [STARTS]` (default numpy, 20). Each start is a fresh
child that loads the backend and answers one call; the first fork-server start includes the server's own
(once per harness) and is reported apart."""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import time

import numpy as np

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
    isolation._context = lambda: multiprocessing.get_context("spawn")  # type: ignore[assignment]
    spawned = starts(spec, count)
    fork, spawn = statistics.median(forked), statistics.median(spawned)
    print(f"{spec}, {count} starts each, median: fork server {fork * 1e3:.0f} ms (its first start, with the "
          f"server's own: {first * 1e3:.0f} ms), spawn {spawn * 1e3:.0f} ms; spawn / fork server = {spawn / fork:.1f}x")


if __name__ == "__main__":
    main()
