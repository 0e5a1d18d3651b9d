"""Run a backend in a child process, so that a crash, a hang or an exit is one case's result, not the end of the
run.

The child is forked from multiprocessing's fork server, a process started once per harness that has imported
nothing but this module and what it needs (NumPy): no state of the harness is inherited and TensorFlow is
never imported there, and a child starts in milliseconds, not the interpreter start-up and imports that spawn
costs (a crashing backend restarts its child once per crash); nor does it run the harness's main script again
(`_main_left_out`). The child takes the harness's environment (or the one given), working directory and
sys.path as they are at its start, as a spawned child would. It runs in a process group of its own (so that a
timeout kills whatever helpers it forked too). It imports the backend itself, answers with what the backend
declares (a handshake), then serves calls over a pipe. The harness never imports a Python backend when it
isolates: a backend that segfaults, exits or sets environment variables while being imported does so in its
child (`probe_backend`: exit code 2 with the reason). Replies say whose an exception was: the backend's own
code raising (a rejection), or the backend giving up (MemoryError, SystemExit, KeyboardInterrupt). If the
child dies, the call raises BackendCrash naming the process and how it ended, with the tail of its stderr; if
it does not answer in time, its process group is killed and the call raises BackendTimeout. Either way the
next call starts a fresh child.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing
import multiprocessing.forkserver
import os
import sys
import tempfile
import time
import types
import weakref
from collections.abc import Iterator, Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from conformance.execution.backends import Backend, BackendError, BackendListing, named_backends, resolve_backend
from conformance.execution.external import ExternalCommand
from conformance.execution.faults import (
    DEFAULT_TIMEOUT_S,
    BackendAborted,
    BackendCrash,
    BackendTimeout,
    HarnessFault,
    RemoteError,
    describe_exit,
    kill_group,
    stderr_tail,
)

BACKEND_ROLE = "the backend's process"
LOAD_TIMEOUT_S = 120.0  # the least time a backend's import and handshake get, whatever the per-call limit
POLL_S = 0.5  # how often a waiting harness checks that the child is still alive


def _reply_for(error: BaseException) -> tuple[Any, ...]:
    if isinstance(error, HarnessFault):  # e.g. a bug in a bundled runtime adapter: ours, never a rejection
        return ("fault", error.kind, str(error))
    if isinstance(error, (BackendCrash, BackendTimeout)):  # e.g. an external command that crashed in there
        return ("crash" if isinstance(error, BackendCrash) else "timeout", str(error))
    if isinstance(error, Exception) and not isinstance(error, MemoryError):
        return ("raised", type(error).__name__, str(error))  # the backend's own code rejected the input
    return ("aborted", type(error).__name__, str(error))  # MemoryError, SystemExit, KeyboardInterrupt, ...


@dataclasses.dataclass(frozen=True)
class _StartState:
    """What a spawned child would inherit from the harness at its start, and a forked one must be given."""

    environment: dict[str, str]
    cwd: str
    path: list[str]

    def apply(self) -> None:
        os.environ.clear()
        os.environ.update(self.environment)  # putenv too: C libraries and the backend's subprocesses see it
        with contextlib.suppress(OSError):  # a folder removed since: the server's, as a spawned child's would be
            os.chdir(self.cwd)
        sys.path[:] = self.path


def _serve(connection: Connection, spec: str, stderr_path: str, probe_only: bool, state: _StartState) -> None:
    """The child's loop: a handshake, then one call per message, until the parent closes the pipe."""
    os.setsid()  # a group of its own: a timeout kills what the backend forked too
    state.apply()
    descriptor = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(descriptor, 2)
    from conformance.judging.outputs import as_judged, as_judged_gradients

    try:
        backend = resolve_backend(spec)
    except BaseException as error:  # noqa: BLE001 - an import that fails or exits is reported, not fatal
        reason = str(error) if isinstance(error, BackendError) else f"{type(error).__name__}: {error}"
        connection.send(("unusable", reason))
        return
    connection.send(("ready", declarations(backend)))
    if probe_only:
        return
    while True:
        try:
            entry, args, kwargs = connection.recv()  # entry: "forward" or "backward"
        except EOFError:  # the harness is gone (a killed run): nobody will read or remove the file
            Path(stderr_path).unlink(missing_ok=True)
            return
        try:
            if entry == "backward":
                if backend.backprop is None:  # the handshake said otherwise: an error, never a rejection
                    reply: tuple[Any, ...] = ("aborted", "HarnessFault", "no backward pass in the backend's process")
                else:
                    reply = ("ok", as_judged_gradients(backend.backprop(*args, **kwargs)))
            else:
                reply = ("ok", as_judged(backend.fn(*args, **kwargs)))
        except BaseException as error:  # noqa: BLE001 - everything the backend raises goes back to the harness
            reply = _reply_for(error)
        try:
            connection.send(reply)
        except (BrokenPipeError, ConnectionResetError):  # the harness is gone, as above
            Path(stderr_path).unlink(missing_ok=True)
            return
        except Exception:  # noqa: BLE001 - an unpicklable return value
            connection.send(("ok", f"<unpicklable {type(reply[1]).__name__}>"))


