"""Structured float16 data on which a CORRECT implementation's errors are all maximal and of one sign.

x = 1; depthwise taps (1, 2^-11, -2^-20): every intermediate z = 1 + 2^-11 - 2^-20 rounds down to 1 (error ~ -u);
pointwise column: 62 x 2^-6, 2^-6 + 2^-11, 2^-6 - 2^-16 (sum 1 + 2^-11 - 2^-16, which rounds down to 1):
the output rounds down by another ~u. Exact y ~ 1 + 2^-10, every correct implementation that rounds the
intermediate returns 1.0: error ~ -2u*y in every element.

    TF_ENABLE_ONEDNN_OPTS=1 python adversarial.py
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[3]))  # the repository
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import emul  # noqa: E402
from conformance.impls import alternatives, numpy_backend  # noqa: E402

K, O, H, W = 64, 4, 6, 6
x = np.ones((1, H, W + 2, K), np.float16)
dw = np.zeros((1, 3, K, 1)); dw[0, 0], dw[0, 1], dw[0, 2] = 1.0, 2.0**-11, -2.0**-20
dw = dw.astype(np.float16)
p = np.full(K, 2.0**-6); p[-2] += 2.0**-11; p[-1] -= 2.0**-16
pw = np.repeat(p[:, None], O, axis=1).reshape(1, 1, K, O).astype(np.float16)
assert (dw.astype(np.float64)[0, 1, 0, 0], pw.astype(np.float64)[0, 0, -1, 0]) == (2.0**-11, 2.0**-6 - 2.0**-16)
args = dict(strides=[1, 1, 1, 1], padding="VALID")
y, z, b, s2 = emul.exact(x, dw, pw, "VALID")
u = 2.0**-11
sigma = u * np.sqrt((s2 + y**2) / 3) + 2.0**-24
with tf.device("/CPU:0"):
    tf_out = tf.nn.separable_conv2d(x, dw, pw, **args).numpy()
outs = {"TF (TF_ENABLE_ONEDNN_OPTS=%s)" % os.environ.get("TF_ENABLE_ONEDNN_OPTS"): tf_out,
        "numpy_backend": numpy_backend.separable_conv2d(x, dw, pw, **args),
        "two-stage, f64 sums, correctly rounded intermediate and output":
            emul.separable(x, dw, pw, "float16", "f64", True, "f64", "VALID").astype(np.float16),
        "alt.fp64_then_cast (intermediate not rounded)": alternatives.fp64_then_cast(x, dw, pw, **args)}
print(f"exact y = {np.unique(y)}, n = {y.size}")
for name, out in outs.items():
    e = (out.astype(np.float64) - y) / sigma
    ea = (out.astype(np.float64) - y) / (u * b + 2.0**-24)
    print(f"{name:66s} outputs {np.unique(out)}: e/sigma max {np.abs(e).max():.3f} rms {np.sqrt(np.mean(e**2)):.3f} "
          f"mean*sqrt(n) {e.mean() * np.sqrt(e.size):.1f};  e/(uB) max {np.abs(ea).max():.3f}")
