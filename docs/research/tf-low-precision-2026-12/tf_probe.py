"""Probe TensorFlow's float16/bfloat16 separable_conv2d numerics on the CPU.

Run in a fresh process per setting (TF_ENABLE_ONEDNN_OPTS is read at import):
    TF_ENABLE_ONEDNN_OPTS=1 python tf_probe.py > probe_onednn1.txt
    TF_ENABLE_ONEDNN_OPTS=0 python tf_probe.py > probe_onednn0.txt
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import emul  # noqa: E402

DT = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
BIG = {"float16": 2048.0, "bfloat16": 256.0}   # 2^p: +1 is a tie that rounds back to BIG
TINY = {"float16": 2.0**-12, "bfloat16": 2.0**-9}  # below half an ulp of 1
MODE = "eager"


def tf_sep(x, dw, pw, padding="VALID", fmt="NHWC"):
    with tf.device("/CPU:0"):
        xt = tf.constant(x if fmt == "NHWC" else np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        args = dict(strides=[1, 1, 1, 1], padding=padding, data_format=fmt)
        if MODE == "function":
            out = tf.function(lambda a, b, c: tf.nn.separable_conv2d(a, b, c, **args))(xt, tf.constant(dw), tf.constant(pw))
        else:
            out = tf.nn.separable_conv2d(xt, tf.constant(dw), tf.constant(pw), **args)
    out = out.numpy()
    if fmt == "NCHW":
        out = out.transpose(0, 2, 3, 1)
    return out.astype(np.float64)


def tf_dw(x, dw, padding="VALID"):
    with tf.device("/CPU:0"):
        return tf.nn.depthwise_conv2d(tf.constant(x), tf.constant(dw), [1, 1, 1, 1], padding).numpy()


def tf_pw(z, pw):
    with tf.device("/CPU:0"):
        return tf.nn.conv2d(tf.constant(z), tf.constant(pw), [1, 1, 1, 1], "VALID").numpy().astype(np.float64)


def c(a, dtype):
    return np.asarray(a, dtype=np.float64).astype(DT[dtype])


def show(label, got, predictions):
    names = [k for k, v in predictions.items() if np.array_equal(v, got)]
    print(f"  {label}: TF = {np.unique(got).tolist()[:6]}  matches: {names or 'none'}  "
          f"(predictions: " + ", ".join(f"{k}={np.unique(v).tolist()[:3]}" for k, v in predictions.items()) + ")")


def targeted(dtype, fmt):
    big, tiny = BIG[dtype], TINY[dtype]
    print(f"\n== targeted tests, {dtype}, {fmt}, {MODE}")
    # T1: depthwise accumulation: 9 taps, x = 1, weights BIG and eight 1s (BIG at tap position p)
    for (C, M) in [(1, 1), (3, 1), (8, 1), (16, 2), (32, 1)]:
        for p in (0, 4, 8):
            w = np.ones((3, 3, C, M)); w.reshape(9, C, M)[p] = big
            x = c(np.ones((1, 3, 3, C)), dtype); dw = c(w, dtype)
            pw = c(np.eye(C * M).reshape(1, 1, C * M, C * M), dtype)
            try:
                got = tf_sep(x, dw, pw, fmt=fmt)
            except Exception as e:  # noqa: BLE001
                print(f"  T1 C={C} M={M}: refused: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
                break
            preds = {m: emul.separable(x, dw, pw, dtype, dmode=m, pmode="f64", padding="VALID")
                     for m in ("f32", "dtype")}
            show(f"T1 depthwise acc C={C} M={M} BIG at tap {p}", got, preds)
    # T2: intermediate rounding: z0 = 1 + tiny (taps 1, tiny), z1 = -1; pw = [1, 1]; exact y = tiny
    for C in (2, 16):
        w = np.zeros((1, 2, C, 1)); w[0, 0, :, 0] = 1; w[0, 1, 0, 0] = tiny; w[0, 0, 1::2, 0] = -1
        x = c(np.ones((1, 1, 2, C)), dtype); dw = c(w, dtype); pw = c(np.ones((1, 1, C, 1)), dtype)
        try:
            got = tf_sep(x, dw, pw, fmt=fmt)
        except Exception as e:  # noqa: BLE001
            print(f"  T2: refused: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
            break
        preds = {"f32,inter rounded": emul.separable(x, dw, pw, dtype, "f32", True, "f64", "VALID"),
                 "f32,inter NOT rounded": emul.separable(x, dw, pw, dtype, "f32", False, "f64", "VALID")}
        show(f"T2 intermediate rounding C={C} (exact {tiny})", got, preds)
    # T3: pointwise accumulation: z_k = 1 (1x1 depthwise, weights 1), pw = BIG and K-1 ones
    for K in (17, 64, 256, 1024):
        for p in (0, K // 2, K - 1):
            pwv = np.ones(K); pwv[p] = big
            x = c(np.ones((1, 1, 1, K)), dtype); dw = c(np.ones((1, 1, K, 1)), dtype)
            pw = c(pwv.reshape(1, 1, K, 1), dtype)
            try:
                got = tf_sep(x, dw, pw, fmt=fmt)
            except Exception as e:  # noqa: BLE001
                print(f"  T3: refused: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
                return
            preds = {m: emul.separable(x, dw, pw, dtype, "f64", True, m, "VALID")
                     for m in ("f64", "f32", "dtype", "dtype_pair")}
            show(f"T3 pointwise acc K={K} BIG at k={p} (exact {big + K - 1:g})", got, preds)
    # T3b: K ones (sum K): float16 sequential accumulation stalls at 2048 (bfloat16 at 256)
    for K in (300, 3001, 4097):
        x = c(np.ones((1, 1, 1, K)), dtype); dw = c(np.ones((1, 1, K, 1)), dtype)
        pw = c(np.ones((1, 1, K, 1)), dtype)
        got = tf_sep(x, dw, pw, fmt=fmt)
        preds = {m: emul.separable(x, dw, pw, dtype, "f64", True, m, "VALID")
                 for m in ("f64", "dtype", "dtype_pair")}
        show(f"T3b K={K} ones", got, preds)


def ulps(a, b, dtype):
    """|a - b| in units of the dtype's ulp at max(|a|, |b|) (both hold dtype values)."""
    p, emin = emul.PREC[dtype]
    _, e = np.frexp(np.maximum(np.abs(a), np.abs(b)))
    q = np.ldexp(1.0, np.maximum(e - p, emin - p + 1))
    return np.abs(a - b) / q