@contextlib.contextmanager
def _main_left_out() -> Iterator[None]:
    """multiprocessing makes each child run the harness's main script again (as __mp_main__, so that what
    it defines can be unpickled there): under the console script that re-imports the CLI, under pytest
    pytest, 0.1-0.2 s a child. A child here is handed only this module's `_serve` and plain data, so the
    start goes out with a stand-in main that names no script (for the start only; the harness starts its
    children from one thread)."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


@functools.cache
def _context() -> Any:  # a ForkServerContext, or a SpawnContext
    """The fork server where the platform has one (Linux, macOS) and it starts, preloading this module (the
    server imports it, and NumPy, once); else spawn."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        try:
            multiprocessing.forkserver.ensure_running()
            return context
        except OSError:  # e.g. a TMPDIR too long for the server's socket path: spawn works wherever it runs
            pass
    return multiprocessing.get_context("spawn")


class IsolatedBackend:
    """A callable with the backend signature that runs `spec` in a child process.

    timeout: seconds per call (None: none; the harness's commands pass DEFAULT_TIMEOUT_S at least);
        loading the backend (the import and the handshake) may take max(timeout, LOAD_TIMEOUT_S): an import is
        not a case, and a short per-case limit on a busy machine must not turn a slow import into a fault;
    role: how messages name the process ("the backend's process", "TensorFlow's reference process");
    environment: the child's whole environment (None: the harness's at the time of the start, as for cwd
        and sys.path).
    """

    def __init__(self, spec: str, timeout: float | None = DEFAULT_TIMEOUT_S, role: str = BACKEND_ROLE,
                 environment: Mapping[str, str] | None = None):
        self.spec = spec
        self.timeout = timeout
        self.role = role
        self.environment = dict(environment) if environment is not None else None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: Connection | None = None
        self._stderr = Path(tempfile.gettempdir()) / f"sepconv-backend-{os.getpid()}-{id(self)}.stderr"
        # close() removes the child's stderr file; this removes it for an object never closed, at exit.
        weakref.finalize(self, self._stderr.unlink, missing_ok=True)

    def start(self, probe_only: bool = False) -> dict[str, Any]:
        """Start the child and wait for its handshake; returns what the backend declares. Raises
        BackendError when the backend cannot be loaded there, BackendCrash/BackendTimeout when the child
        dies or hangs while loading it."""
        self.launch(probe_only)
        return self.handshake()

    def launch(self, probe_only: bool = False) -> None:
        """Start the child, not waiting for it (handshake() does): several can load at once."""
        self.close()
        context = _context()
        parent, child = context.Pipe()
        state = _StartState(self.environment if self.environment is not None else dict(os.environ), os.getcwd(),
                            list(sys.path))
        self._process = context.Process(target=_serve, args=(child, self.spec, str(self._stderr), probe_only, state),
                                        daemon=True)
        with _main_left_out():
            self._process.start()
        child.close()
        self._connection = parent

    def handshake(self) -> dict[str, Any]:
        """What the launched child's backend declares, as start() returns it and raising as it does."""
        reply = self._receive("while loading the backend",
                              None if self.timeout is None else max(self.timeout, LOAD_TIMEOUT_S))
        if reply[0] == "unusable":
            self.close()
            raise BackendError(reply[1])
        return dict(reply[1])

    def close(self) -> None:
        """Stop the child (and its group) and remove its stderr file; a later call starts a fresh child."""
        if self._process is not None:
            if self._process.pid is not None:
                kill_group(self._process.pid)
            self._process.join(5)
        if self._connection is not None:
            self._connection.close()
        self._process = self._connection = None
        self._stderr.unlink(missing_ok=True)

    def _died(self, when: str) -> BackendCrash:
        process = self._process
        assert process is not None
        process.join(5)
        tail = stderr_tail(self._stderr)
        self.close()
        return BackendCrash(f"{self.role} {describe_exit(process.exitcode)} {when}"
                            + (f"; stderr ends with: {tail}" if tail else ""))

    def _receive(self, when: str, limit: float | None) -> tuple[Any, ...]:
        """The child's next message, waiting at most `limit` seconds (None: no limit), noticing a death even
        where a helper the backend forked keeps the pipe open."""
        assert self._connection is not None and self._process is not None
        deadline = None if limit is None else time.monotonic() + limit
        while not self._connection.poll(POLL_S if deadline is None
                                        else max(0.0, min(POLL_S, deadline - time.monotonic()))):
            if not self._process.is_alive() and not self._connection.poll(0):
                raise self._died(when)
            if deadline is not None and time.monotonic() >= deadline:
                self.close()
                raise BackendTimeout(f"{self.role} gave no answer within {limit:g} s {when}; "
                                     "it was killed with its process group")
        try:
            return self._connection.recv()
        except (EOFError, ConnectionResetError, OSError):
            raise self._died(when) from None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The forward function, called in the child."""
        return self._request("forward", args, kwargs)

    def backward(self, *args: Any, **kwargs: Any) -> Any:
        """The backward pass (Backend.backprop), called in the child."""
        return self._request("backward", args, kwargs)

    def _request(self, entry: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._process is None or not self._process.is_alive():
            self.start()
        assert self._connection is not None
        try:
            self._connection.send((entry, args, kwargs))
        except (BrokenPipeError, ConnectionResetError, EOFError) as error:
            assert self._process is not None
            self._process.join(1)
            if not self._process.is_alive():
                raise self._died("while receiving the case") from None
            self.close()
            raise HarnessFault("pipe", f"cannot send the case to {self.role}: {error}") from None
        except Exception as error:  # noqa: BLE001 - e.g. pickling failed: ours, not the backend's
            self.close()
            raise HarnessFault("pipe", f"cannot send the case to {self.role}: {type(error).__name__}: {error}") \
                from None
        reply = self._receive("during the call", self.timeout)
        if reply[0] == "raised":
            raise RemoteError(reply[1], reply[2])
        if reply[0] == "fault":
            raise HarnessFault(reply[1], reply[2].removeprefix(f"harness fault ({reply[1]}): "))
        if reply[0] == "aborted":
            raise BackendAborted(reply[1], reply[2])
        if reply[0] == "crash":
            raise BackendCrash(reply[1])
        if reply[0] == "timeout":
            raise BackendTimeout(reply[1])
        return reply[1]


def probe_backend(spec: str, timeout: float | None = DEFAULT_TIMEOUT_S,
                  declared: dict[str, Any] | None = None, keep: bool = True) -> Backend:
    """Load a Python backend in a child process and return it as a Backend whose calls run in a child
    process of their own. Raises BackendError (exit code 2) when it cannot be loaded, or when importing it
    crashes, exits or hangs: the harness itself never imports it. The probing child goes on to serve the
    calls (one start, not two); keep=False stops it once it has answered. `declared`: what an earlier probe
    of the same spec found (`Backend.declared`), so a pytest-xdist worker need not load it once more; its
    child then starts at the first call."""
    child = IsolatedBackend(spec, timeout)
    if declared is None:
        try:
            declared = child.start(probe_only=not keep)
        except (BackendCrash, BackendTimeout) as error:
            raise BackendError(f"backend {spec!r} cannot be loaded: {error}") from None
        finally:
            if not keep:
                child.close()
    return Backend(spec, child, declared["version"], declared["support"], declared["expectations"],
                   declared["fingerprint"], child.backward if declared["backprop"] else None)


def list_backends() -> list[BackendListing]:
    """Every named backend (backends.named_backends), each loaded in a child process of its own, all at
    once: the harness imports none of them (one that crashes while imported is listed with how it ended),
    and the runtimes' own start-up logs stay in the children."""
    named = named_backends()
    children = [IsolatedBackend(name) for name, _, _ in named]
    for child in children:
        child.launch(probe_only=True)
    listing = []
    for (name, source, target), child in zip(named, children):
        try:
            declared = child.handshake()
        except (BackendError, BackendCrash, BackendTimeout) as error:
            listing.append(BackendListing(name, source, target, None, str(error), None))
        else:
            listing.append(BackendListing(name, source, target, declared["version"], None, declared["support"]))
        finally:
            child.close()
    return listing


def declarations(backend: Backend) -> dict[str, Any]:
    """What a probe found about a backend: the `declared` that probe_backend takes."""
    return {"version": backend.version, "support": backend.support, "expectations": backend.expectations,
            "fingerprint": backend.fingerprint, "backprop": backend.backprop is not None}


def load_backend(spec: str, timeout: float = DEFAULT_TIMEOUT_S, isolate: bool = True,
                 declared: dict[str, Any] | None = None) -> Backend:
    """A backend ready to run cases, the one way every command gets one. A `cmd:` program runs with
    `timeout`. A Python backend is first loaded in a child process (probe_backend: a crash or an exit while
    importing it is a BackendError, never the harness's death); isolated, each call then runs in a child
    process too and it is never imported here; with isolate=False it is imported here after its probe."""
    if spec.startswith("cmd:"):
        backend = resolve_backend(spec)
        assert isinstance(backend.fn, ExternalCommand)
        command = ExternalCommand(backend.fn.argv, timeout, spec)
        return dataclasses.replace(backend, fn=command, backprop=command.backward)
    probed = probe_backend(spec, timeout, declared, keep=isolate)
    return probed if isolate else resolve_backend(spec)
