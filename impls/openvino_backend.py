"""OpenVINO as a backend: `openvino[:DEVICE][,precision=default]`, e.g. `openvino`, `openvino:GPU`,
`openvino:NPU`. Needs `pip install -e ".[openvino]"`.

The model, built per shape and dtype and compiled once for the device (conformance.impls.runtime_adapter
has the mapping): [Transpose NHWC->NCHW] -> GroupConvolution(explicit pads) -> Convolution(1x1) ->
[Transpose back], opset 15, the filters as parameters.
Precision: `accurate` compiles with INFERENCE_PRECISION_HINT set to the case's dtype (f32 for float32, so
no bfloat16 or float16 down-conversion) and EXECUTION_MODE_HINT=ACCURACY; `default` passes no hint. The
CPU plugin's default inference precision is bf16 on CPUs with AVX512_BF16 or AMX and f16 on some ARM
CPUs: a float32 model then computes in bfloat16 (docs/runtime-findings.md).
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

DEFAULT_DEVICE = "CPU"
_HINTS = {"float16": "f16", "bfloat16": "bf16", "float32": "f32", "float64": "f32"}
_FORWARD_ONLY = "OpenVINO is an inference runtime: it has no backward pass"
_SUPPORT = {"modes": ["forward"], "reasons": {"modes": _FORWARD_ONLY}}


def unavailable_reason(device: str | None = None) -> str | None:
    if importlib.util.find_spec("openvino") is None:
        return "openvino is not installed: pip install 'sepconv-conformance[openvino]'"
    import openvino

    name = device or DEFAULT_DEVICE
    available = openvino.Core().available_devices
    if name.split(".")[0].split(":")[0] not in {d.split(".")[0] for d in available}:
        return f"OpenVINO device {name} is not available here (available: {', '.join(available) or 'none'})"
    return None


def _model(geometry: Geometry, grouped_shape: tuple[int, ...], pointwise_shape: tuple[int, ...]) -> Any:
    import openvino
    import openvino.opset15 as ops

    element = openvino.Type(np.dtype(geometry.dtype)) if geometry.dtype != "bfloat16" else openvino.Type.bf16
    top, bottom, left, right = geometry.pads
    x = ops.parameter(list(geometry.input_shape), element, name="x")
    depthwise = ops.parameter(list(grouped_shape), element, name="depthwise")
    pointwise = ops.parameter(list(pointwise_shape), element, name="pointwise")
    data = ops.transpose(x, ops.constant(np.array([0, 3, 1, 2]))) if geometry.layout == "NHWC" else x
    y = ops.group_convolution(data, depthwise, list(geometry.strides), [top, left], [bottom, right],
                              list(geometry.rates))
    z = ops.convolution(y, pointwise, [1, 1], [0, 0], [0, 0], [1, 1])
    if geometry.layout == "NHWC":
        z = ops.transpose(z, ops.constant(np.array([0, 2, 3, 1])))
    return openvino.Model([z], [x, depthwise, pointwise], "separable_conv2d")


def _tensor(array: np.ndarray) -> Any:
    """An OpenVINO tensor of the array. bfloat16 goes by its bits: OpenVINO's Python binding refuses
    ml_dtypes' bfloat16 arrays as tensors, and shows a bf16 tensor's buffer as a float16 array, so writing
    values through it would convert them as if they were float16."""
    import openvino

    if array.dtype.name != "bfloat16":
        return openvino.Tensor(np.ascontiguousarray(array))
    tensor = openvino.Tensor(openvino.Type.bf16, openvino.Shape(list(array.shape)))
    tensor.data.view(np.uint16)[...] = array.view(np.uint16)
    return tensor


def _array(tensor: Any, dtype: np.dtype) -> np.ndarray:
    """A copy of an output tensor's values in `dtype` (bfloat16 by its bits, as in _tensor)."""
    data = tensor.data
    if dtype.name == "bfloat16":
        return np.array(data.view(np.uint16), copy=True).view(dtype)
    return np.array(data, dtype=dtype, copy=True)


def runtime_backend(device: str | None, precision: str) -> Any:
    """The backend function for one device and precision mode."""
    import openvino

    core = openvino.Core()
    name = device or DEFAULT_DEVICE

    @lru_cache(maxsize=64)
    def compiled(geometry: Geometry, grouped_shape: tuple[int, ...], pointwise_shape: tuple[int, ...]) -> Any:
        config = {"INFERENCE_PRECISION_HINT": _HINTS[geometry.dtype], "EXECUTION_MODE_HINT": "ACCURACY"} \
            if precision == "accurate" else {}
        return core.compile_model(_model(geometry, grouped_shape, pointwise_shape), name, config)

    def separable_conv2d(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
                         padding: Any, data_format: str | None = None,
                         dilations: Sequence[int] | None = None) -> np.ndarray:
        x, dw, pw = (np.asarray(a) for a in (input, depthwise_filter, pointwise_filter))
        geometry = read_arguments(x, dw, pw, strides, padding, data_format, dilations)
        if geometry.dtype not in _HINTS:
            raise AdapterRejection(f"dtype {geometry.dtype} has no OpenVINO convolution")
        # GroupConvolution's filter: [groups, outputs per group, inputs per group, kh, kw], groups = the
        # filter's channels (where they differ from the input's, OpenVINO is asked and refuses).
        kh, kw, groups, multiplier = dw.shape
        grouped = grouped_filter(dw).reshape(groups, multiplier, 1, kh, kw)
        pointwise = pointwise_oihw(pw)

        def run() -> np.ndarray:
            model = compiled(geometry, grouped.shape, pointwise.shape)
            request = model.create_infer_request()
            request.infer([_tensor(a) for a in (x, grouped, pointwise)])
            return _array(request.get_output_tensor(0), x.dtype)

        return checked(geometry, f"OpenVINO ({name})", run)

    separable_conv2d.supports = _SUPPORT  # type: ignore[attr-defined]
    separable_conv2d.__version__ = describe("openvino", openvino.__version__.split("-")[0], name,  # type: ignore[attr-defined]
                                            precision)
    return separable_conv2d
