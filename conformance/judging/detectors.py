"""Recognizable relations between a failing output and its reference, each said in one sentence of the
failure's details: "all zeros", "scaled by 0.5", "the reference shifted by (0, 1)", "channels 2 and 5
swapped", "output channel 3 is constant (0)".

They name the bug behind many failures at once (a wrong offset, a missing normalization, a channel-order
mix-up, an unwritten buffer), where the error maps only say where the error is. Each detector claims its
relation only when every comparable element fits it within that element's limit, so noise is never
"scaled by 1.01". Arrays are float64 NHWC (conformance.judging.diagnostics transposes NCHW outputs);
elements that are not finite in either array are left out; exact-integer data (every limit 0) must fit
exactly."""

from __future__ import annotations

import numpy as np

MAX_SHIFT = 2  # rows and columns tried each way
MIN_OVERLAP = 0.5  # a shift is claimed only where the shifted output still overlaps this share of H and W
MAX_SEARCHED_CHANNELS = 32  # wrong channels searched for elsewhere (each against every output channel)
MAX_SEARCH_ELEMENTS = 50_000_000  # elements compared in that search, at most
MAX_LISTED = 4


def fits(got: np.ndarray, ref: np.ndarray, limit: np.ndarray) -> bool:
    comparable = np.isfinite(got) & np.isfinite(ref)
    return bool(comparable.any()) and bool(np.all(np.abs(got - ref)[comparable] <= limit[comparable]))


Relation = tuple[str, str]  # (what, in a few words that group failures; the sentence, with its numbers)


def _zeros(got: np.ndarray, ref: np.ndarray, limit: np.ndarray) -> Relation | None:
    if np.all(got == 0) and not fits(np.zeros_like(ref), ref, limit):
        return "all zeros", "the output is all zeros"
    return None


def _scaled(got: np.ndarray, ref: np.ndarray, limit: np.ndarray) -> Relation | None:
    comparable = np.isfinite(got) & np.isfinite(ref)
    energy = float(np.sum(ref[comparable] ** 2))
    if energy == 0:
        return None
    k = float(np.sum(got[comparable] * ref[comparable])) / energy
    if k == 0 or abs(k - 1) < 1e-3 or not fits(got, k * ref, limit * max(1.0, abs(k))):
        return None
    return "scaled", f"the output is the reference scaled by {k:.4g}"


def _shifted(got: np.ndarray, ref: np.ndarray, limit: np.ndarray) -> Relation | None:
    _, h, w, _ = got.shape
    for dy in range(-MAX_SHIFT, MAX_SHIFT + 1):
        for dx in range(-MAX_SHIFT, MAX_SHIFT + 1):
            if (dy, dx) == (0, 0) or h - abs(dy) < MIN_OVERLAP * h or w - abs(dx) < MIN_OVERLAP * w:
                continue
            # got[y, x] == ref[y - dy, x - dx] where both exist: the reference moved down dy, right dx.
            mine = got[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
            theirs = ref[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
            bounds = limit[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
            # One image's first channel first: most shifts fail there, at a fraction of the cost.
            if mine.size and fits(mine[:1, ..., :1], theirs[:1, ..., :1], bounds[:1, ..., :1]) \
                    and fits(mine, theirs, bounds):
                return (f"shifted by ({dy}, {dx})",
                        f"the output equals the reference shifted by ({dy}, {dx}) (rows down, columns right) "
                        "where both exist: an offset in the padding or in the window's start")
    return None


def _channels_moved(got: np.ndarray, ref: np.ndarray, limit: np.ndarray) -> Relation | None:
    channels = got.shape[3]
    wrong = [c for c in range(channels) if not fits(got[..., c], ref[..., c], limit[..., c])]
    if not wrong or len(wrong) > MAX_SEARCHED_CHANNELS or len(wrong) * got.size > MAX_SEARCH_ELEMENTS:
        return None
    source = {}
    for c in wrong:
        found = [o for o in range(channels) if o != c and fits(got[..., c], ref[..., o], limit[..., c])]
        if not found:
            return None  # some wrong channel is no other channel: not a permutation
        source[c] = found[0]
    if len(wrong) == 2 and source[wrong[0]] == wrong[1] and source[wrong[1]] == wrong[0]:
        return "two channels swapped", f"output channels {wrong[0]} and {wrong[1]} are swapped"
    pairs = ", ".join(f"{c} holds {source[c]}" for c in wrong[:MAX_LISTED])
    more = f" (and {len(wrong) - MAX_LISTED} more)" if len(wrong) > MAX_LISTED else ""
    return "channels permuted", f"output channels hold other reference channels: {pairs}{more}"


def _constant(got: np.ndarray, ref: np.ndarray, limit: np.ndarray) -> Relation | None:
    """Channels, rows or columns of the output that hold one value where the reference varies (slices never
    written, or filled with a bias), the rest of the output being right."""
    for axis, name in ((3, "output channel"), (1, "row"), (2, "column")):
        others = tuple(a for a in range(4) if a != axis)
        if got.size // got.shape[axis] < 2:
            continue
        flat = got.max(axis=others) == got.min(axis=others)  # NaN compares false: never "constant"
        varies = ref.max(axis=others) > ref.min(axis=others)
        found, dead = [], []
        for index in np.flatnonzero(flat & varies):
            mine, theirs = np.take(got, index, axis=axis), np.take(ref, index, axis=axis)
            if not fits(mine, theirs, np.take(limit, index, axis=axis)):
                found.append(f"{name} {index} is constant ({mine.flat[0]:.4g})")
                dead.append(index)
        rest = np.setdiff1d(np.arange(got.shape[axis]), dead)
        # Claimed only when it is the whole failure: every other slice is right.
        if found and (not rest.size or fits(np.take(got, rest, axis=axis), np.take(ref, rest, axis=axis),
                                             np.take(limit, rest, axis=axis))):
            more = f" (and {len(found) - MAX_LISTED} more)" if len(found) > MAX_LISTED else ""
            return f"constant {name.split()[-1]}s", "; ".join(found[:MAX_LISTED]) + more
    return None


DETECTORS = (_zeros, _scaled, _shifted, _channels_moved, _constant)


def detect(got: np.ndarray, ref: np.ndarray, limit: np.ndarray) -> Relation | None:
    """The first relation (in DETECTORS' order: the first that holds explains the rest) between a failing
    output and its reference (NHWC, same shape); None when none holds or the arrays are not a 4-D output."""
    if got.shape != ref.shape or got.ndim != 4 or got.size == 0:
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        for detector in DETECTORS:
            if relation := detector(got, ref, limit):
                return relation
    return None
