"""The CuPy backend: its whole pipeline with NumPy standing in for CuPy and the kernel (judged against
TensorFlow on the bank in tests/test_selftest.py; here, that the bank reaches all of it), its availability
messages, its CUDA source (compiled where nvcc or NVRTC is), and, on a CUDA machine (`gpu` marker), the
kernel against its stand-in bit for bit and the bank on the device."""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
from collections import Counter
from collections.abc import Iterator

import ml_dtypes
import numpy as np
import pytest

from conformance.cases.loader import load_cases
from conformance.impls import cupy_backend, cupy_kernels
from conformance.impls.cupy_backend import (
    bfloat16_bits_to_float32,
    float32_to_bfloat16_bits,
    geometry,
    separable_conv2d_standin,
    unavailable_reason,
)
from conformance.impls.cupy_kernels import DepthwiseGeometry, check_launch, depthwise_standin, layout_steps
from conformance.result import FAILING_STATUSES
from tests.conftest import REPO, bank_but_full_size

DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32, "float64": np.float64}


# --- the pipeline on the bank, NumPy standing in for the device --------------------------------------------

def test_the_bank_exercises_every_feature_of_the_pipeline():
    """The stand-in pipeline is judged against TensorFlow on every case of the bank but the full-size layers
    (tags bench and network) in tests/test_selftest.py, as one more correct implementation beside the zoo's
    (one pass of TensorFlow over the bank for all of them). That means something only while those cases
    reach every code path, chunking included: the full-size layers are the same paths at real sizes."""
    from conformance.cases.contract import geometry as case_geometry

    cases = bank_but_full_size()
    valid = [case for case in cases if not case.expect_error]
    seen = Counter()
    for case in valid:
        g = case_geometry(case)
        seen.update([case.dtype, case.data_format, case.data,
                     case.padding if isinstance(case.padding, str) else "explicit"])
        seen["stride>1"] += max(case.strides) > 1
        seen["rate>1"] += max(case.rates) > 1
        seen["multiplier>1"] += case.channel_multiplier > 1
        seen["chunked"] += case.batch * g.out_h * g.out_w * case.depthwise_channels > cupy_kernels.STANDIN_CHUNK
    wanted = ["float16", "bfloat16", "float32", "float64", "NHWC", "NCHW", "SAME", "VALID", "explicit",
              "stride>1", "rate>1", "multiplier>1", "integers", "nonfinite", "subnormal", "chunked"]
    assert all(seen[feature] for feature in wanted), {feature: seen[feature] for feature in wanted}
    assert sum(case.expect_error for case in cases) >= 20


@pytest.mark.parametrize("kwargs, message", [
    ({"strides": [1, 2, 2, 1], "dilations": [2, 1]}, "all strides must be 1"),
    ({"strides": [2, 1, 1, 1]}, "batch and channel dimensions must be 1"),
    ({"strides": [1, 1, 1, 1], "data_format": "NCHW", "padding": [[0, 0], [1, 0], [0, 0], [0, 0]]},
     "batch and channel dimensions must be 0"),
    ({"padding": [[0, 0], [-1, 0], [0, 0], [0, 0]]}, "must be >= 0"),
    ({"padding": "FULL"}, "padding must be"),
    ({"data_format": "NWHC"}, "data_format must be"),
    ({"strides": [1, 1, 1]}, "strides must have 4 values"),
    ({"dilations": [0, 1]}, "must be >= 1"),
])
def test_contract_violations_raise_value_error(kwargs, message):
    x, dw, pw = np.ones((1, 5, 5, 5), np.float32), np.ones((3, 3, 5, 1), np.float32), np.ones((1, 1, 5, 3), np.float32)
    args = {"strides": [1, 1, 1, 1], "padding": "SAME", "data_format": "NHWC", "dilations": [1, 1]} | kwargs
    with pytest.raises(ValueError, match=message):
        separable_conv2d_standin(x, dw, pw, **args)


def test_malformed_operands_raise_value_error():
    x, dw, pw = np.ones((1, 5, 5, 2), np.float32), np.ones((3, 3, 2, 1), np.float32), np.ones((1, 1, 2, 3), np.float32)
    for args, message in [((x, dw[0], pw), "rank 4"), ((x[..., :1], dw, pw), "input channels"),
                          ((x, dw, pw[:, :, :1]), "pointwise_filter must have shape"),
                          ((x[:, :2, :2], dw, pw), "does not fit"),
                          ((x, dw.astype(np.float64), pw), "share one dtype"),
                          ((x.astype(np.int32), dw.astype(np.int32), pw.astype(np.int32)), "unsupported dtype")]:
        padding = "VALID" if message == "does not fit" else "SAME"
        with pytest.raises(ValueError, match=message):
            separable_conv2d_standin(*args, [1, 1, 1, 1], padding)


