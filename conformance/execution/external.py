"""External-command backends: `--backend cmd:"<command line>"` runs a program that is not Python.

Per call, the harness writes the operands to a fresh directory (`input.npy`, `depthwise_filter.npy`,
`pointwise_filter.npy`, `case.json`), runs the command with that directory appended as its last
argument, and reads `output.npy`. A backward call (`"mode": "backward"` in case.json, backward cases) adds
`output_gradient.npy` and reads `input_gradient.npy`, `depthwise_filter_gradient.npy` and
`pointwise_filter_gradient.npy`; a program without one exits 69 (EX_UNAVAILABLE), and one that answers
with `output.npy` alone (it does not know the mode) is taken as saying the same: the case is skipped.
Protocol version 2: exit code 0 is a result; exit code 65 (sysexits'
EX_DATAERR) is the program rejecting the input, the one reserved rejection signal; any other exit code is
an `error` (a bug, a failed parse: never a rejection); death by a signal is a crash; no exit within the
timeout is a timeout (the process group is killed). A failure to write the files or start the program is
a harness fault. The command line is split with shlex and run without a shell. bfloat16 tensors travel as
their uint16 bit patterns (`"storage": "bfloat16-as-uint16"` in case.json). docs/command-protocol.md is
the protocol's specification.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from conformance.execution.faults import (
    DEFAULT_TIMEOUT_S,
    BackendAborted,
    BackendCrash,
    BackendTimeout,
    BackwardUnsupported,
    HarnessFault,
    kill_group,
    signal_name,
    stderr_tail,
)
from conformance.files import BFLOAT16_STORAGE, from_npy, npy_storable

PROTOCOL_VERSION = 2
REJECT_EXIT_CODE = 65  # EX_DATAERR: "the input data was incorrect"; the only exit code that rejects
NO_BACKWARD_EXIT_CODE = 69  # EX_UNAVAILABLE: the program has no backward call (the case is skipped)
GRADIENT_FILES = ("input_gradient", "depthwise_filter_gradient", "pointwise_filter_gradient")
KEEP_DIRS_ENV = "SEPCONV_KEEP_CMD_DIRS"
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


class CommandRejected(RuntimeError):
    """The command exited with REJECT_EXIT_CODE: it rejected the input."""


class CommandFailed(BackendAborted):
    """The command exited with a non-zero code other than REJECT_EXIT_CODE: it failed, it did not judge."""

    def __init__(self, message: str):
        super().__init__("CommandFailed", message)


class CommandCrashed(BackendCrash):
    """The command was killed by a signal."""


class CommandTimeout(BackendTimeout, TimeoutError):
    """The command did not exit within the timeout; its process group was killed."""


class MissingOutputNpy:
    """What a call returns when the command exited 0 without writing output.npy: not an array, so the
    runner records `error` on a valid case and `fail` (accepted forbidden input) on an error case."""


class UnreadableOutputNpy:
    """What a call returns when output.npy exists but is not a readable .npy file (see MissingOutputNpy)."""


def _plain(value: Any) -> Any:
    """Nested lists of ints and strings, for JSON (a padding or strides may hold NumPy integers)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(item) for item in value]
    return int(value)


