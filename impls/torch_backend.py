"""PyTorch as a backend: `torch[:DEVICE][,precision=default]`, e.g. `torch`, `torch:cuda`, `torch:cuda:1`,
`torch:xpu`, `torch:mps`. Needs `pip install -e ".[torch]"` (the index's wheel pulls the CUDA libraries;
`pip install torch --index-url https://download.pytorch.org/whl/cpu` is the CPU build).

Forward: F.pad with TensorFlow's pixels (so asymmetric SAME and explicit padding are exact), then
F.conv2d(groups=C) and a 1x1 F.conv2d (conformance.impls.runtime_adapter has the mapping), on NCHW
tensors (NHWC data is permuted on the device, as a converted model does). Backward: torch.autograd.grad
of the same function. Precision: `accurate` turns TF32 off for cuDNN and matmuls
(torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) and asks for "highest" float32
matmul precision; `default` leaves PyTorch's settings as they are.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np

from conformance.impls.runtime_adapter import AdapterRejection, Geometry, checked, describe, read_arguments

DEFAULT_DEVICE = "cpu"


def unavailable_reason(device: str | None = None) -> str | None:
    if importlib.util.find_spec("torch") is None:
        return ("torch is not installed: pip install 'sepconv-conformance[torch]' (or, for the CPU build, "
                "pip install torch --index-url https://download.pytorch.org/whl/cpu)")
    import torch

    name = device or DEFAULT_DEVICE
    try:
        torch.empty(1, device=name)
    except Exception as error:  # noqa: BLE001 - a device PyTorch cannot use, whatever the reason
        return f"PyTorch cannot use device {name!r} here ({type(error).__name__}: {' '.join(str(error).split())[:300]})"
    return None


def _to_torch(array: np.ndarray, device: Any) -> Any:
    import torch

    if array.dtype.name == "bfloat16":  # torch.from_numpy has no bfloat16: go by the bits
        return torch.from_numpy(np.ascontiguousarray(array).view(np.int16)).view(torch.bfloat16).to(device)
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def _to_numpy(tensor: Any, dtype: np.dtype) -> np.ndarray:
    import torch

    tensor = tensor.detach().to("cpu").contiguous()
    if dtype.name == "bfloat16":
        return tensor.view(torch.int16).numpy().copy().view(dtype)
    return np.array(tensor.numpy(), copy=True)


def _forward(geometry: Geometry, x: Any, dw: Any, pw: Any) -> Any:
    import torch.nn.functional as F

    top, bottom, left, right = geometry.pads
    kh, kw, c, m = dw.shape
    data = x.permute(0, 3, 1, 2) if geometry.layout == "NHWC" else x
    grouped = dw.reshape(kh, kw, c * m).permute(2, 0, 1).unsqueeze(1)  # [C*M, 1, kh, kw]
    y = F.conv2d(F.pad(data, (left, right, top, bottom)), grouped, stride=geometry.strides,
                 dilation=geometry.rates, groups=geometry.channels)
    z = F.conv2d(y, pw.permute(3, 2, 0, 1))
    return z.permute(0, 2, 3, 1) if geometry.layout == "NHWC" else z


def runtime_backend(device: str | None, precision: str) -> Any:
    """The backend function (forward, with `backprop`) for one device and precision mode."""
    import torch

    name = device or DEFAULT_DEVICE
    target = torch.device(name)
    if precision == "accurate":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")

    def prepared(args: tuple[Any, ...]) -> tuple[Geometry, np.dtype, list[Any]]:
        x, dw, pw = arrays = [np.asarray(a) for a in args[:3]]
        geometry = read_arguments(x, dw, pw, *args[3:])
        if geometry.dtype not in ("float16", "bfloat16", "float32", "float64"):
            raise AdapterRejection(f"dtype {geometry.dtype} has no PyTorch convolution")
        return geometry, arrays[0].dtype, [_to_torch(a, target) for a in arrays]

    def separable_conv2d(input: Any, depthwise_filter: Any, pointwise_filter: Any, strides: Sequence[int],
                         padding: Any, data_format: str | None = None,
                         dilations: Sequence[int] | None = None) -> np.ndarray:
        geometry, dtype, tensors = prepared((input, depthwise_filter, pointwise_filter, strides, padding,
                                             data_format, dilations))
        with torch.no_grad():
            return checked(geometry, f"PyTorch ({name})",
                           lambda: _to_numpy(_forward(geometry, *tensors), dtype))

    def backprop(input: Any, depthwise_filter: Any, pointwise_filter: Any, output_gradient: Any,
                 strides: Sequence[int], padding: Any, data_format: str | None = None,
                 dilations: Sequence[int] | None = None) -> tuple[np.ndarray, ...]:
        geometry, dtype, tensors = prepared((input, depthwise_filter, pointwise_filter, strides, padding,
                                             data_format, dilations))

        def run() -> tuple[np.ndarray, ...]:
            for tensor in tensors:
                tensor.requires_grad_(True)
            output = _forward(geometry, *tensors)
            found = torch.autograd.grad(output, tensors, _to_torch(np.asarray(output_gradient, dtype=dtype), target))
            return tuple(_to_numpy(g, dtype) for g in found)

        return checked(geometry, f"PyTorch ({name})", run)

    separable_conv2d.backprop = backprop  # type: ignore[attr-defined]
    separable_conv2d.__version__ = describe("torch", torch.__version__, name, precision)  # type: ignore[attr-defined]
    return separable_conv2d
