"""Normalized-error statistics of correct and wrong float16/bfloat16 separable_conv2d implementations.

Usage (one process per oneDNN setting; the variable is read when TensorFlow is imported):
    TF_ENABLE_ONEDNN_OPTS=1 python stats.py SEEDS > stats_onednn1.txt   (writes stats_onednn1.json)
    TF_ENABLE_ONEDNN_OPTS=0 python stats.py SEEDS > stats_onednn0.txt

Per case: x ~ N(0,1) [N,H,W,C], dw ~ N(0,1) [3,3,C,M], pw ~ N(0,1)/sqrt(C*M) [1,1,C*M,O] (as
conformance/data.py), rounded to the dtype; SAME padding, stride 1, NHWC.
Oracle: float64 two-stage formula on the rounded inputs (intermediate NOT rounded), as conformance/oracle.py.
Units:  (a) u*B + eta       (the current tolerance unit, without the KS factor)
        (b) sigma = u*sqrt((sum_k p_k^2 z_k^2 + y^2)/3) + eta   (z_k exact intermediates, y exact output)
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SEPCONV_NUMPY_THREADS", "1")
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))  # the repository

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import emul  # noqa: E402
from conformance.impls import alternatives, numpy_backend  # noqa: E402

DT = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
U = {"float16": 2.0**-11, "bfloat16": 2.0**-8}
ETA = {"float16": 2.0**-24, "bfloat16": 2.0**-133}
# (N, H, W, C, M, O): C*M = 16, 64, 256, 1024; 400 .. 2304 outputs
SHAPES = [(1, 12, 12, 16, 1, 16), (1, 12, 12, 64, 1, 8), (1, 12, 12, 128, 2, 8), (1, 10, 10, 512, 2, 4),
          (1, 10, 10, 1024, 1, 4)]
ARGS = dict(strides=[1, 1, 1, 1], padding="SAME")


def inputs(shape, dtype, seed, data="normal"):
    n, h, w, c, m, o = shape
    rng = np.random.default_rng([seed, c, m, o, len(data)])
    d = DT[dtype]
    if data == "normal":
        draw = rng.standard_normal
    elif data == "uniform":
        draw = lambda size: rng.uniform(-1, 1, size)  # noqa: E731
    elif data in ("positive", "constant"):
        draw = lambda size: rng.uniform(0, 1, size)  # noqa: E731
    x = draw((n, h, w, c))
    dw = draw((3, 3, c, m))
    if data == "constant":  # every input 0.7, every depthwise weight 0.3: all interior z_k are equal
        x, dw = np.full(x.shape, 0.7), np.full(dw.shape, 0.3)
    pw = draw((1, 1, c * m, o)) / np.sqrt(c * m)
    return x.astype(d), dw.astype(d), pw.astype(d)


def run_tf(x, dw, pw):
    with tf.device("/CPU:0"):
        return tf.nn.separable_conv2d(tf.constant(x), tf.constant(dw), tf.constant(pw), **ARGS).numpy()


def bf16_precision(x, dw, pw, dtype):
    """float16 computed at bfloat16 precision: inputs, intermediate and output rounded to bfloat16."""
    b = DT["bfloat16"]
    xb, dwb, pwb = (a.astype(np.float32).astype(b).astype(np.float64) for a in (x, dw, pw))
    y = emul.separable(xb, dwb, pwb, "bfloat16", "f32", True, "f32blas", "SAME")
    return y.astype(DT[dtype])


def implementations(dtype):
    def emulated(dm, pm):
        return lambda x, dw, pw: emul.separable(x.astype(np.float64), dw.astype(np.float64),
                                                pw.astype(np.float64), dtype, dm, True, pm, "SAME").astype(DT[dtype])
    impls = {
        "TF": run_tf,
        "numpy_backend": lambda x, dw, pw: numpy_backend.separable_conv2d(x, dw, pw, **ARGS),
        "alt.fp64_then_cast": lambda x, dw, pw: alternatives.fp64_then_cast(x, dw, pw, **ARGS),
        "alt.fused_full_conv": lambda x, dw, pw: alternatives.fused_full_conv(x, dw, pw, **ARGS),
        "alt.fp32_accumulate_low_precision":
            lambda x, dw, pw: alternatives.fp32_accumulate_low_precision(x, dw, pw, **ARGS),
        "alt.reversed_order (all in dtype, pairwise pw)":
            lambda x, dw, pw: alternatives.reversed_order(x, dw, pw, **ARGS),
        "alt.native_low_precision (all in dtype, seq pw)":
            lambda x, dw, pw: alternatives.native_low_precision(x, dw, pw, **ARGS),
        "emul: dw acc in dtype (TF Eigen), pw f32": emulated("dtype_fma32", "f32"),
        "WRONG zeros": lambda x, dw, pw: np.zeros(emul.exact(x, dw, pw)[0].shape, DT[dtype]),
        "WRONG pw acc in dtype (seq), dw f32": emulated("f32", "dtype"),
    }
    if dtype == "float16":
        impls["WRONG fp16 at bf16 precision"] = lambda x, dw, pw: bf16_precision(x, dw, pw, dtype)
    return impls


def metrics(got, y, b, s2, dtype, tf_out):
    got = got.astype(np.float64)
    err = got - y
    unit_a = U[dtype] * b + ETA[dtype]
    sigma = U[dtype] * np.sqrt((s2 + y**2) / 3.0) + ETA[dtype]
    ea, eb = err / unit_a, err / sigma
    d = (got - tf_out) / sigma
    return {"n": int(y.size), "a_max": float(np.abs(ea).max()), "a_rms": float(np.sqrt(np.mean(ea**2))),
            "b_max": float(np.abs(eb).max()), "b_rms": float(np.sqrt(np.mean(eb**2))),
            "b_mean": float(eb.mean()), "tf_max": float(np.abs(d).max()), "tf_rms": float(np.sqrt(np.mean(d**2)))}


def main():
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    data = sys.argv[2] if len(sys.argv) > 2 else "normal"
    flag = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")
    results = []
    for dtype in ("float16", "bfloat16"):
        impls = implementations(dtype)
        for shape in SHAPES:
            for seed in range(seeds):
                x, dw, pw = inputs(shape, dtype, seed, data)
                y, z, b, s2 = emul.exact(x, dw, pw, "SAME")
                tf_out = run_tf(x, dw, pw).astype(np.float64)
                for name, fn in conformance.impls.items():
                    m = metrics(fn(x, dw, pw), y, b, s2, dtype, tf_out)
                    results.append({"dtype": dtype, "shape": shape, "CM": shape[3] * shape[4], "seed": seed,
                                    "impl": name, **m})
    with open(f"stats_{data}_onednn{flag}.json", "w") as f:
        json.dump(results, f)
    print(f"TF_ENABLE_ONEDNN_OPTS={flag}, TensorFlow {tf.__version__}, data {data}, {seeds} seeds per shape; "
          "worst over seeds (median in brackets for RMS)")
    head = (f"{'dtype':8s} {'C*M':>5s} {'C,M':>7s} {'n':>5s}  {'implementation':48s} {'max e/uB':>9s} {'rms e/uB':>9s} "
            f"{'max e/sig':>10s} {'rms e/sig':>16s} {'|mean|*sqrt(n)':>14s} {'max d/sig':>10s} {'rms d/sig (vs TF)':>18s}")
    print(head)
    keys = sorted({(r["dtype"], r["CM"], tuple(r["shape"])) for r in results}, key=lambda k: (k[0] != "float16", k[1]))
    for dtype, cm, shape in keys:
        rows = [r for r in results if r["dtype"] == dtype and tuple(r["shape"]) == shape]
        for name in dict.fromkeys(r["impl"] for r in rows):
            rr = [r for r in rows if r["impl"] == name]
            bias = max(abs(r["b_mean"]) * np.sqrt(r["n"]) for r in rr)
            print(f"{dtype:8s} {cm:5d} {f'{shape[3]},{shape[4]}':>7s} {rr[0]['n']:5d}  {name:48s} {max(r['a_max'] for r in rr):9.3g} "
                  f"{max(r['a_rms'] for r in rr):9.3g} {max(r['b_max'] for r in rr):10.3g} "
                  f"{max(r['b_rms'] for r in rr):7.3g} [{np.median([r['b_rms'] for r in rr]):6.3g}] {bias:14.3g} "
                  f"{max(r['tf_max'] for r in rr):10.3g} {max(r['tf_rms'] for r in rr):8.3g} "
                  f"[{np.median([r['tf_rms'] for r in rr]):6.3g}]")
        print()


if __name__ == "__main__":
    main()
