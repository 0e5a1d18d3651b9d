"""ONNX Runtime as a backend: `onnxruntime[:PROVIDER][,precision=default]`, e.g. `onnxruntime`,
`onnxruntime:CUDAExecutionProvider`. Needs `pip install -e ".[onnxruntime]"` (onnxruntime and onnx).

The graph, built per shape and dtype and kept with its session (conformance.impls.runtime_adapter has the
mapping): [Transpose NHWC->NCHW] -> Conv(group=C, explicit pads) -> Conv(1x1) -> [Transpose back], opset 21.
Precision: `accurate` turns TF32 off on the CUDA and TensorRT providers (use_tf32=0, trt_fp16_enable=0) and
ORT's fp16 fast-math off; `default` takes the provider's defaults. On the CPU provider both are the same
arithmetic (float32 MLAS kernels), and the record says which mode ran.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from conformance.impls.runtime_adapter import (
    AdapterRejection,
    Geometry,
    checked,
    describe,
    grouped_filter,
    pointwise_oihw,
    read_arguments,
)

DEFAULT_DEVICE = "CPUExecutionProvider"
OPSET = 21
_ACCURATE_OPTIONS = {"CUDAExecutionProvider": {"use_tf32": "0"},
                     "TensorrtExecutionProvider": {"trt_fp16_enable": "False", "trt_bf16_enable": "False"}}
# What each provider's Conv kernels take, as measured with ONNX Runtime 1.32 (the CPU provider registers Conv
# for float32 and float16 only: float64 and bfloat16 fail with NOT_IMPLEMENTED). Other providers are asked
# for everything, and what they refuse is recorded as raised on valid input.
_SUPPORTS = {"CPUExecutionProvider": {
    "dtypes": ["float16", "float32"], "modes": ["forward"],
    "reasons": {"dtypes": "ONNX Runtime's CPU provider has no float64 or bfloat16 Conv kernel (NOT_IMPLEMENTED)",
                "modes": "the adapter runs the forward graph only (ONNX Runtime's training API is not bundled)"}}}
_GENERIC_SUPPORT = {"modes": ["forward"],
                    "reasons": {"modes": "the adapter runs the forward graph only (ONNX Runtime's training API "
                                         "is not bundled)"}}


def unavailable_reason(device: str | None = None) -> str | None:
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return "onnxruntime and onnx are not installed: pip install 'sepconv-conformance[onnxruntime]'"
    import onnxruntime

    provider = device or DEFAULT_DEVICE
    available = onnxruntime.get_available_providers()
    if provider not in available:
        return f"execution provider {provider} is not available here (available: {', '.join(available)})"
    return None


def _model(geometry: Geometry, grouped_shape: tuple[int, ...], pointwise_shape: tuple[int, ...]) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    element = {"float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16, "float32": TensorProto.FLOAT,
               "float64": TensorProto.DOUBLE}[geometry.dtype]
    top, bottom, left, right = geometry.pads
    nhwc = geometry.layout == "NHWC"
    nodes = [helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2])] if nhwc else []
    nodes += [
        helper.make_node("Conv", ["x_nchw" if nhwc else "x", "depthwise"], ["y"], group=geometry.channels,
                         kernel_shape=list(grouped_shape[2:]), strides=list(geometry.strides),
                         dilations=list(geometry.rates), pads=[top, left, bottom, right]),
        helper.make_node("Conv", ["y", "pointwise"], ["z_nchw" if nhwc else "z"], kernel_shape=[1, 1]),
    ]
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["z_nchw"], ["z"], perm=[0, 2, 3, 1]))
    graph = helper.make_graph(
        nodes, "separable_conv2d",
        [helper.make_tensor_value_info("x", element, list(geometry.input_shape)),
         helper.make_tensor_value_info("depthwise", element, list(grouped_shape)),
         helper.make_tensor_value_info("pointwise", element, list(pointwise_shape))],
        [helper.make_tensor_value_info("z", element, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = min(model.ir_version, 10)  # what ONNX Runtime 1.17 and later read
    return onnx.shape_inference.infer_shapes(model).SerializeToString()


def runtime_backend(device: str | None, precision: str) -> Any:
    """The backend function for one provider and precision mode."""
    import onnxruntime

    provider = device or DEFAULT_DEVICE
    options = _ACCURATE_OPTIONS.get(provider, {}) if precision == "accurate" else {}

    @lru_cache(maxsize=64)
    def session(geometry: Geometry, grouped_shape: tuple[int, ...], pointwise_shape: tuple[int, ...]) -> Any:
        settings = onnxruntime.SessionOptions()
        settings.log_severity_level = 3
        if precision == "accurate":
            settings.add_session_config_entry("mlas.enable_gemm_fastmath_arm64_bfloat16", "0")
        providers = [(provider, options)] if options else [provider]
        return onnxruntime.InferenceSession(_model(geometry, grouped_shape, pointwise_shape), settings,
                                            providers=providers)

    def separable_conv2d(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
                         padding: Any, data_format: str | None = None,
                         dilations: Sequence[int] | None = None) -> np.ndarray:
        x, dw, pw = (np.asarray(a) for a in (input, depthwise_filter, pointwise_filter))
        geometry = read_arguments(x, dw, pw, strides, padding, data_format, dilations)
        if geometry.dtype not in ("float16", "bfloat16", "float32", "float64"):
            raise AdapterRejection(f"dtype {geometry.dtype} has no ONNX Conv")
        grouped, pointwise = grouped_filter(dw), pointwise_oihw(pw)

        def run() -> np.ndarray:
            found = session(geometry, grouped.shape, pointwise.shape)
            return np.asarray(found.run(["z"], {"x": x, "depthwise": grouped, "pointwise": pointwise})[0])

        return checked(geometry, f"ONNX Runtime ({provider})", run)

    separable_conv2d.supports = _SUPPORTS.get(provider, _GENERIC_SUPPORT)  # type: ignore[attr-defined]
    separable_conv2d.__version__ = describe("onnxruntime", onnxruntime.__version__, provider,  # type: ignore[attr-defined]
                                            precision)
    return separable_conv2d
