"""NumPy emulations of separable_conv2d with explicit accumulator precisions (NHWC, stride 1, VALID or
SAME, no dilation). All products of two float16/bfloat16 values are exact in float32 and float64.

depthwise mode:  'f64'       taps summed in float64 (exact to ~2^-53)
                 'f32'       taps summed sequentially in float32, order (i, j)
                 'dtype'     every product and every partial sum rounded to the dtype (Eigen::half style)
                 'dtype_fma' acc = round_dtype(acc + exact product) (fused multiply-add in the dtype)
                 'dtype_fma32' acc = round_dtype(round_f32(acc + product)) (f32 FMA then store to dtype)
inter:           True: intermediate rounded to the dtype; False: kept in the accumulator precision
pointwise mode:  'f64', 'f32' (sequential over k), 'f32blas' (one float32 matmul),
                 'dtype' (products and partial sums rounded, sequential k = 0..K-1),
                 'dtype_fma', 'dtype_pair' (products rounded, pairwise tree in the dtype)
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

BF16 = np.dtype(ml_dtypes.bfloat16)
DT = {"float16": np.dtype(np.float16), "bfloat16": BF16}


PREC = {"float16": (11, -14), "bfloat16": (8, -126)}


def _name(dtype):
    return dtype if isinstance(dtype, str) else np.dtype(dtype).name


def rnd(a, dtype):
    """Round float64 values to `dtype` (one rounding, to nearest even, from the float64 value; no
    overflow handling) and return them as float64. Written out because ml_dtypes' float64 -> bfloat16
    cast may round twice (via float32)."""
    p, emin = PREC[_name(dtype)]
    v = np.asarray(a, dtype=np.float64)
    _, e = np.frexp(v)  # v = m * 2^e, 0.5 <= |m| < 1: the leading bit has weight 2^(e-1)
    quantum = np.ldexp(1.0, np.maximum(e - p, emin - p + 1))
    return np.rint(v / quantum) * quantum


def pad_same(x, kh, kw):
    th, tw = kh - 1, kw - 1
    return np.pad(x, ((0, 0), (th // 2, th - th // 2), (tw // 2, tw - tw // 2), (0, 0)))


def tap_products(x, dw, padding="SAME"):
    """List of (N, Ho, Wo, C, M) float64 exact products, taps in order (i, j)."""
    x = np.asarray(x, dtype=np.float64)
    dw = np.asarray(dw, dtype=np.float64)
    kh, kw = dw.shape[:2]
    xp = pad_same(x, kh, kw) if padding == "SAME" else x
    ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    out = []
    for i in range(kh):
        for j in range(kw):
            out.append(xp[:, i:i + ho, j:j + wo, :, None] * dw[i, j])
    return out


def depthwise(products, dtype, mode):
    if mode == "f64":
        return np.sum(products, axis=0)
    if mode == "f32":
        acc = products[0].astype(np.float32)
        for p in products[1:]:
            acc = acc + p.astype(np.float32)
        return acc.astype(np.float64)
    if mode == "dtype":
        acc = rnd(products[0], dtype)
        for p in products[1:]:
            acc = rnd(acc + rnd(p, dtype), dtype)
        return acc
    if mode == "dtype_fma":
        acc = rnd(products[0], dtype)
        for p in products[1:]:
            acc = rnd(acc + p, dtype)
        return acc
    if mode == "dtype_fma32":  # float32 fma, then the float32 result rounded to the dtype (double rounding)
        acc = rnd(products[0], dtype)
        for p in products[1:]:
            acc = rnd((acc.astype(np.float32) + p.astype(np.float32)).astype(np.float64), dtype)
        return acc
    raise ValueError(mode)


def pairwise(t, axis=1):
    t = np.moveaxis(t, axis, 0)
    while t.shape[0] > 1:
        h = t.shape[0] // 2
        s = t[0:2 * h:2] + t[1:2 * h:2]
        t = np.concatenate([s, t[2 * h:]]) if t.shape[0] % 2 else s
    return t[0]


def pointwise(z, pw, dtype, mode):
    """z: (P, K) float64 values; pw: (K, O)."""
    z = np.asarray(z, np.float64)
    pw = np.asarray(pw, np.float64)
    if mode == "f64":
        return z @ pw
    if mode == "f32blas":
        return (z.astype(np.float32) @ pw.astype(np.float32)).astype(np.float64)
    if mode == "f32":
        z32, p32 = z.astype(np.float32), pw.astype(np.float32)
        acc = z32[:, 0:1] * p32[0]
        for k in range(1, z.shape[1]):
            acc = acc + z32[:, k:k + 1] * p32[k]
        return acc.astype(np.float64)
    if mode in ("dtype", "dtype_fma"):
        acc = rnd(z[:, 0:1] * pw[0], dtype)
        for k in range(1, z.shape[1]):
            prod = z[:, k:k + 1] * pw[k]
            acc = rnd(acc + (rnd(prod, dtype) if mode == "dtype" else prod), dtype)
        return acc
    if mode == "dtype_pair":
        t = rnd(z[:, :, None] * pw[None], dtype)
        while t.shape[1] > 1:
            h = t.shape[1] // 2
            s = rnd(t[:, 0:2 * h:2] + t[:, 1:2 * h:2], dtype)
            t = np.concatenate([s, t[:, 2 * h:]], axis=1) if t.shape[1] % 2 else s
        return t[:, 0]
    raise ValueError(mode)


def separable(x, dw, pw, dtype, dmode="f32", inter=True, pmode="f32blas", padding="SAME", final=True):
    """Emulated output (NHWC, float64 holding dtype values when final=True)."""
    prods = tap_products(x, dw, padding)
    z = depthwise(prods, dtype, dmode)
    if inter:
        z = rnd(z, dtype)
    n, ho, wo, c, m = z.shape
    y = pointwise(z.reshape(-1, c * m), np.asarray(pw, np.float64)[0, 0], dtype, pmode)
    y = y.reshape(n, ho, wo, -1)
    return rnd(y, dtype) if final else y


def exact(x, dw, pw, padding="SAME"):
    """float64 oracle (two-stage, intermediate not rounded), the intermediates z, and the bound."""
    prods = tap_products(x, dw, padding)
    z = np.sum(prods, axis=0)
    babs = np.sum(np.abs(prods), axis=0)
    n, ho, wo, c, m = z.shape
    P = np.asarray(pw, np.float64)[0, 0]
    y = (z.reshape(-1, c * m) @ P).reshape(n, ho, wo, -1)
    b = (babs.reshape(-1, c * m) @ np.abs(P)).reshape(n, ho, wo, -1)
    # sum_k p_k^2 z_k^2 per output element
    s2 = ((z.reshape(-1, c * m) ** 2) @ (P ** 2)).reshape(n, ho, wo, -1)
    return y, z, b, s2
