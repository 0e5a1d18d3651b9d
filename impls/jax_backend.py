"""JAX/XLA as a backend: `jax[:PLATFORM][,precision=default]`, e.g. `jax`, `jax:gpu`, `jax:tpu`, or the
platform name of a PJRT plugin. Needs `pip install -e ".[jax]"` (the CPU build; a plugin brings its own).

Forward: lax.conv_general_dilated twice (conformance.impls.runtime_adapter has the mapping), in the
data's own layout (NHWC or NCHW as dimension numbers, no transpose), the grouped filter as HWIO
[kh, kw, 1, C*M], jit-compiled per shape and dtype (jax.jit's cache), on the named platform's first
device. Backward: jax.vjp of the same function, the three gradients TensorFlow's GradientTape gives.
Precision: `accurate` passes lax.Precision.HIGHEST (no TF32 or bfloat16 passes on GPUs and TPUs);
`default` passes none (XLA's DEFAULT: one bfloat16 pass on TPUs, TF32 on Ampere and later GPUs).
float64 needs jax_enable_x64, which this module turns on: it runs in the backend's own process.

Speed: XLA compiles each shape once (0.1 s for float32, 0.3 s for float16, bfloat16 and float64 on the CPU),
and nearly every case of the bank has a shape of its own, so a cold run of the bank takes about 2.8 times the
NumPy backend's time. Compiled programs go to JAX's persistent cache ($JAX_COMPILATION_CACHE_DIR, else
~/.cache/sepconv-conformance/jax): a second run takes 1.2 times NumPy's (docs/runtimes.md). The cache holds
XLA's own output for this jax version and platform; it changes no arithmetic.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from conformance.impls.runtime_adapter import AdapterRejection, Geometry, checked, describe, read_arguments

DEFAULT_DEVICE = "cpu"


def unavailable_reason(device: str | None = None) -> str | None:
    if importlib.util.find_spec("jax") is None:
        return "jax is not installed: pip install 'sepconv-conformance[jax]' (or a jax build with your PJRT plugin)"
    import jax

    platform = device or DEFAULT_DEVICE
    try:
        jax.devices(platform)
    except RuntimeError as error:
        return f"JAX has no {platform} platform here ({' '.join(str(error).split())[:300]})"
    return None


def _forward(geometry: Geometry, precision: Any) -> Any:
    """The forward function (not compiled) for one geometry."""
    from jax import lax

    top, bottom, left, right = geometry.pads
    numbers = (geometry.layout, "HWIO", geometry.layout)

    def forward(x: Any, dw: Any, pw: Any) -> Any:
        kh, kw, c, m = dw.shape
        y = lax.conv_general_dilated(x, dw.reshape(kh, kw, 1, c * m), geometry.strides, [(top, bottom), (left, right)],
                                     rhs_dilation=geometry.rates, dimension_numbers=numbers,
                                     feature_group_count=geometry.channels, precision=precision)
        return lax.conv_general_dilated(y, pw, (1, 1), "VALID", dimension_numbers=numbers, precision=precision)

    return forward


def runtime_backend(device: str | None, precision: str) -> Any:
    """The backend function (forward, with `backprop`) for one platform and precision mode."""
    import jax
    from jax import lax

    jax.config.update("jax_enable_x64", True)
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sepconv-conformance" / "jax"
        jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # every shape's program is worth keeping
    platform = device or DEFAULT_DEVICE
    target = jax.devices(platform)[0]
    chosen = lax.Precision.HIGHEST if precision == "accurate" else None
    # One compiled function per geometry and pass (jax.jit's own cache then keys on the filters' shapes):
    # the backward pass is jitted whole, so its transposed convolutions compile once, not op by op.
    compiled: dict[tuple[Any, ...], Any] = {}

    def prepared(args: tuple[Any, ...], backward: bool) -> tuple[Geometry, Any, list[Any]]:
        x, dw, pw = (np.asarray(a) for a in args[:3])
        geometry = read_arguments(x, dw, pw, *args[3:])
        if geometry.dtype not in ("float16", "bfloat16", "float32", "float64"):
            raise AdapterRejection(f"dtype {geometry.dtype} has no XLA convolution")
        key = (backward, *geometry.key)
        if key not in compiled:
            forward = _forward(geometry, chosen)
            compiled[key] = jax.jit(lambda x, dw, pw, g: jax.vjp(forward, x, dw, pw)[1](g)) if backward \
                else jax.jit(forward)
        return geometry, compiled[key], [jax.device_put(a, target) for a in (x, dw, pw)]

    def separable_conv2d(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
                         padding: Any, data_format: str | None = None,
                         dilations: Sequence[int] | None = None) -> np.ndarray:
        geometry, forward, tensors = prepared((input, depthwise_filter, pointwise_filter, strides, padding,
                                               data_format, dilations), backward=False)
        return checked(geometry, f"JAX ({platform})", lambda: np.asarray(forward(*tensors)))

    def backprop(input: Any, depthwise_filter: Any, pointwise_filter: Any, output_gradient: Any,
                 strides: Sequence[int], padding: Any, data_format: str | None = None,
                 dilations: Sequence[int] | None = None) -> tuple[np.ndarray, ...]:
        geometry, gradients, tensors = prepared((input, depthwise_filter, pointwise_filter, strides, padding,
                                                 data_format, dilations), backward=True)

        def run() -> Any:
            cotangent = jax.device_put(np.asarray(output_gradient, dtype=tensors[0].dtype), target)
            return tuple(np.asarray(g) for g in gradients(*tensors, cotangent))

        return checked(geometry, f"JAX ({platform})", run)

    separable_conv2d.backprop = backprop  # type: ignore[attr-defined]
    separable_conv2d.__version__ = describe("jax", jax.__version__, f"{platform} ({target.device_kind})",  # type: ignore[attr-defined]
                                            precision)
    return separable_conv2d
