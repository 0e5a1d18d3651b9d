"""Summarize stats_*.json: per implementation, the range of RMS and max of e/sigma over every case and seed,
and how many (case, seed) runs a candidate check would fail.

    python summarize.py > summary.txt
"""

import glob
import json
from collections import defaultdict

runs = defaultdict(list)
for path in sorted(glob.glob("stats_*_onednn*.json")):
    data = path.split("_")[1]
    flag = path.split("onednn")[1].split(".")[0]
    for r in json.load(open(path)):
        name = r["impl"]
        if name == "TF":
            name = f"TF (TF_ENABLE_ONEDNN_OPTS={flag})"
        elif flag == "0":
            if name in ("numpy_backend", "WRONG pw acc in dtype (seq), dw f32", "WRONG zeros",
                        "WRONG fp16 at bf16 precision", "alt.fp64_then_cast"):
                runs[(name + " [tf column: vs TF oneDNN=0]", r["dtype"])].append((data, r))
            continue  # otherwise identical to the oneDNN=1 run
        runs[(name, r["dtype"])].append((data, r))

print("Over data normal (20 seeds), uniform, positive (5 seeds), constant (1 seed) x 5 shapes.")
print("rms/max: RMS and max of |e|/sigma vs the float64 oracle (sides=1); tf: RMS of |got - TF(oneDNN on)|/sigma.")
print(f"{'implementation':50s} {'dtype':8s} {'runs':>4s} {'rms min':>8s} {'rms max':>8s} {'max max':>8s} "
      f"{'tf rms min':>10s} {'tf rms max':>10s} | fails: {'rms>2':>6s} {'rms>4(tf)':>9s} {'max>8':>6s} {'max>12':>6s}")
for (name, dtype), rs in sorted(runs.items(), key=lambda kv: (kv[0][0].startswith("WRONG"), kv[0][0], kv[0][1])):
    rms = [r["b_rms"] for _, r in rs]
    mx = [r["b_max"] for _, r in rs]
    tf = [r["tf_rms"] for _, r in rs]
    n = len(rs)
    print(f"{name:50s} {dtype:8s} {n:4d} {min(rms):8.3g} {max(rms):8.3g} {max(mx):8.3g} {min(tf):10.3g} {max(tf):10.3g} |"
          f"        {sum(v > 2 for v in rms):6d} {sum(v > 4 for v in tf):9d} {sum(v > 8 for v in mx):6d} "
          f"{sum(v > 12 for v in mx):6d}")
