"""Print docs/runtime-findings.md's measured tables from a run's results.json:

    sepconv-conformance run --backend onnxruntime --backend openvino --backend jax -n 2 --out reports/runtimes
    python docs/runtime-findings/tables.py reports/runtimes/results.json

the statuses per runtime, and per contract rule the forbidden inputs each runtime itself accepted."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter, defaultdict

RULES = [("dilation rate", "a dilation rate > 1 with a stride > 1"),
         ("must not be empty", "empty filters (a zero kernel size, multiplier or out_channels)"),
         ("padding must be >= 0", "negative explicit padding"),
         ("does not fit", "a dilated kernel larger than the padded input"),
         ("input channels", "depthwise filter channels != input channels"),
         ("pointwise_filter must have shape", "a pointwise filter that is not [1, 1, C*M, O]"),
         ("strides and dilations must be >= 1", "a stride or rate < 1")]


def rule(message: str) -> str:
    broken = re.search(r"forbids it: (.*)", message)
    text = broken.group(1) if broken else message
    return next((name for key, name in RULES if key in text), text[:60])


def main(path: str) -> None:
    document = json.load(open(path, encoding="utf-8"))
    records = document["results"]
    versions = document["run"].get("backend_versions") or {}
    backends = list(dict.fromkeys(r["backend"] for r in records))
    statuses = [s for s in ("pass", "xfail", "fail", "error", "skip") if any(r["status"] == s for r in records)]
    print("| runtime | version | " + " | ".join(statuses) + " |")
    print("|" + " --- |" * (len(statuses) + 2))
    for backend in backends:
        counts = Counter(r["status"] for r in records if r["backend"] == backend)
        print(f"| `{backend}` | {versions.get(backend, '')} | " + " | ".join(str(counts[s]) for s in statuses) + " |")
    accepted: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        if r.get("expect") == "error" and r.get("rejected_by") == "accepted_by_runtime":
            accepted[rule(r["message"])][r["backend"]] += 1
    judged = [r for r in records if r.get("expect") == "error" and r["status"] != "skip"]
    origins = {b: Counter(r.get("rejected_by") or "-" for r in judged if r["backend"] == b) for b in backends}
    print("\n| forbidden input the runtime itself accepts | " + " | ".join(f"`{b}`" for b in backends) + " |")
    print("|" + " --- |" * (len(backends) + 1))
    for name, per_backend in accepted.items():
        print(f"| {name} | " + " | ".join(str(per_backend[b] or "") for b in backends) + " |")
    print("| **of the forbidden cases run: refused by the runtime / accepted by it / not expressible** | " +
          " | ".join(f"{origins[b]['runtime']} / {origins[b]['accepted_by_runtime']} / {origins[b]['adapter']} "
                     f"of {sum(origins[b].values())}" for b in backends) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