def random_match(dtype, fmt, C, M, O, hw=10, n=2, seed=0):
    rng = np.random.default_rng(seed)
    x = c(rng.standard_normal((n, hw, hw, C)), dtype)
    dw = c(rng.standard_normal((3, 3, C, M)), dtype)
    pw = c(rng.standard_normal((1, 1, C * M, O)) / np.sqrt(C * M), dtype)
    try:
        got = tf_sep(x, dw, pw, padding="SAME", fmt=fmt)
    except Exception as e:  # noqa: BLE001
        print(f"  random C={C} M={M}: refused: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
        return
    models = {
        "dw f32, inter rnd, pw f32 BLAS": ("f32", True, "f32blas"),
        "dw f64, inter rnd, pw f64 (two-stage correctly rounded)": ("f64", True, "f64"),
        "dw f32, inter rnd, pw f32 seq": ("f32", True, "f32"),
        "dw dtype, inter rnd, pw f64": ("dtype", True, "f64"),
        "dw dtype_fma, inter rnd, pw f64": ("dtype_fma", True, "f64"),
        "dw dtype_fma, inter rnd, pw f32 seq": ("dtype_fma", True, "f32"),
        "dw dtype_fma32, inter rnd, pw f32 seq": ("dtype_fma32", True, "f32"),
        "dw f64, inter rnd, pw dtype seq": ("f64", True, "dtype"),
        "dw f64, inter rnd, pw dtype_fma seq": ("f64", True, "dtype_fma"),
        "dw f64, inter rnd, pw dtype pairwise": ("f64", True, "dtype_pair"),
        "dw f64, inter NOT rnd, pw f64": ("f64", False, "f64"),
        "all dtype (dw dtype, pw dtype seq)": ("dtype", True, "dtype"),
    }
    print(f"  random N={n} {hw}x{hw} C={C} M={M} O={O} ({got.size} outputs): TF bitwise-equal share / max ulp")
    for name, (dm, inter, pm) in models.items():
        e = emul.separable(x, dw, pw, dtype, dm, inter, pm, "SAME")
        print(f"    {name:58s} {np.mean(e == got):7.4f}  max {ulps(e, got, dtype).max():.0f} ulp")
    if fmt != "NHWC":
        return
    # stage by stage: TF's depthwise alone, TF's 1x1 conv on TF's own intermediate
    z = tf_dw(x, dw, "SAME").astype(np.float64)
    prods = emul.tap_products(x, dw, "SAME")
    for dm in ("f64", "f32", "dtype", "dtype_fma", "dtype_fma32"):
        e = emul.rnd(emul.depthwise(prods, dtype, dm), dtype).reshape(z.shape)
        print(f"    depthwise stage alone vs dw {dm:11s}: equal share {np.mean(e == z):.4f}  max {ulps(e, z, dtype).max():.0f} ulp")
    y2 = tf_pw(z.astype(DT[dtype]), pw)
    print(f"    separable == conv2d_1x1(depthwise) bitwise: {np.array_equal(y2, got)}")
    zf = z.reshape(-1, C * M)
    for pm in ("f64", "f32", "f32blas", "dtype", "dtype_fma", "dtype_pair"):
        e = emul.rnd(emul.pointwise(zf, pw.astype(np.float64)[0, 0], dtype, pm), dtype).reshape(y2.shape)
        print(f"    pointwise stage (on TF's intermediate) vs pw {pm:10s}: equal share {np.mean(e == y2):.4f}  max {ulps(e, y2, dtype).max():.0f} ulp")


def main():
    global MODE
    print("TensorFlow", tf.__version__, "TF_ENABLE_ONEDNN_OPTS =", os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
          "onednn enabled:", getattr(tf.__internal__ if hasattr(tf, "__internal__") else tf, "__name__", ""))
    try:
        from tensorflow.python.util import _pywrap_util_port
        print("IsMklEnabled:", _pywrap_util_port.IsMklEnabled())
    except Exception as e:  # noqa: BLE001
        print("IsMklEnabled: unknown", e)
    modes = sys.argv[1:] or ["eager"]
    for MODE in modes:
        for dtype in ("float16", "bfloat16"):
            for fmt in ("NHWC", "NCHW"):
                targeted(dtype, fmt)
                print(f"\n== random data, {dtype}, {fmt}, {MODE}")
                for C, M, O in [(8, 2, 8), (64, 1, 16), (128, 2, 8), (256, 4, 4)]:
                    random_match(dtype, fmt, C, M, O)


if __name__ == "__main__":
    main()
