"""Condensed table for the report (normal data, 20 seeds): worst-over-seeds RMS and max of e/sigma, and max e/(uB).

    python table.py > table.txt
"""
import json
import numpy as np

on = json.load(open("stats_normal_onednn1.json"))
off = [dict(r, impl="TF oneDNN=0") for r in json.load(open("stats_normal_onednn0.json")) if r["impl"] == "TF"]
rows = on + off
names = [("TF", "TF oneDNN=1"), ("TF oneDNN=0", "TF oneDNN=0"), ("numpy_backend", "numpy"),
         ("alt.reversed_order (all in dtype, pairwise pw)", "alt.reversed"),
         ("alt.native_low_precision (all in dtype, seq pw)", "alt.native"),
         ("WRONG zeros", "W:zeros"), ("WRONG fp16 at bf16 precision", "W:bf16prec"),
         ("WRONG pw acc in dtype (seq), dw f32", "W:pw-dtype")]
print("cell = RMS e/sigma (worst of 20 seeds) / max |e|/sigma (worst) / max |e|/(u*B) (worst)")
print(f"{'dtype':8s} {'C,M':>7s} {'n':>5s} " + " ".join(f"{s:>19s}" for _, s in names))
for dtype in ("float16", "bfloat16"):
    for shape in sorted({tuple(r["shape"]) for r in rows}, key=lambda s: s[3] * s[4] * 10 + s[4]):
        cells = []
        for name, _ in names:
            rr = [r for r in rows if r["dtype"] == dtype and tuple(r["shape"]) == shape and r["impl"] == name]
            cells.append("-" if not rr else f"{max(r['b_rms'] for r in rr):.3g}/{max(r['b_max'] for r in rr):.3g}/"
                         f"{max(r['a_max'] for r in rr):.3g}")
        n = [r["n"] for r in rows if tuple(r["shape"]) == shape][0]
        print(f"{dtype:8s} {f'{shape[3]},{shape[4]}':>7s} {n:5d} " + " ".join(f"{c:>19s}" for c in cells))
