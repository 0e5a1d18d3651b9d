"""Writing the harness's files: whole or not at all, as JSON that every parser reads, and as .npy arrays
that programs other than NumPy read."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np


def json_safe(value: Any) -> Any:
    """JSON has no NaN or Infinity: such floats are written as the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_text(value: Any, **options: Any) -> str:
    """json.dumps(json_safe(value), allow_nan=False, default=str, **options), walking the value only where it
    holds a non-finite float: the C encoder refuses those, and a clean value (most are, and a failure's
    error maps are large) is encoded by it alone."""
    try:
        return json.dumps(value, allow_nan=False, default=str, **options)
    except ValueError:
        return json.dumps(json_safe(value), allow_nan=False, default=str, **options)


def json_line(value: Any) -> str:
    """One line of JSON (for a journal), non-finite floats as strings."""
    return json_text(value) + "\n"


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


# bfloat16 has no .npy type of its own (NumPy writes ml_dtypes' bfloat16 as a 2-byte void): files that other
# programs read (cmd: backends' case folders, vector packs) hold its uint16 bit patterns, and say so.
BFLOAT16_STORAGE = "bfloat16-as-uint16"


def npy_storable(array: Any) -> tuple[np.ndarray, bool]:
    """An array as it goes into a .npy file for another program: C-ordered, little-endian, bfloat16 as its
    uint16 bit patterns; True when it was bfloat16."""
    array = np.asarray(array)
    if array.dtype == ml_dtypes.bfloat16:
        return np.ascontiguousarray(array).view(np.uint16).astype("<u2"), True
    if array.dtype.kind in "fiub" and array.dtype.itemsize > 1:
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(array), False


def from_npy(array: np.ndarray, bfloat16: bool) -> np.ndarray:
    """A .npy array another program wrote, in native byte order; for a bfloat16 tensor, uint16 bits (or
    NumPy's 2-byte void) reinterpreted as bfloat16."""
    if bfloat16 and array.dtype.kind in "uV" and array.dtype.itemsize == 2:
        return np.ascontiguousarray(array).view("<u2").astype(np.uint16).view(ml_dtypes.bfloat16)
    if array.dtype.kind in "fiuc":
        array = array.astype(array.dtype.newbyteorder("="), copy=False)
    return array

