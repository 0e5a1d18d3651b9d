"""Run a backend in a child process, so that a crash or a hang is one case's result, not the end of the run.

The child is started once (spawn: no state inherited from the harness, TensorFlow never imported there),
resolves the backend spec itself, and serves calls over a pipe. If it dies (a segfault, abort(),
os._exit), the call raises BackendCrash with the signal or exit code and the tail of its stderr; if it
does not answer within the timeout it is killed and the call raises BackendTimeout. Either way the next
call starts a fresh child.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
import weakref
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

STDERR_TAIL_CHARS = 2000


class BackendCrash(Exception):
    """The backend's process died during a call."""


class BackendTimeout(Exception):
    """The backend did not return within the per-case timeout."""


class RemoteError(Exception):
    """An exception the backend raised in its process, with its original type name."""

    def __init__(self, type_name: str, message: str):
        super().__init__(message)
        self.type_name = type_name


def _serve(connection: Connection, spec: str, stderr_path: str) -> None:
    """The child's loop: one call per message, until the parent closes the pipe."""
    descriptor = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(descriptor, 2)
    from conformance.backends import resolve_backend

    backend = resolve_backend(spec)
    while True:
        try:
            args, kwargs = connection.recv()
        except EOFError:  # the harness is gone (a killed run): nobody will read or remove the file
            Path(stderr_path).unlink(missing_ok=True)
            return
        try:
            output = backend.fn(*args, **kwargs)
            if not isinstance(output, np.ndarray) and hasattr(output, "__array__"):
                output = np.asarray(output)
            reply: tuple[Any, ...] = ("ok", output)
        except (BackendCrash, BackendTimeout) as error:  # e.g. an external command that crashed in there
            reply = ("crash" if isinstance(error, BackendCrash) else "timeout", str(error))
        except BaseException as error:  # noqa: BLE001 - everything the backend raises goes back to the harness
            reply = ("raised", type(error).__name__, str(error))
        try:
            connection.send(reply)
        except (BrokenPipeError, ConnectionResetError):  # the harness is gone, as above
            Path(stderr_path).unlink(missing_ok=True)
            return
        except Exception:  # noqa: BLE001 - an unpicklable return value
            connection.send(("ok", f"<unpicklable {type(reply[1]).__name__}>"))


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "did not exit"
    if exitcode < 0:
        try:
            return f"killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class IsolatedBackend:
    """A callable with the backend signature that runs `spec` in a child process."""

    def __init__(self, spec: str, timeout: float | None = None):
        self.spec = spec
        self.timeout = timeout
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: Connection | None = None
        self._stderr = Path(tempfile.gettempdir()) / f"sepconv-backend-{os.getpid()}-{id(self)}.stderr"
        # close() removes the child's stderr file; this removes it for an object never closed, at exit.
        weakref.finalize(self, self._stderr.unlink, missing_ok=True)

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, self.spec, str(self._stderr)), daemon=True)
        self._process.start()
        child.close()
        self._connection = parent

    def _stderr_tail(self) -> str:
        try:
            text = self._stderr.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-STDERR_TAIL_CHARS:].strip()

    def close(self) -> None:
        """Stop the child and remove its stderr file; a later call starts a fresh child."""
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._process = self._connection = None
        self._stderr.unlink(missing_ok=True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._process is None or not self._process.is_alive():
            self.close()
            self._start()
        assert self._connection is not None and self._process is not None
        self._connection.send((args, kwargs))
        if not self._connection.poll(self.timeout):
            self.close()
            raise BackendTimeout(f"no result after {self.timeout:g} s; the backend's process was killed")
        try:
            reply = self._connection.recv()
        except (EOFError, ConnectionResetError):
            process = self._process
            process.join(5)
            tail = self._stderr_tail()
            self.close()
            raise BackendCrash(f"the backend's process {describe_exit(process.exitcode)}"
                               + (f"; stderr ends with: {tail}" if tail else "")) from None
        if reply[0] == "raised":
            raise RemoteError(reply[1], reply[2])
        if reply[0] == "crash":
            raise BackendCrash(reply[1])
        if reply[0] == "timeout":
            raise BackendTimeout(reply[1])
        return reply[1]
