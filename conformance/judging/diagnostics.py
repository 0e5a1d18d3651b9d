"""Where a failing comparison is wrong: small, JSON-ready maps of the error for the HTML report.

Everything here works on the *severity* of each output element: |got - reference| / limit (the
per-element limit of the tolerance model), +inf for a NaN/Inf mismatch; for exact integer data (every
limit zero) error / B instead, B the bound (see failure_details). The arrays arrive in float64 and in the
output's layout; the maps view them as logical [N, H, W, C] (NCHW transposed, no copy) so that every map
means the same whatever the layout; the worst elements keep the layout's own indices.

Size is bounded whatever the output size, so a bank of thousands of failures stays a few MB:
- heatmap: H x W, the max over batch and channels, max-pooled to at most HEATMAP_MAX x HEATMAP_MAX cells;
  channel_heatmaps: the same for each of the CHANNEL_MAPS worst output channels alone (max over batch, at
  most CHANNEL_HEATMAP_MAX cells a side), so that a bug in one channel does not paint the whole map;
- profiles: the max per batch element, row, column and output channel, each max-pooled to at most
  PROFILE_MAX bins (a bin covers `bin` consecutive indices);
- pattern: per axis, the exact indices holding an over-limit element, as at most RANGES_MAX ranges;
  border: when every over-limit element lies within a ring along the H x W edges and the interior is
  right, the ring's width (a padding or boundary bug);
- histogram of log10(severity), worst elements (WORST_DETAILS), and the signs of the errors.
Map values are rounded to 3 significant digits; the worst elements' expected and got values keep 3
digits beyond where they differ (9 to 17: a float32 or an exact integer is shown whole); infinities
and NaN are written as the strings "inf", "-inf", "nan" (JSON has none).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from conformance.judging.detectors import detect

HEATMAP_MAX = 32
CHANNEL_MAPS = 3
CHANNEL_HEATMAP_MAX = 16
PROFILE_MAX = 128
RANGES_MAX = 8
WORST_DETAILS = 10
# Histogram of log10(severity): (low, high, step) per scale.
HISTOGRAM = {"limit": (-4.0, 4.0, 0.5), "bound": (-8.0, 0.0, 0.5)}
AXES = "NHWC"


def number(value: float, digits: int = 3) -> float | str:
    """`digits` significant digits; +-inf and nan as strings, as in results.json."""
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    return float(f"{value:.{digits}g}")


def _numbers(values: np.ndarray) -> list[Any]:
    return [number(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def _pool(values: np.ndarray, axis: int, most: int) -> tuple[np.ndarray, int]:
    """Max-pool `values` along `axis` into at most `most` bins of `size` consecutive indices (the last
    bin may be shorter). Returns the pooled array and the bin size."""
    length = values.shape[axis]
    size = max(1, math.ceil(length / most))
    if size == 1:
        return values, 1
    return np.maximum.reduceat(values, np.arange(0, length, size), axis=axis), size


def _ranges(indices: np.ndarray) -> list[list[int]]:
    """Sorted indices as inclusive [first, last] runs."""
    if indices.size == 0:
        return []
    breaks = np.nonzero(np.diff(indices) > 1)[0]
    starts = np.concatenate(([indices[0]], indices[breaks + 1]))
    ends = np.concatenate((indices[breaks], [indices[-1]]))
    return [[int(a), int(b)] for a, b in zip(starts, ends)]


def _pattern(over: np.ndarray) -> dict[str, Any]:
    """For each logical axis: which indices hold at least one over-limit element (exact, not pooled).
    "only the last row" reads as H: 1 of 6, [[5, 5]]; "channels >= 64" as C: 64 of 128, [[64, 127]]."""
    pattern = {}
    for axis, name in enumerate(AXES):
        others = tuple(a for a in range(4) if a != axis)
        hit = np.nonzero(over.any(axis=others))[0]
        runs = _ranges(hit)
        pattern[name] = {"count": int(hit.size), "of": int(over.shape[axis]), "ranges": runs[:RANGES_MAX],
                         "more_ranges": max(0, len(runs) - RANGES_MAX)}
    return pattern


def _border(over: np.ndarray) -> int | None:
    """The width of the smallest ring along the edges of H x W that holds every over-limit element, when
    that ring is narrow (at most a quarter of the smaller side, or 1), leaves a right interior, and every
    row and column has a wrong element (the wrong part runs along the edges); else None."""
    spatial: np.ndarray = np.any(over, axis=(0, 3))
    rows, columns = spatial.shape
    if not (spatial.any(axis=1).all() and spatial.any(axis=0).all()):
        return None
    y, x = np.nonzero(spatial)
    width = int(np.minimum(np.minimum(y, rows - 1 - y), np.minimum(x, columns - 1 - x)).max()) + 1
    return width if width <= max(1, min(rows, columns) // 4) and 2 * width < min(rows, columns) else None


def _histogram(severity: np.ndarray, scale: str) -> dict[str, Any]:
    low, high, step = HISTOGRAM[scale]
    finite = severity[np.isfinite(severity)]
    nonzero = finite[finite > 0]
    logs = np.log10(nonzero)
    counts, _ = np.histogram(logs, bins=np.arange(low, high + step / 2, step))
    return {"low": low, "step": step, "counts": [int(c) for c in counts],
            "zero": int(finite.size - nonzero.size), "below": int((logs < low).sum()),
            "above": int((logs >= high).sum()), "infinite": int(severity.size - finite.size)}


def _digits(expected: float, got: float) -> int:
    """Significant digits that show where two values differ, and 3 more."""
    scale, difference = max(abs(expected), abs(got)), abs(got - expected)
    if not (math.isfinite(scale) and math.isfinite(difference)) or difference == 0 or scale == 0:
        return 9
    return min(17, max(9, math.ceil(math.log10(scale / difference)) + 3))


def _largest(flat: np.ndarray, count: int, block: int = 1024) -> np.ndarray:
    """Indices of the `count` largest values of `flat` (any of equal ones), in no particular order.

    The count-th largest of the block maxima is a lower bound on the count-th largest value (each of
    those blocks holds an element at least that large), so only elements at or above it can be among
    the largest: one cheap pass narrows millions of elements to a handful (20x faster than argpartition
    on the bench layers' 3.2M-element outputs)."""
    if flat.size <= count * block:
        return np.argpartition(flat, flat.size - count)[flat.size - count:]
    maxima = np.maximum.reduceat(flat, np.arange(0, flat.size, block))
    floor = np.partition(maxima, maxima.size - count)[maxima.size - count]
    candidates = np.flatnonzero(flat >= floor)
    if candidates.size < count:  # only with NaN in `flat`, which callers never pass
        return np.argpartition(flat, flat.size - count)[flat.size - count:]
    return candidates[np.argpartition(flat[candidates], candidates.size - count)[candidates.size - count:]]


def worst_first(flat: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` largest values of `flat` (NaN-free), largest first; ties in index order."""
    count = min(count, flat.size)
    if count == 0:
        return np.array([], dtype=int)
    top = _largest(flat, count)
    return top[np.argsort(-flat[top], kind="stable")]


def _worst(got: np.ndarray, ref: np.ndarray, limit: np.ndarray, ratio: np.ndarray,
           severity: np.ndarray) -> list[dict[str, Any]]:
    """The WORST_DETAILS most severe elements; indices in the output's own layout."""
    flat = severity.ravel()
    top = worst_first(flat, WORST_DETAILS)
    return [{"index": [int(i) for i in np.unravel_index(int(i), ref.shape)],
             "expected": number(ref.flat[i], _digits(ref.flat[i], got.flat[i])),
             "got": number(got.flat[i], _digits(ref.flat[i], got.flat[i])),
             "error": number(abs(got.flat[i] - ref.flat[i])), "limit": number(limit.flat[i]),
             "error_in_limits": number(ratio.flat[i])}
            for i in top if flat[i] > 0]


def _signs(difference: np.ndarray, scale: np.ndarray) -> dict[str, Any]:
    """Which way the comparable errors go: a systematic bias shows as nearly all above (or below)."""
    useful = scale > 0
    return {"above": int((difference > 0).sum()), "below": int((difference < 0).sum()),
            "equal": int((difference == 0).sum()),
            "mean_signed": number((difference[useful] / scale[useful]).mean()) if useful.any() else 0.0}


def _heatmap(spatial: np.ndarray, most: int) -> dict[str, Any]:
    """An H x W map max-pooled to at most `most` cells a side."""
    rows, row_bin = _pool(spatial, 0, most)
    cells, column_bin = _pool(rows, 1, most)
    return {"bin": [row_bin, column_bin], "rows": int(cells.shape[0]), "columns": int(cells.shape[1]),
            "values": _numbers(cells)}


def failure_details(got: np.ndarray, ref: np.ndarray, limit: np.ndarray, bound: np.ndarray,
                    nonfinite_wrong: np.ndarray, data_format: str, kind: str) -> dict[str, Any]:
    """The maps of one failing comparison. All arrays share the output's shape and layout: the computed
    and reference values (float64), each element's limit and bound B (the operation on absolute values,
    conformance.judging.oracle), and the NaN/Inf mismatches. kind: "elements" (some element is over its limit, or
    a NaN/Inf is wrong) or "statistics" (every element within its limit, but the bias or energy check
    failed).

    The maps' scale ("scale" in the result) is "limit": error / limit, 1 at the limit. Where every limit
    is zero (exact integer data: any error fails) that ratio is +inf wherever anything is wrong, which
    shows where but not how much, so the maps use "bound" instead: error / B (1: as large as the sum of
    the magnitudes of every term; an element read from the wrong place is typically 0.1 to 1)."""
    comparable = np.isfinite(ref) & np.isfinite(got) & np.isfinite(bound)
    error = np.where(comparable, np.abs(got - ref), 0.0)
    ratio = np.where(nonfinite_wrong, np.inf, np.where(error > 0, error / limit, 0.0))
    over = (ratio > 1.0) | nonfinite_wrong
    scale = "limit" if bool((limit > 0).any()) else "bound"
    if scale == "bound":  # bound 0 with an error (impossible for a right answer) stays +inf
        severity = np.where(nonfinite_wrong, np.inf, np.where(error > 0, error / bound, 0.0))
    else:
        severity = ratio
    details: dict[str, Any] = {"kind": kind, "layout": data_format, "scale": scale,
                               "limits": {"heatmap": HEATMAP_MAX, "channel_heatmap": CHANNEL_HEATMAP_MAX,
                                          "profile": PROFILE_MAX, "ranges": RANGES_MAX, "worst": WORST_DETAILS}}
    details["worst"] = _worst(got, ref, limit, ratio, severity)
    details["histogram"] = _histogram(severity, scale)
    details["signs"] = _signs((got - ref)[comparable], (limit if scale == "limit" else bound)[comparable])
    if severity.ndim != 4 or severity.size == 0 or data_format not in ("NHWC", "NCHW"):  # not an image: no maps
        return details
    if data_format == "NCHW":
        severity, over = severity.transpose(0, 2, 3, 1), over.transpose(0, 2, 3, 1)
        got, ref, limit = (a.transpose(0, 2, 3, 1) for a in (got, ref, limit))
    if relation := detect(got, ref, limit):  # "shifted by (0, 1)", "scaled by 0.5", ...: conformance.judging.detectors
        details["relation"] = {"what": relation[0], "sentence": relation[1]}
    details["shape"] = [int(s) for s in severity.shape]
    details["pattern"] = _pattern(over)
    details["border"] = _border(over)
    details["heatmap"] = _heatmap(severity.max(axis=(0, 3)), HEATMAP_MAX)
    per_channel = severity.max(axis=(0, 1, 2))
    if per_channel.size > 1:
        # The channels with an element over its limit; where none has (a statistics failure), any error.
        wrong = over.any(axis=(0, 1, 2)) if over.any() else per_channel > 0
        worst = [int(c) for c in worst_first(per_channel, CHANNEL_MAPS) if wrong[c]]
        details["channel_heatmaps"] = [{"channel": c, **_heatmap(severity[..., c].max(axis=0), CHANNEL_HEATMAP_MAX)}
                                       for c in worst]
    profiles = {}
    for axis, name in enumerate(AXES):
        others = tuple(a for a in range(4) if a != axis)
        pooled, size = _pool(severity.max(axis=others), 0, PROFILE_MAX)
        profiles[name] = {"bin": size, "values": _numbers(pooled)}
    details["profiles"] = profiles
    return details
