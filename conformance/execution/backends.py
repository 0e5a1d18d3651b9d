"""Resolve a --backend spec to a callable with tf.nn.separable_conv2d's signature.

Specs: a bundled name (`numpy`, `cupy`), a runtime with its device and precision mode
(`NAME[:DEVICE][,precision=accurate|default]`, NAME one of RUNTIMES: `onnxruntime:CUDAExecutionProvider`,
`openvino:GPU`, `jax:gpu`, `torch:cuda`, `tensorflow:/GPU:0`), the name of a backend an installed package
registers in the entry-point group `sepconv_conformance.backends`, `package.module:function`,
`path/to/file.py:function`, or `cmd:<command line>` (an external program, see
conformance.execution.external). Bundled and runtime names win over entry-point and module names.
Bundled backends are imported lazily, so a machine without CuPy still runs everything else. A backend
that cannot be loaded is a BackendError with the reason (exit code 2), never a silently skipped run.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

from conformance.execution.support import Support, SupportError
from conformance.impls.runtime_adapter import PRECISIONS

BackendFn = Callable[..., Any]
BUNDLED = {"numpy": "conformance.impls.numpy_backend:separable_conv2d",
           "cupy": "conformance.impls.cupy_backend:separable_conv2d",
           "tensorflow": "conformance.impls.tensorflow_backend:separable_conv2d"}
# Runtimes: name -> (adapter module, its default device). The module has unavailable_reason(device) and
# runtime_backend(device, precision) (conformance.impls.runtime_adapter has what they share).
RUNTIMES = {"onnxruntime": ("conformance.impls.onnxruntime_backend", "CPUExecutionProvider"),
            "openvino": ("conformance.impls.openvino_backend", "CPU"),
            "jax": ("conformance.impls.jax_backend", "cpu"),
            "torch": ("conformance.impls.torch_backend", "cpu"),
            "tensorflow": ("conformance.impls.tensorflow_backend", "/CPU:0")}
RUNTIME_SPEC = "NAME[:DEVICE][,precision=accurate|default]"
ENTRY_POINT_GROUP = "sepconv_conformance.backends"
BACKPROP_ATTRIBUTE = "separable_conv2d_backprop"  # the backward pass, next to the forward function


class BackendError(Exception):
    """A backend spec that cannot be resolved or cannot run here."""


@dataclass(frozen=True)
class Backend:
    name: str  # the spec as the user wrote it: the name in results and reproducer lines
    fn: BackendFn
    version: str | None = None
    support: Support | None = None  # what it declares it supports; None: everything
    expectations: str | None = None  # the expectations file it ships (module attribute EXPECTATIONS)
    fingerprint: str | None = None  # sha256 of its module's or program's file: a resumed run must match it
    # The backward pass (backward cases), with fn's conventions and an output gradient after the filters:
    # fn.backprop, else its module's separable_conv2d_backprop; None: backward cases are skipped.
    backprop: BackendFn | None = None


def file_fingerprint(path: str | os.PathLike[str] | None) -> str | None:
    """sha256 of a file's bytes, or None where there is no file to read (a builtin, a namespace)."""
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def entry_points() -> dict[str, EntryPoint]:
    """Backends registered by installed packages, by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


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
    from conformance.execution.external import ExternalCommand

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
    command = ExternalCommand(argv, name=spec)
    return Backend(spec, command, fingerprint=file_fingerprint(shutil.which(program)), backprop=command.backward)


def _target(spec: str) -> tuple[str, str | None]:
    """`module:function` for a spec, and the version of the package that registered it (entry points)."""
    if spec in BUNDLED:
        return BUNDLED[spec], None
    if ":" not in spec and (entry_point := entry_points().get(spec)) is not None:
        return entry_point.value, entry_point.dist.version if entry_point.dist else None
    return spec, None


def _declared_support(spec: str, fn: BackendFn, module: Any) -> Support | None:
    declared = getattr(fn, "supports", None)
    if declared is None:
        declared = getattr(module, "SUPPORTS", None)
    if declared is None:
        return None
    try:
        return Support.from_mapping(declared)
    except SupportError as error:
        raise BackendError(f"backend {spec!r}: its support declaration is invalid: {error}") from None


def _shipped_expectations(spec: str, module: Any) -> str | None:
    """The expectations file a backend ships: its module's EXPECTATIONS (a path, relative to the module),
    or impls/expectations/NAME.yaml for a bundled one."""
    shipped = getattr(module, "EXPECTATIONS", None)
    if shipped is None:
        bundled = Path(__file__).resolve().parent.parent / "impls" / "expectations" / f"{spec}.yaml"
        return str(bundled) if spec in BUNDLED and bundled.is_file() else None
    if not isinstance(shipped, (str, os.PathLike)):
        raise BackendError(f"backend {spec!r}: EXPECTATIONS must be a path, got {shipped!r}")
    path = Path(shipped)
    if not path.is_absolute() and getattr(module, "__file__", None):
        path = Path(module.__file__).parent / path
    if not path.is_file():
        raise BackendError(f"backend {spec!r}: its EXPECTATIONS file {path} does not exist")
    return str(path)


@dataclass(frozen=True)
class RuntimeSpec:
    runtime: str  # a key of RUNTIMES
    device: str
    precision: str  # one of PRECISIONS


def runtime_spec(spec: str) -> RuntimeSpec | None:
    """The runtime, device and precision a spec names; None where it names no runtime (`tensorflow` alone is
    the bundled control, TensorFlow on the CPU with its own expectations). Raises BackendError for a bad
    option."""
    head, _, options = spec.partition(",")
    name, has_device, device = head.partition(":")
    if name not in RUNTIMES or spec == "tensorflow":
        return None
    if has_device and not device:
        raise BackendError(f"backend {spec!r}: empty device after {name}: (expected {RUNTIME_SPEC})")
    precision = "accurate"
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key != "precision" or value not in PRECISIONS:
            raise BackendError(f"backend {spec!r}: unknown option {option!r}; the one option is "
                               "precision=accurate (the default) or precision=default (the runtime as it comes)")
        precision = value
    return RuntimeSpec(name, device or RUNTIMES[name][1], precision)


def _runtime_backend(spec: str, runtime: RuntimeSpec) -> Backend:
    module = importlib.import_module(RUNTIMES[runtime.runtime][0])
    if reason := module.unavailable_reason(runtime.device):
        raise BackendError(f"backend {spec!r} cannot run here: {reason}")
    try:
        fn = module.runtime_backend(runtime.device, runtime.precision)
    except Exception as error:  # noqa: BLE001 - a runtime that fails to start is the user's to read
        raise BackendError(f"backend {spec!r} cannot start: {type(error).__name__}: {error}") from None
    # Shipped expectations are measured on the default device in the accurate mode: impls/expectations/NAME.yaml.
    shipped = Path(__file__).resolve().parent.parent / "impls" / "expectations" / f"{runtime.runtime}.yaml"
    default = (runtime.device, runtime.precision) == (RUNTIMES[runtime.runtime][1], "accurate")
    backprop = getattr(fn, "backprop", None)
    return Backend(spec, fn, fn.__version__, _declared_support(spec, fn, module),
                   str(shipped) if default and shipped.is_file() else None,
                   file_fingerprint(getattr(module, "__file__", None)), backprop)


def resolve_backend(spec: str) -> Backend:
    """Import the backend named by `spec`; raises BackendError saying why it cannot run here."""
    if spec.startswith("cmd:"):
        return _external_backend(spec)
    if (runtime := runtime_spec(spec)) is not None:
        return _runtime_backend(spec, runtime)
    target, package_version = _target(spec)
    module_part, sep, attribute = target.rpartition(":")
    if not sep or not module_part or not attribute:
        known = ", ".join([*BUNDLED, *entry_points()])
        raise BackendError(f"backend {spec!r}: not a known name ({known}), nor module:function, "
                           "path/to/file.py:function or cmd:PROGRAM")
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
    version = getattr(fn, "__version__", None) or getattr(module, "__version__", None) or package_version
    backprop = getattr(fn, "backprop", None) or getattr(module, BACKPROP_ATTRIBUTE, None)
    return Backend(spec, fn, version, _declared_support(spec, fn, module), _shipped_expectations(spec, module),
                   file_fingerprint(getattr(module, "__file__", None)), backprop if callable(backprop) else None)


@dataclass(frozen=True)
class BackendListing:
    name: str
    source: str  # bundled, or the package that registers it
    target: str  # module:function
    version: str | None
    problem: str | None  # why it cannot run here; None: it can
    support: Support | None


def named_backends() -> list[tuple[str, str, str]]:
    """(name, source, module:function) of every named backend: bundled ones, the runtimes, and those
    installed packages register (conformance.execution.isolation.list_backends tries each)."""
    named = [(name, "bundled", target) for name, target in BUNDLED.items()]
    named += [(name, f"runtime, {name}:DEVICE (default {device})", f"{module}:runtime_backend")
              for name, (module, device) in RUNTIMES.items() if name not in BUNDLED]
    named += [(name, f"package {ep.dist.name if ep.dist else '?'}", ep.value)
              for name, ep in sorted(entry_points().items()) if name not in BUNDLED and name not in RUNTIMES]
    return named