# --- array-level pieces -----------------------------------------------------------------------------------

def test_layout_steps_address_the_element_the_layout_says():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5))  # NHWC: n, h, w, c
    for data_format, tensor in (("NHWC", x), ("NCHW", np.ascontiguousarray(x.transpose(0, 3, 1, 2)))):
        sn, sh, sw, sc = layout_steps(tensor.shape, data_format)
        for n, h, w, c in rng.integers(0, [2, 3, 4, 5], size=(20, 4)):
            assert tensor.reshape(-1)[n * sn + h * sh + w * sw + c * sc] == x[n, h, w, c]


def test_bfloat16_bits_widen_exactly_for_all_65536_patterns():
    bits = np.arange(1 << 16, dtype=np.uint16)
    got = bfloat16_bits_to_float32(np, bits)
    want = bits.view(ml_dtypes.bfloat16).astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


def test_bfloat16_rounding_is_round_to_nearest_even_like_ml_dtypes():
    rng = np.random.default_rng(2)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, np.finfo(np.float32).max,
                        -np.finfo(np.float32).max, np.finfo(np.float32).tiny, 1e-45, -1e-45], np.float32)
    halfway = np.array([0x3F808000, 0x3F818000, 0x3F80C000, 0x3F807FFF, 0x7F7F8000, 0x00008000,
                        0x00018000, 0xBF808000, 0x7FFFFFFF, 0xFFFFFFFF, 0x7F800001], np.uint32).view(np.float32)
    values = np.concatenate([special, halfway, rng.integers(0, 1 << 32, 200_000, dtype=np.uint32).view(np.float32)])
    got = float32_to_bfloat16_bits(np, values)
    assert got.dtype == np.uint16
    with np.errstate(invalid="ignore"):  # NaN inputs
        want = values.astype(ml_dtypes.bfloat16)
    nan = np.isnan(values)
    assert np.isnan(got.view(ml_dtypes.bfloat16)[nan].astype(np.float32)).all()
    np.testing.assert_array_equal(got[~nan], want[~nan].view(np.uint16))


def test_standin_chunks_do_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 7, 3)).astype(np.float32)
    dw, pw = rng.standard_normal((3, 2, 3, 2)).astype(np.float32), rng.standard_normal((1, 1, 6, 4)).astype(np.float32)
    whole = separable_conv2d_standin(x, dw, pw, [1, 2, 1, 1], "SAME")
    monkeypatch.setattr(cupy_kernels, "STANDIN_CHUNK", 7)  # chunks that split pixels and channels
    np.testing.assert_array_equal(separable_conv2d_standin(x, dw, pw, [1, 2, 1, 1], "SAME"), whole)


def test_padding_is_zeros_times_the_filter_so_an_infinite_tap_there_is_nan():
    x = np.ones((1, 1, 1, 1), np.float32)
    dw = np.full((3, 3, 1, 1), np.inf, np.float32)
    dw[1, 1] = 2.0
    pw = np.ones((1, 1, 1, 1), np.float32)
    assert np.isnan(separable_conv2d_standin(x, dw, pw, [1, 1, 1, 1], "SAME")).all()  # as the oracle says
    assert separable_conv2d_standin(x, dw[1:2, 1:2], pw, [1, 1, 1, 1], "SAME").item() == 2.0


def test_launch_preconditions_are_checked():
    g = geometry((1, 4, 4, 2), (3, 3, 2, 1), "NHWC", 1, 1, 1, 1, "SAME")
    x, w, out = np.zeros((1, 4, 4, 2), np.float32), np.zeros((3, 3, 2, 1), np.float32), np.zeros(32, np.float32)
    assert check_launch(x, w, out, g) == "float32"
    for args, message in [((x, w, out[:31]), "out has 31 elements"), ((x, w.astype(np.float64), out), "dtypes"),
                          ((x.astype(ml_dtypes.bfloat16), w.astype(ml_dtypes.bfloat16),
                            out.astype(ml_dtypes.bfloat16)), "dtypes"),
                          ((np.zeros((1, 4, 8, 2), np.float32)[:, :, ::2], w, out), "not C-contiguous")]:
        with pytest.raises(RuntimeError, match=message):
            depthwise_standin(*args, g)