class ExternalCommand:
    """A callable with tf.nn.separable_conv2d's backend signature that runs an external program."""

    def __init__(self, argv: Sequence[str], timeout: float | None = DEFAULT_TIMEOUT_S, name: str | None = None):
        if not argv:
            raise ValueError("empty command")
        self.argv = list(argv)
        self.timeout = timeout
        self.name = name if name is not None else "cmd:" + " ".join(self.argv)
    accepts_case_id = True  # the runner passes case_id=..., written into case.json

    def __repr__(self) -> str:
        return f"ExternalCommand({self.argv!r}, timeout={self.timeout!r})"

    def __call__(self, input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Any, padding: Any,
                 data_format: str | None = None, dilations: Any = None, case_id: str | None = None) -> Any:
        tensors = {"input": input, "depthwise_filter": depthwise_filter, "pointwise_filter": pointwise_filter}
        return self._call(tensors, strides, padding, data_format, dilations, case_id)

    def backward(self, input: Any, depthwise_filter: Any, pointwise_filter: Any, output_gradient: Any, strides: Any,
                 padding: Any, data_format: str | None = None, dilations: Any = None,
                 case_id: str | None = None) -> Any:
        """The backward call: the three gradients (each as the forward call's output.npy is read)."""
        tensors = {"input": input, "depthwise_filter": depthwise_filter, "pointwise_filter": pointwise_filter,
                   "output_gradient": output_gradient}
        return self._call(tensors, strides, padding, data_format, dilations, case_id)

    def _call(self, tensors: dict[str, Any], strides: Any, padding: Any, data_format: str | None, dilations: Any,
              case_id: str | None) -> Any:
        try:
            directory = Path(tempfile.mkdtemp(prefix="sepconv-cmd-"))
        except OSError as error:
            raise HarnessFault("io", f"cannot create the call's directory: {error}") from None
        keep = os.environ.get(KEEP_DIRS_ENV) == "1"
        backward = "output_gradient" in tensors
        try:
            dtype = self._write(directory, case_id, tensors, strides, padding, data_format, dilations)
            return self._run(directory, keep, dtype, backward)
        finally:
            if not keep:
                shutil.rmtree(directory, ignore_errors=True)

    def _write(self, directory: Path, case_id: str | None, tensors: dict[str, Any], strides: Any, padding: Any,
               data_format: str | None, dilations: Any) -> np.dtype:
        """Write the call's files; a failure here (a full disk) is the harness's, never a rejection."""
        bfloat16 = False
        dtype = np.asarray(tensors["input"]).dtype
        try:
            for name, array in tensors.items():
                stored, as_bits = npy_storable(array)
                bfloat16 = bfloat16 or as_bits
                np.save(directory / f"{name}.npy", stored, allow_pickle=False)
            case = self._case_json(case_id, strides, padding, data_format, dilations, dtype, bfloat16)
            case["mode"] = "backward" if "output_gradient" in tensors else "forward"
            (directory / "case.json").write_text(json.dumps(case, indent=2) + "\n", encoding="utf-8")
        except OSError as error:
            raise HarnessFault("io", f"cannot write the call's files in {directory}: {error}") from None
        return dtype

    @staticmethod
    def _case_json(case_id: str | None, strides: Any, padding: Any, data_format: str | None, dilations: Any,
                   dtype: np.dtype, bfloat16: bool) -> dict[str, Any]:
        return {
            "format_version": PROTOCOL_VERSION,
            "case": case_id,
            "rejection_exit_code": REJECT_EXIT_CODE,
            "strides": _plain(strides),
            "padding": _plain(padding),
            "data_format": data_format or "NHWC",
            "dilations": _plain(dilations if dilations is not None else [1, 1]),
            "dtype": "bfloat16" if dtype == BFLOAT16 else dtype.name,
            "storage": BFLOAT16_STORAGE if bfloat16 else "native",
        }

    def _run(self, directory: Path, keep: bool, dtype: np.dtype, backward: bool = False) -> Any:
        where = f" (files kept in {directory})" if keep else ""
        stderr_path = directory / "stderr.txt"
        try:
            stdout, stderr = open(directory / "stdout.txt", "wb"), open(stderr_path, "wb")  # noqa: SIM115
            # No shell; a new session, so that a timeout kills the command's children too.
            process = subprocess.Popen([*self.argv, str(directory)], stdin=subprocess.DEVNULL, stdout=stdout,
                                       stderr=stderr, start_new_session=True)
        except OSError as error:
            raise HarnessFault("spawn", f"cannot start external command {self.argv[0]!r}: {error}") from None
        with stdout, stderr:
            try:
                returncode = process.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                raise CommandTimeout(f"external command {self.argv[0]!r} did not exit within {self.timeout:g} s; "
                                     f"it was killed{where}") from None
            finally:
                if process.poll() is None:  # timeout or interrupt: end the command and its children
                    kill_group(process.pid)
                    process.wait()
                else:  # helpers it forked and left behind must not outlive the call either
                    kill_group(process.pid)
        tail = stderr_tail(stderr_path)
        said = f"; stderr ends with: {tail}" if tail else "; stderr is empty"
        if returncode < 0:
            raise CommandCrashed(f"external command {self.argv[0]!r} crashed: killed by "
                                 f"{signal_name(-returncode)}{said}{where}")
        if backward and returncode == NO_BACKWARD_EXIT_CODE:
            raise BackwardUnsupported(f"the command has no backward call (it exited with {NO_BACKWARD_EXIT_CODE})")
        if returncode == REJECT_EXIT_CODE:
            raise CommandRejected(f"external command {self.argv[0]!r} rejected the input (exit code "
                                  f"{returncode}){said}{where}")
        if returncode != 0:
            raise CommandFailed(f"external command {self.argv[0]!r} exited with code {returncode}, which is not "
                                f"the rejection code {REJECT_EXIT_CODE}: a failure, not a rejection{said}{where}")
        if not backward:
            return self._read(directory / "output.npy", dtype)
        if not any((directory / f"{name}.npy").is_file() for name in GRADIENT_FILES) \
                and (directory / "output.npy").is_file():
            raise BackwardUnsupported("the command answered a backward call with output.npy: it does not read "
                                      "case.json's mode (no backward call)")
        return tuple(self._read(directory / f"{name}.npy", dtype) for name in GRADIENT_FILES)

    @staticmethod
    def _read(path: Path, dtype: np.dtype) -> Any:
        """One result file as an array, or what stands for a missing or unreadable one (never an array)."""
        if not path.is_file():
            return MissingOutputNpy()
        try:
            output = np.load(path, allow_pickle=False)
        except Exception:  # noqa: BLE001 - a corrupt file is the backend's wrong answer, not our crash
            return UnreadableOutputNpy()
        return from_npy(output, dtype == BFLOAT16)
