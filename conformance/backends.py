"""Resolve a --backend spec to a callable with tf.nn.separable_conv2d's signature.

Specs: a bundled name (`numpy`, `cupy`), `package.module:function`, `path/to/file.py:function`, or
`cmd:<command line>` (an external program, see conformance.external).
Bundled backends are imported lazily, so a machine without CuPy still runs everything else. A backend
that cannot be loaded is a BackendError with the reason (exit code 2), never a silently skipped run.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BackendFn = Callable[..., Any]
BUNDLED = {"numpy": "impls.numpy_backend:separable_conv2d", "cupy": "impls.cupy_backend:separable_conv2d"}


class BackendError(Exception):
    """A backend spec that cannot be resolved or cannot run here."""


@dataclass(frozen=True)
class Backend:
    name: str  # the spec as the user wrote it: the name in results and reproducer lines
    fn: BackendFn
    version: str | None = None


def _load_module(spec: str, module_part: str) -> Any:
    if module_part.endswith(".py"):
        path = Path(module_part)
        if not path.is_file():
            raise BackendError(f"backend {spec!r}: no such file {module_part}")
        module_name = f"_sepconv_backend_{path.stem}_{abs(hash(str(path.resolve())))}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise BackendError(f"backend {spec!r}: cannot import {module_part}")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        loader_spec.loader.exec_module(module)
        return module
    return importlib.import_module(module_part)


def _external_backend(spec: str) -> Backend:
    from conformance.external import ExternalCommand

    try:
        argv = shlex.split(spec[len("cmd:"):])
    except ValueError as error:  # unbalanced quotes
        raise BackendError(f"backend {spec!r}: cannot split the command line: {error}") from None
    if not argv:
        raise BackendError(f"backend {spec!r}: empty command (expected cmd:\"PROGRAM [ARGS...]\")")
    program = argv[0]
    if os.sep in program or (os.altsep and os.altsep in program):
        if not Path(program).is_file():
            raise BackendError(f"backend {spec!r}: no such file {program}")
        if not os.access(program, os.X_OK):
            raise BackendError(f"backend {spec!r}: {program} is not executable")
    elif shutil.which(program) is None:
        raise BackendError(f"backend {spec!r}: program {program!r} not found on PATH")
    return Backend(spec, ExternalCommand(argv, name=spec))


def resolve_backend(spec: str) -> Backend:
    """Import the backend named by `spec`; raises BackendError saying why it cannot run here."""
    if spec.startswith("cmd:"):
        return _external_backend(spec)
    target = BUNDLED.get(spec, spec)
    module_part, sep, attribute = target.rpartition(":")
    if not sep or not module_part or not attribute:
        raise BackendError(f"backend {spec!r}: expected one of {', '.join(BUNDLED)}, module:function or "
                           "path/to/file.py:function")
    try:
        module = _load_module(spec, module_part)
    except BackendError:
        raise
    except Exception as error:  # noqa: BLE001 - any import failure is the user's to read, not a traceback
        raise BackendError(f"backend {spec!r} cannot be imported: {type(error).__name__}: {error}") from None
    fn = getattr(module, attribute, None)
    if not callable(fn):
        raise BackendError(f"backend {spec!r}: {module_part} has no callable {attribute!r}")
    check = getattr(module, "unavailable_reason", None)
    reason = check() if callable(check) else None
    if reason:
        raise BackendError(f"backend {spec!r} cannot run here: {reason}")
    return Backend(spec, fn, getattr(module, "__version__", None))
