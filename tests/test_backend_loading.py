"""How a run loads a backend (conformance.execution.isolation.load_backend): once, in a child process,
never in the harness's own; pytest-xdist workers take the controller's probe instead of probing again."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import SMALL_CASE, cli, cli_here

COUNTED = '''
import os
with open({counter!r}, "a", encoding="utf-8") as imports:
    imports.write(f"{{os.getpid()}}\\n")
from conformance.impls.numpy_backend import separable_conv2d
'''


def counted_backend_and_cases(folder: Path) -> Path:
    """A backend that logs the pid of each process importing it, and six cases; returns the log's path."""
    counter = folder / "imports.txt"
    (folder / "counted.py").write_text(COUNTED.format(counter=str(counter)), encoding="utf-8")
    cases = SMALL_CASE + "".join(f"""
  - input: [1, {size}, 5, 3]
    kernel: [3, 3]
    channel_multiplier: 1
    out_channels: 2
    padding: VALID
""" for size in (5, 6, 7, 8, 9))
    (folder / "cases.yaml").write_text(cases, encoding="utf-8")
    return counter


def test_a_plain_run_imports_the_backend_once_in_the_child_that_probed_it(tmp_path: Path) -> None:
    counter = counted_backend_and_cases(tmp_path)
    done = cli("run", "--cases", "cases.yaml", "--backend", "counted.py:separable_conv2d", "--reference", "oracle",
               "--out", "out", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(counter.read_text(encoding="utf-8").split()) == 1  # the probing child serves the six calls


def test_xdist_workers_take_the_controllers_probe_and_the_harness_never_imports_it(tmp_path: Path) -> None:
    counter = counted_backend_and_cases(tmp_path)
    done = cli_here("run", "--cases", "cases.yaml", "--backend", "counted.py:separable_conv2d", "--reference", "oracle",
               "-n", "2", "--out", "out", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    imports = counter.read_text(encoding="utf-8").split()
    # The controller's probe, then one call process per worker that ran cases (1 or 2). A worker probing
    # again would add one each (4 or 5); a harness process importing it would add more.
    assert 2 <= len(imports) <= 3 and len(set(imports)) == len(imports), imports