def _random_operands(rng: np.random.Generator, dtype: str, nonfinite: bool = False):
    """A random valid call: (x, dw, pw, strides, padding, data_format, dilations)."""
    while True:
        n, h, w, c = (int(v) for v in rng.integers(1, [4, 14, 14, 7]))
        m, o, kh, kw = (int(v) for v in rng.integers(1, [4, 8, 5, 5]))
        data_format = str(rng.choice(["NHWC", "NCHW"]))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2)) if rng.random() < 0.5 else (1, 1)
        rh, rw = (int(v) for v in rng.integers(1, 4, 2)) if (sh, sw) == (1, 1) else (1, 1)
        kind = rng.integers(3)
        pads = [int(v) for v in rng.integers(0, 4, 4)]
        explicit = [[0, 0], pads[:2], pads[2:], [0, 0]]
        padding = ("SAME", "VALID")[kind] if kind < 2 else (
            explicit if data_format == "NHWC" else [[0, 0], [0, 0], pads[:2], pads[2:]])
        strides = [1, sh, sw, 1] if data_format == "NHWC" else [1, 1, sh, sw]
        shape = (n, h, w, c) if data_format == "NHWC" else (n, c, h, w)
        try:
            geometry(shape, (kh, kw, c, m), data_format, sh, sw, rh, rw, padding)
        except ValueError:
            continue
        x = rng.standard_normal(shape)
        if nonfinite:
            picked = rng.random(x.size) < 0.03
            x.reshape(-1)[picked] = rng.choice([np.nan, np.inf, -np.inf], size=int(picked.sum()))
        dw = rng.standard_normal((kh, kw, c, m))
        pw = rng.standard_normal((1, 1, c * m, o)) / np.sqrt(c * m)
        cast = DTYPES[dtype]
        return x.astype(cast), dw.astype(cast), pw.astype(cast), strides, padding, data_format, [rh, rw]


def _geometry_of(x, dw, strides, padding, data_format, dilations) -> DepthwiseGeometry:
    sh, sw = (strides[1], strides[2]) if data_format == "NHWC" else (strides[2], strides[3])
    return geometry(x.shape, dw.shape, data_format, sh, sw, dilations[0], dilations[1], padding)


def _standin_trials(rng: np.random.Generator, dtype: str, count: int):
    """Random depthwise operands (a third with NaN/Inf inputs, a fifth with an infinite tap, which also
    meets the padding), their geometry and the stand-in's result: (x, dw, geometry, want) per trial."""
    for trial in range(count):
        x, dw, _, strides, padding, data_format, dilations = _random_operands(rng, dtype, nonfinite=trial % 3 == 0)
        if trial % 5 == 0:
            dw.reshape(-1)[0] = np.inf
        g = _geometry_of(x, dw, strides, padding, data_format, dilations)
        want = np.empty(g.total, x.dtype)
        depthwise_standin(x, dw, want, g)
        yield x, dw, g, want


