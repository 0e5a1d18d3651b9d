"""The run's journal, DIR/results.jsonl: every result appended and flushed as it arrives, so that a killed
run keeps what it computed, and `--resume` runs only what is missing.

Append-only: saved data is never truncated. A resumed journal is rewritten into a new file (its header
and every valid record, duplicates dropped) that is renamed into place, and appended to after that: a
kill at any moment leaves either the old journal or the new one, whole. The first line is a header that
says what produced the records (bank digest, reference, backends and their fingerprints, tool version,
options); `--resume` refuses a journal whose header differs from the run's (exit 2), because results of
another backend or reference must never be merged into this run's verdict. A lock file keeps a second
run out of a folder in use.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from conformance.files import atomic_write, json_line
from conformance.result import RecordError, Result

JOURNAL = "results.jsonl"
JOURNAL_FORMAT = 1
LOCK = ".sepconv.lock"


class JournalError(Exception):
    """A journal or report folder that cannot be used as asked: the message names the file and line."""


def read_journal(path: Path) -> tuple[dict[str, Any] | None, list[Result]]:
    """The header and the results of a journal, duplicates dropped (the first of a case x backend wins).
    A last line without its newline (cut short by a kill) is ignored: that case runs again. Anything else
    that is not a record is a JournalError naming the line. A missing file is (None, [])."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, []
    except OSError as error:
        raise JournalError(f"{path}: cannot read the journal: {error}") from None
    # After the last newline: nothing, or a line a kill cut short (ignored: that case runs again).
    lines = data.split(b"\n")[:-1]
    header: dict[str, Any] | None = None
    results: dict[tuple[str, str], Result] = {}
    for number, raw in enumerate(lines, 1):
        try:
            record = json.loads(raw.decode("utf-8"))
            if number == 1:
                header = _header(record)
                continue
            result = Result.from_dict(record)
        except (UnicodeDecodeError, ValueError) as error:  # RecordError and JSON errors are ValueErrors
            raise JournalError(f"{path}:{number}: not a journal record: {str(error)[:200]}") from None
        results.setdefault((result.case, result.backend), result)
    if header is None and results:
        raise JournalError(f"{path}:1: no journal header")
    return header, list(results.values())


def _header(record: Any) -> dict[str, Any]:
    if not (isinstance(record, dict) and record.get("journal") == JOURNAL_FORMAT
            and isinstance(record.get("header"), dict)):
        raise RecordError(f"expected the journal header {{\"journal\": {JOURNAL_FORMAT}, \"header\": {{...}}}}")
    return record["header"]


def header_mismatch(saved: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """Why a saved journal's results cannot be resumed into this run, or None when they can."""
    if saved is None:
        return None
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            return (f"the journal was written by a run with another {key} ({str(saved.get(key))[:120]!r}; this "
                    f"run: {str(current.get(key))[:120]!r})")
    return None


class Journal:
    """The journal of this run: `start` writes a new one (the header and the results kept from a resumed
    journal) and renames it into place; `append` adds one result, flushed."""

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path = path
        self.header = header
        self._handle: IO[str] | None = None

    def start(self, kept: Sequence[Result]) -> None:
        lines = [json_line({"journal": JOURNAL_FORMAT, "header": self.header})]
        lines += [json_line(result.to_dict()) for result in kept]
        atomic_write(self.path, "".join(lines))
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held for the run

    @property
    def started(self) -> bool:
        return self._handle is not None

    def append(self, result: Result) -> None:
        assert self._handle is not None
        self._handle.write(json_line(result.to_dict()))
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


class FolderLock:
    """An exclusive lock on a report folder for the time of a run (flock: released by the kernel when the
    process dies, so a killed run never leaves the folder locked)."""

    def __init__(self, folder: Path):
        self.path = folder / LOCK
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip()[:40]
            handle.close()
            raise JournalError(f"{self.path.parent} is in use by another run (pid {holder or 'unknown'}); "
                               "use another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
