"""What can go wrong around a backend call, kept apart by whose fault it is.

- The backend rejected the input: it raised an ordinary exception from its own code (`RemoteError` when
  it ran in a child process). On a case the contract forbids, that is the expected outcome.
- The backend failed without judging the input: `BackendCrash` (its process died), `BackendTimeout`
  (no answer in time), `BackendAborted` (it raised MemoryError, SystemExit or KeyboardInterrupt: not a
  rejection, whatever the case expects).
- The harness failed: `HarnessFault` (a broken pipe to a live child, a full temp folder, a bug). Never a
  verdict on the backend.
Also the two pieces of process plumbing every isolated call needs: naming an exit, and a bounded tail of
a stderr file.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
from pathlib import Path

STDERR_TAIL_CHARS = 2000
# How long one call of a backend in a process of its own may take unless the command says otherwise:
# Python backends (isolated) and cmd: backends alike; also the limit on loading a backend in its child.
DEFAULT_TIMEOUT_S = 300.0


class BackendCrash(Exception):
    """The backend's process died during a call."""


class BackendTimeout(Exception):
    """The backend did not return within the per-case timeout (its process group was killed)."""


class BackendAborted(Exception):
    """The backend raised MemoryError, SystemExit or KeyboardInterrupt: it did not judge the input."""

    def __init__(self, type_name: str, message: str):
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name


class HarnessFault(Exception):
    """The harness failed around a call: not the backend's doing. `kind` names the stage."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"harness fault ({kind}): {message}")
        self.kind = kind


class BackwardUnsupported(Exception):
    """A `cmd:` program said it has no backward call (exit code 69, or it answered a backward call with a
    forward output): the case is skipped with this reason, never judged."""


# A rejection's origin (Result.rejected_by), by the exception's type name (it crosses the process boundary as
# a name): the runtime adapters' classes (conformance.impls.runtime_adapter), and any backend's of these names.
# runtime: the runtime refused it; adapter: the adapter did, the runtime cannot express the input;
# accepted_by_runtime: the runtime accepted what the contract forbids, and the adapter refused it after.
REJECTION_ORIGINS = {"RuntimeRejection": "runtime", "AdapterRejection": "adapter",
                     "AcceptedByRuntime": "accepted_by_runtime"}


class RemoteError(Exception):
    """An exception the backend's own code raised in its process, with its original type name."""

    def __init__(self, type_name: str, message: str):
        super().__init__(message)
        self.type_name = type_name


# What a backend call may raise that is not the backend rejecting its input.
NOT_A_REJECTION = (BackendCrash, BackendTimeout, BackendAborted, HarnessFault, BackwardUnsupported)
# What a backend raises that means it gave up rather than judged the input (in-process calls).
ABORTS = (MemoryError, SystemExit)


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "did not exit"
    if exitcode < 0:
        return f"killed by signal {signal_name(-exitcode)}"
    return f"exited with code {exitcode}"


def stderr_tail(path: Path, chars: int = STDERR_TAIL_CHARS) -> str:
    """The last `chars` characters of a stderr file, read from its end: a backend that wrote gigabytes
    costs no more than one that wrote a line."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(size - 4 * chars, 0))  # 4 bytes per character at most in UTF-8
            data = handle.read()
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")[-chars:].strip()


def kill_group(pid: int) -> None:
    """SIGKILL a process group led by `pid` (children that call setsid lead their own)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def seconds(text: str) -> float:
    """A timeout as given on a command line: a finite number of seconds > 0. `inf`, `nan`, 1e400, 0 and
    -1 are refused: each would turn a hang into something else than a `timeout`."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {text[:40]!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a finite number of seconds > 0, got {text[:40]!r}")
    return value


def ratio_limit(text: object) -> float | None:
    """--max-error-ratio: None (no gate), or a finite number >= 1 (below 1 would fail TensorFlow itself)."""
    if text is None:
        return None
    try:
        value = float(str(text))
    except ValueError:
        raise ValueError(f"--max-error-ratio: expected a number, got {str(text)[:40]!r}") from None
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"--max-error-ratio: expected a finite number >= 1, got {str(text)[:40]!r}")
    return value


def seconds_argument(text: str) -> float:
    """`seconds` as an argparse type (the error names the option)."""
    try:
        return seconds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