def _assert_same_bits_or_both_nan(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = np.isnan(want.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(got.astype(np.float64)), nan)
    unsigned = np.dtype(f"u{want.dtype.itemsize}")
    np.testing.assert_array_equal(got[~nan].view(unsigned), want[~nan].view(unsigned))


# --- the CUDA source --------------------------------------------------------------------------------------

def _source() -> str:
    return cupy_kernels.kernel_source()


@pytest.mark.parametrize("macro_name", ["SEPCONV_DEPTHWISE_PARAMS", "SEPCONV_BACKWARD_PARAMS"])
def test_kernel_parameters_are_the_geometry_fields_in_order(macro_name):
    macro = re.search(rf"#define {macro_name}\(T\)(.*?)\n\n", _source(), re.DOTALL)
    assert macro, f"{macro_name} not found in the CUDA source"
    names = re.findall(r"long long (\w+)", macro.group(1))
    assert names == [f.name for f in dataclasses.fields(DepthwiseGeometry)]
    assert len(DepthwiseGeometry(*range(1, 20)).kernel_args()) == len(names)
    assert all(type(a) is np.int64 for a in DepthwiseGeometry(*range(1, 20)).kernel_args())


@pytest.mark.parametrize("dtype, ctype", [("float16", "unsigned short"), ("float32", "float"), ("float64", "double")])
def test_each_dtype_has_an_entry_point_of_its_storage_type(dtype, ctype):
    name = cupy_kernels.KERNEL_NAMES[dtype]
    assert re.search(rf'extern "C" __global__ void {name}\(SEPCONV_DEPTHWISE_PARAMS\({ctype}\)\)', _source())
    assert re.search(rf"depthwise<{ctype}>\(", _source())
    for stage, names in cupy_kernels.BACKWARD_KERNEL_NAMES.items():
        assert re.search(rf'extern "C" __global__ void {names[dtype]}\(SEPCONV_BACKWARD_PARAMS\({ctype}\)\)', _source())
        assert re.search(rf"{stage}<{ctype}>\(SEPCONV_BACKWARD_ARGS\)", _source())


# The kernel's own source, compiled for the CPU with a shim for the CUDA built-ins and run over a simulated
# grid: its index arithmetic, bounds checks and grid-stride loop, tested without a GPU. (The float16
# conversions are PTX instructions, so only the float32 and float64 instantiations run here.)
HOST_SHIM = """
struct sepconv_dim { unsigned int x, y, z; };
static sepconv_dim threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define asm(...) ((void)0)
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
"""
HOST_DRIVER = """
#define SEPCONV_EMULATE(T, NAME)                                                                          \\
extern "C" void emulate_##NAME(const T* x, const T* w, T* out, const long long* p, unsigned grid,         \\
                               unsigned block) {                                                          \\
    gridDim.x = grid;                                                                                     \\
    blockDim.x = block;                                                                                   \\
    for (blockIdx.x = 0; blockIdx.x < grid; ++blockIdx.x)                                                 \\
        for (threadIdx.x = 0; threadIdx.x < block; ++threadIdx.x)                                         \\
            sepconv_depthwise_##NAME(x, w, out, ARGS);                                                    \\
}
SEPCONV_EMULATE(float, float32)
SEPCONV_EMULATE(double, float64)
#define SEPCONV_EMULATE_BACKWARD(T, STAGE, NAME)                                                          \
extern "C" void emulate_##STAGE##_##NAME(const T* data, const T* grad, T* out, const long long* p,        \
                                         unsigned grid, unsigned block) {                                 \
    gridDim.x = grid;                                                                                     \
    blockDim.x = block;                                                                                   \
    for (blockIdx.x = 0; blockIdx.x < grid; ++blockIdx.x)                                                 \
        for (threadIdx.x = 0; threadIdx.x < block; ++threadIdx.x)                                         \
            sepconv_##STAGE##_##NAME(data, grad, out, ARGS);                                              \
}
SEPCONV_EMULATE_BACKWARD(float, filter_gradient, float32)
SEPCONV_EMULATE_BACKWARD(double, filter_gradient, float64)
SEPCONV_EMULATE_BACKWARD(float, input_gradient, float32)
SEPCONV_EMULATE_BACKWARD(double, input_gradient, float64)
"""


@pytest.fixture(scope="module")
def emulated_kernel(tmp_path_factory):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is not on PATH")
    folder = tmp_path_factory.mktemp("emulated")
    count = len(dataclasses.fields(DepthwiseGeometry))
    arguments = ", ".join(f"p[{i}]" for i in range(count))
    (folder / "emulated.cpp").write_text(HOST_SHIM + _source() + HOST_DRIVER.replace("ARGS", arguments))
    library = folder / "emulated.so"
    done = subprocess.run([compiler, "-std=c++17", "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-w", "-o",
                           str(library), str(folder / "emulated.cpp")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    lib = ctypes.CDLL(str(library))
    for name in ("emulate_float32", "emulate_float64", *(f"emulate_{stage}_{dtype}" for dtype in ("float32", "float64")
                                                         for stage in ("filter_gradient", "input_gradient"))):
        getattr(lib, name).argtypes = [ctypes.c_void_p] * 3 + [ctypes.POINTER(ctypes.c_longlong), ctypes.c_uint,
                                                                ctypes.c_uint]
    return lib


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_kernel_source_run_on_the_cpu_equals_the_standin_bit_for_bit(emulated_kernel, dtype):
    rng = np.random.default_rng(9)
    for x, dw, g, want in _standin_trials(rng, dtype, 40):
        got = np.full(g.total, np.nan, x.dtype)
        args = (ctypes.c_longlong * len(g.kernel_args()))(*(int(a) for a in g.kernel_args()))
        block = int(rng.integers(1, 64))  # few threads, so that the grid-stride loop goes round
        grid = int(rng.integers(1, max(2, -(-g.total // block))))
        getattr(emulated_kernel, f"emulate_{dtype}")(x.ctypes.data, dw.ctypes.data, got.ctypes.data, args, grid,
                                                     block)
        _assert_same_bits_or_both_nan(got, want)


def _backward_trials(rng: np.random.Generator, dtype: str, count: int):
    """Random operands for the backward kernels, with a random gradient reaching the intermediate (a third
    with NaN/Inf inputs): (stage, data, grad, geometry, want) per trial and stage."""
    for trial in range(count):
        x, dw, _, strides, padding, data_format, dilations = _random_operands(rng, dtype, nonfinite=trial % 3 == 0)
        g = _geometry_of(x, dw, strides, padding, data_format, dilations)
        grad = rng.standard_normal(g.total).astype(x.dtype)
        for stage, data, shape, standin in (("filter_gradient", x, dw.shape, cupy_kernels.filter_gradient_standin),
                                            ("input_gradient", dw, x.shape, cupy_kernels.input_gradient_standin)):
            want = np.empty(shape, x.dtype)
            standin(data, grad, want, g)
            yield stage, data, grad, g, want


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_backward_kernels_run_on_the_cpu_equal_their_standins_bit_for_bit(emulated_kernel, dtype):
    rng = np.random.default_rng(12)
    for stage, data, grad, g, want in _backward_trials(rng, dtype, 30):
        got = np.full(want.shape, np.nan, want.dtype)
        args = (ctypes.c_longlong * len(g.kernel_args()))(*(int(a) for a in g.kernel_args()))
        block = int(rng.integers(1, 64))  # few threads, so that the grid-stride loop goes round
        grid = int(rng.integers(1, max(2, -(-want.size // block))))
        getattr(emulated_kernel, f"emulate_{stage}_{dtype}")(data.ctypes.data, grad.ctypes.data, got.ctypes.data,
                                                              args, grid, block)
        _assert_same_bits_or_both_nan(got, want)


def test_backward_launch_preconditions_are_checked():
    g = geometry((1, 4, 4, 2), (3, 3, 2, 1), "NHWC", 1, 1, 1, 1, "SAME")
    x, w, grad = np.zeros((1, 4, 4, 2), np.float32), np.zeros((3, 3, 2, 1), np.float32), np.zeros(32, np.float32)
    assert cupy_kernels.check_backward_launch(x, grad, np.zeros(18, np.float32), g, "filter_gradient") == "float32"
    with pytest.raises(RuntimeError, match="out has 31 elements, the geometry needs 32"):
        cupy_kernels.input_gradient_standin(w, grad, np.zeros(31, np.float32), g)
    with pytest.raises(RuntimeError, match="dtypes"):
        cupy_kernels.filter_gradient_standin(x, grad.astype(np.float64), np.zeros(18, np.float32), g)


def test_the_backward_standin_pipeline_conforms_on_the_backward_bank():
    """Against the exact gradients (TensorFlow's own judgment of it is tests/test_selftest.py's): every
    backward case of the bank, each dtype, layout and geometry, forbidden inputs rejected."""
    from conformance.execution.backends import Backend
    from conformance.execution.runner import run_case
    from conformance.judging.references import OracleReference

    cases = [c for c in load_cases([REPO / "cases"]) if c.mode == "backward"]
    backend = Backend("cupy-standin", separable_conv2d_standin,
                      backprop=cupy_backend.separable_conv2d_backprop_standin)
    results = [run_case(case, backend, OracleReference()) for case in cases]
    assert len(results) >= 50 and {c.dtype for c in cases} == set(DTYPES)
    assert [(r.case, r.message) for r in results if r.status != "pass"] == []


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvcc_compiles_every_instantiation_without_fma(arch, tmp_path):
    ptx = tmp_path / "depthwise.ptx"
    done = subprocess.run([NVCC, "--ptx", f"-arch={arch}", "-o", str(ptx), str(cupy_kernels.SOURCE_PATH)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    text = ptx.read_text()
    for name in cupy_kernels.KERNEL_NAMES.values():
        assert f".entry {name}(" in text
    # Products and sums are rounded separately, as in the stand-in: a contracted FMA would break bitwise
    # equality with it.
    assert "fma" not in text and "mul.rn.f32" in text and "add.rn.f64" in text


def test_nvrtc_compiles_the_source_as_cupy_would():
    try:
        from cupy.cuda import nvrtc
        nvrtc.getVersion()
    except Exception as error:  # noqa: BLE001 - no CuPy, or no NVRTC library
        pytest.skip(f"CuPy's NVRTC is not usable here: {type(error).__name__}: {error}")
    program = nvrtc.createProgram(_source(), "sepconv_depthwise.cu", [], [])
    try:
        nvrtc.compileProgram(program, ["--std=c++17", "--device-as-default-execution-space", "-arch=sm_90"])
    except Exception:  # noqa: BLE001 - NVRTCError: the log says why
        pytest.fail(nvrtc.getProgramLog(program))
    assert len(nvrtc.getCUBIN(program)) > 0


# --- can it run here? -------------------------------------------------------------------------------------

def _fake_cupy(monkeypatch, device_count=None, device_error=None, nvrtc_error=None) -> None:
    """Install a fake `cupy` that answers the device and library questions as told."""
    def get_device_count() -> int:
        if device_error is not None:
            raise device_error
        return device_count

    def get_version() -> tuple[int, int]:
        if nvrtc_error is not None:
            raise nvrtc_error
        return (12, 9)

    nvrtc = types.SimpleNamespace(getVersion=get_version)
    cuda = types.ModuleType("cupy.cuda")
    cuda.runtime = types.SimpleNamespace(getDeviceCount=get_device_count)
    cuda.nvrtc = nvrtc
    cupy = types.ModuleType("cupy")
    cupy.cuda = cuda
    cupy.__version__ = "0.0-fake"
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    monkeypatch.setitem(sys.modules, "cupy_backends.cuda.libs.cublas", types.ModuleType("cublas"))


def test_without_cupy_the_reason_says_it_is_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` fails as if it were not installed
    assert unavailable_reason() == "CuPy is not installed (pip install 'sepconv-conformance[gpu]')"
    assert cupy_backend.__version__.startswith("unavailable: CuPy is not installed")


def test_a_cupy_that_fails_to_import_is_not_called_missing(monkeypatch, tmp_path):
    package = tmp_path / "cupy"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('libcudart.so.12: cannot open shared object file')\n")
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert unavailable_reason() == ("CuPy is installed but cannot be imported: "
                                    "ImportError: libcudart.so.12: cannot open shared object file")


@pytest.mark.parametrize("count, error, expected", [
    (None, RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient"),
     ("CuPy is installed but there is no usable CUDA device: RuntimeError: cudaErrorInsufficientDriver: CUDA "
      "driver version is insufficient")),
    (0, None, "CuPy is installed but there is no usable CUDA device: no CUDA device found"),
])
def test_without_a_device_the_reason_says_so(monkeypatch, count, error, expected):
    _fake_cupy(monkeypatch, device_count=count, device_error=error)
    assert unavailable_reason() == expected


def test_without_nvrtc_the_reason_names_the_libraries(monkeypatch):
    _fake_cupy(monkeypatch, device_count=1, nvrtc_error=OSError("libnvrtc.so.12: not found"))
    reason = unavailable_reason()
    assert reason is not None and reason.startswith("CuPy is installed but cannot load the CUDA libraries")
    assert "libnvrtc.so.12: not found" in reason and "cupy-cuda12x[ctk]" in reason


def test_with_cupy_and_a_device_there_is_no_reason(monkeypatch):
    _fake_cupy(monkeypatch, device_count=1)
    assert unavailable_reason() is None


def test_real_cupy_without_a_device_names_the_cuda_error():
    pytest.importorskip("cupy")
    reason = unavailable_reason()
    if reason is None:
        pytest.skip("this machine has a usable CUDA device")
    assert reason.startswith("CuPy is installed but ")


FAKE_CUPY_WITHOUT_DEVICE = """
__version__ = "0.0-fake"
class _Runtime:
    @staticmethod
    def getDeviceCount():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
class cuda:
    runtime = _Runtime
"""


@pytest.mark.parametrize("fake, message", [
    (None, "CuPy is not installed (pip install 'sepconv-conformance[gpu]')"),
    (FAKE_CUPY_WITHOUT_DEVICE, "no usable CUDA device: RuntimeError: cudaErrorNoDevice"),
])
def test_cli_backend_cupy_exits_2_saying_what_is_missing(monkeypatch, capsys, small, tmp_path, fake, message):
    """The backend is loaded in a child process (the harness never imports it), so the fake CuPy is a
    package on disk that the child finds on the sys.path it is given, not a module patched in here."""
    from conformance.cli import main

    if fake is not None:
        (tmp_path / "fakes" / "cupy").mkdir(parents=True)
        (tmp_path / "fakes" / "cupy" / "__init__.py").write_text(fake)
        monkeypatch.syspath_prepend(str(tmp_path / "fakes"))  # the isolated child takes this sys.path
    elif importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    code = main(["run", "--cases", str(small), "--backend", "cupy", "--reference", "oracle",
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "backend 'cupy' cannot run here: CuPy is" in err and message in err
    assert "Traceback" not in err and not (tmp_path / "out" / "results.json").exists()


def test_the_device_entry_point_refuses_clearly_without_a_device(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    x, dw, pw = np.ones((1, 3, 3, 1), np.float32), np.ones((1, 1, 1, 1), np.float32), np.ones((1, 1, 1, 1), np.float32)
    with pytest.raises(RuntimeError, match="cannot run here: CuPy is not installed"):
        cupy_backend.separable_conv2d(x, dw, pw, [1, 1, 1, 1], "SAME")


def test_benchmark_prints_one_line_per_valid_case(small, capsys):
    assert cupy_backend._bench(["--standin", "--cases", str(small), "--repeat", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["case", "numpy", "ms"] and len(lines) == 2  # the error case is not timed
    assert lines[1].startswith("n1_h6w5_c3_k3x3_m2_o4_s2x1_r1x1_SAME_NHWC_float32") and lines[1].endswith("x")


# --- on a CUDA machine --------------------------------------------------------------------------------------

def _require_device() -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"needs CuPy and a CUDA device: {reason}")


@pytest.fixture
def cupy() -> Iterator[types.ModuleType]:
    _require_device()
    import cupy

    yield cupy


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_kernel_equals_its_standin_bit_for_bit(cupy, dtype):
    for x, dw, g, want in _standin_trials(np.random.default_rng(10), dtype, 60):
        out = cupy.empty(g.total, x.dtype)
        cupy_kernels.depthwise_cuda(cupy.asarray(x), cupy.asarray(dw), out, g)
        _assert_same_bits_or_both_nan(cupy.asnumpy(out), want)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_backward_kernels_equal_their_standins_bit_for_bit(cupy, dtype):
    for stage, data, grad, g, want in _backward_trials(np.random.default_rng(13), dtype, 40):
        out = cupy.empty(want.shape, want.dtype)
        launch = cupy_kernels.filter_gradient_cuda if stage == "filter_gradient" else cupy_kernels.input_gradient_cuda
        launch(cupy.asarray(data), cupy.asarray(grad), out, g)
        _assert_same_bits_or_both_nan(cupy.asnumpy(out), want)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_device_pipeline_matches_the_standin_pipeline(cupy, dtype):
    """The depthwise stages are bitwise equal, so the results differ only by the GEMMs' summation orders
    (each within K*u*sum|z||p| of exact) and, for 16-bit dtypes, one final rounding each."""
    rng = np.random.default_rng(11)
    unit = 2.0 ** -53 if dtype == "float64" else 2.0 ** -24
    final_ulp = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}.get(dtype, 0.0)  # relative, normal range
    tiniest = {"float16": 2.0 ** -24, "bfloat16": 2.0 ** -133}.get(dtype, 0.0)  # subnormal spacing
    for trial in range(40):
        x, dw, pw, strides, padding, data_format, dilations = _random_operands(rng, dtype, nonfinite=trial % 4 == 0)
        got = cupy_backend.separable_conv2d(x, dw, pw, strides, padding, data_format, dilations)
        want = separable_conv2d_standin(x, dw, pw, strides, padding, data_format, dilations)
        assert got.dtype == want.dtype and got.shape == want.shape
        bound = separable_conv2d_standin(*(np.abs(a.astype(np.float64)) for a in (x, dw, pw)), strides, padding,
                                         data_format, dilations)
        limit = 2 * pw.shape[2] * unit * bound * 1.01 + final_ulp * np.abs(want.astype(np.float64)) + tiniest
        a, b = got.astype(np.float64), want.astype(np.float64)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        finite = np.isfinite(b)
        np.testing.assert_array_equal(a[~finite & ~np.isnan(b)], b[~finite & ~np.isnan(b)])
        assert (np.abs(a - b)[finite] <= limit[finite]).all(), (trial, np.max(np.abs(a - b)[finite] - limit[finite]))


@pytest.mark.gpu
def test_indices_beyond_2_to_the_31_are_computed_in_64_bits(cupy):
    """An input and an intermediate of more than 2**31 elements: checked at the elements where 32-bit
    index arithmetic would have wrapped."""
    n, h, w, c = 1, 4096, 4096, 130  # 2.18e9 float16 elements: 4.4 GB each for input and intermediate
    if cupy.cuda.Device().mem_info[0] < 3 * n * h * w * c * 2 + (1 << 30):
        pytest.skip("needs about 14 GB of free device memory")
    g = geometry((n, h, w, c), (3, 3, c, 1), "NHWC", 1, 1, 1, 1, "SAME")

    def value(index):  # small integers: every sum is exact, so any correct kernel gets these bits
        return (index * 2654435761) % 7 - 3

    x = cupy.empty(n * h * w * c, cupy.float16)
    for start in range(0, x.size, 1 << 28):
        stop = min(start + (1 << 28), x.size)
        x[start:stop] = value(cupy.arange(start, stop, dtype=cupy.int64)).astype(cupy.float16)
    host_dw = np.random.default_rng(13).integers(-3, 4, size=(3, 3, c, 1)).astype(np.float16)
    out = cupy.empty(g.total, cupy.float16)
    cupy_kernels.depthwise_cuda(x, cupy.asarray(host_dw), out, g)
    for index in (2**31 - 1, 2**31, 2**31 + c + 1, g.total - 1, g.total - c - 1):
        ch, rest = index % c, index // c
        ox, oy = rest % w, rest // w
        expected = 0
        for i in range(3):
            for j in range(3):
                iy, ix = oy - 1 + i, ox - 1 + j
                if 0 <= iy < h and 0 <= ix < w:
                    expected += value((iy * w + ix) * c + ch) * int(host_dw[i, j, ch, 0])
        assert float(out[index].get()) == expected, index


@pytest.mark.gpu
def test_version_names_cupy_and_the_device(cupy):
    assert cupy_backend.__version__.startswith(f"cupy {cupy.__version__}, ")


@pytest.mark.gpu
def test_cupy_tf32_does_not_change_float32_results(cupy, tmp_path):
    """CUPY_TF32=1 would round GEMM operands to 10 bits; the backend turns that off."""
    script = (
        "import numpy as np\n"
        "from conformance.impls.cupy_backend import separable_conv2d, separable_conv2d_standin\n"
        "rng = np.random.default_rng(0)\n"
        "x, dw = rng.standard_normal((1, 8, 8, 512)).astype(np.float32), np.ones((1, 1, 512, 1), np.float32)\n"
        "pw = rng.standard_normal((1, 1, 512, 64)).astype(np.float32)\n"
        "got = separable_conv2d(x, dw, pw, [1, 1, 1, 1], 'VALID')\n"
        "want = separable_conv2d_standin(x, dw, pw, [1, 1, 1, 1], 'VALID')\n"
        "bound = separable_conv2d_standin(abs(x).astype(float), dw.astype(float), abs(pw).astype(float), "
        "[1, 1, 1, 1], 'VALID')\n"
        "print(float(np.max(np.abs(got - want) / (2 * 512 * 2.0**-24 * bound))))\n")
    env = {**os.environ, "CUPY_TF32": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split()[-1]) <= 1.0


@pytest.mark.gpu
def test_whole_bank_conforms_on_the_device_through_the_cli(tmp_path):
    """The bank against the oracle (no TensorFlow needed), the NumPy backend side by side for timing."""
    _require_device()
    done = subprocess.run([sys.executable, "-m", "conformance", "run", "--backend", "cupy", "--backend", "numpy",
                           "--reference", "oracle", "--out", str(tmp_path / "out"), "-q", "-n", "4"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=3000, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    statuses = {b: Counter(r["status"] for r in results if r["backend"] == b) for b in ("cupy", "numpy")}
    seconds = {b: sum(r["duration_s"] for r in results if r["backend"] == b) for b in ("cupy", "numpy")}
    print(f"bank on the device: {statuses}; backend+reference seconds {seconds}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert statuses["cupy"]["pass"] > 0 and not set(statuses["cupy"]) & set(FAILING_STATUSES)

