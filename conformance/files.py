"""Writing the harness's files: whole or not at all, and as JSON that every parser reads."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    """JSON has no NaN or Infinity: such floats are written as the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_line(value: Any) -> str:
    """One line of JSON (for a journal), non-finite floats as strings."""
    return json.dumps(json_safe(value), allow_nan=False, default=str) + "\n"


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write a file whole or not at all: a unique temporary name beside it (concurrent writers never share
    one), flushed to disk, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
