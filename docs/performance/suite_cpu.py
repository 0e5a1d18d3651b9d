"""Where the test suite's time goes, in CPU: `python docs/performance/suite_cpu.py [PYTEST ARGS...]` (default
`-n 2 --dist loadfile -q`) runs the suite once and prints how busy the machine's cores were, and the CPU
each module and the costliest tests used: the test's own process (the xdist worker) and every process it
started (isolated children, TensorFlow's reference processes, CLI subprocesses, Chromium). Linux only
(/proc).

Each test's own CPU is the worker's process time across the test (this file is also the pytest plugin
that records it); the children's is sampled every 0.2 s from /proc and charged to the test their worker
was running (a process is charged to a worker through PYTEST_XDIST_WORKER in its environment; a process
that ends between two samples loses up to 0.2 s; a fixture shared by several tests is charged to the
first). On a saturated machine wall time is about the total CPU divided by the cores, so this is where a
faster suite has to come from."""

from __future__ import annotations

import bisect
import collections
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LOG = "SUITE_CPU_LOG"
SAMPLE_S = 0.2
CLOCK = os.sysconf("SC_CLK_TCK")


# --- the plugin, in each xdist worker ----------------------------------------------------------------------
def _record(kind: str, nodeid: str) -> None:
    if (log := os.environ.get(LOG)) and (worker := os.environ.get("PYTEST_XDIST_WORKER")):
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{kind}\t{time.time():.3f}\t{worker}\t{time.process_time():.3f}\t{nodeid}\n")


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    _record("start", nodeid)


def pytest_runtest_logfinish(nodeid: str, location: object) -> None:
    _record("end", nodeid)


# --- the sampler, in this process --------------------------------------------------------------------------
def _sample(samples: list[tuple[float, str, float]], busy: list[float], stop: threading.Event) -> None:
    """Appends (time, worker, CPU seconds since the last sample) per worker, and the share of busy cores."""
    last: dict[int, float] = {}
    owner: dict[int, str] = {}
    total, idle = _cores()
    while not stop.wait(SAMPLE_S):
        now, spent = time.time(), collections.defaultdict[str, float](float)
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                cpu = (int(fields[11]) + int(fields[12])) / CLOCK
                if pid not in owner:
                    environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                    owner[pid] = next((e.split(b"=", 1)[1].decode() for e in environment
                                       if e.startswith(b"PYTEST_XDIST_WORKER=")), "")
            except (OSError, ValueError, IndexError):
                continue
            if owner[pid]:  # a worker's child (the worker itself sets the variable after its start)
                spent[owner[pid]] += cpu - last.get(pid, 0.0)
            last[pid] = cpu
        samples += [(now, worker, seconds) for worker, seconds in spent.items() if seconds > 0]
        new_total, new_idle = _cores()
        busy.append(1 - (new_idle - idle) / max(1, new_total - total))
        total, idle = new_total, new_idle


def _cores() -> tuple[int, int]:
    """All and idle jiffies of all cores, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values), values[3] + values[4]


def _report(log: Path, samples: list[tuple[float, str, float]], busy: list[float], wall: float) -> None:
    own: dict[str, float] = {}
    spans: dict[str, list[tuple[float, float, str]]] = collections.defaultdict(list)
    started: dict[tuple[str, str], tuple[float, float]] = {}
    for line in log.read_text(encoding="utf-8").splitlines():
        kind, at, worker, cpu, nodeid = line.split("\t", 4)
        if kind == "start":
            started[worker, nodeid] = (float(at), float(cpu))
        elif (worker, nodeid) in started:
            begun, cpu_then = started.pop((worker, nodeid))
            own[nodeid] = float(cpu) - cpu_then
            spans[worker].append((begun, float(at), nodeid))
    children: dict[str, float] = collections.defaultdict(float)
    for worker in spans:
        spans[worker].sort()
    for sampled, worker, seconds in samples:
        runs = spans.get(worker, [])
        index = bisect.bisect_right([begun for begun, _, _ in runs], sampled) - 1
        if index >= 0 and sampled <= runs[index][1] + SAMPLE_S:
            children[runs[index][2]] += seconds
    cost = {nodeid: own[nodeid] + children[nodeid] for nodeid in own}
    modules: dict[str, float] = collections.defaultdict(float)
    for nodeid, seconds in cost.items():
        modules[nodeid.split("::")[0]] += seconds
    cores = os.cpu_count() or 1
    print(f"\nwall {wall:.0f} s on {cores} cores; cores busy {100 * sum(busy) / max(1, len(busy)):.0f} % of the run; "
          f"tests' CPU {sum(cost.values()):.0f} core-seconds (their own {sum(own.values()):.0f}, their child "
          f"processes' {sum(children.values()):.0f})")
    print("\nCPU by module (core-seconds):")
    for module, seconds in sorted(modules.items(), key=lambda item: -item[1])[:15]:
        print(f"  {seconds:6.1f}  {module}")
    print("\ncostliest tests (core-seconds: all, own):")
    for nodeid, seconds in sorted(cost.items(), key=lambda item: -item[1])[:25]:
        print(f"  {seconds:6.1f} {own[nodeid]:6.1f}  {nodeid}")


def main() -> int:
    arguments = sys.argv[1:] or ["-n", "2", "--dist", "loadfile", "-q"]
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "tests.log"
        log.touch()
        here = str(Path(__file__).resolve().parent)
        environment = {**os.environ, LOG: str(log),
                       "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
        samples: list[tuple[float, str, float]] = []
        busy: list[float] = []
        stop = threading.Event()
        sampler = threading.Thread(target=_sample, args=(samples, busy, stop), daemon=True)
        sampler.start()
        began = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", "pytest", "-p", Path(__file__).stem, "-p", "no:cacheprovider",
                                *arguments], env=environment)
        wall = time.perf_counter() - began
        stop.set()
        sampler.join()
        _report(log, samples, busy, wall)
    return code


if __name__ == "__main__":
    sys.exit(main())
