"""How much memory one case needs in the harness, estimated before anything is allocated.

A case file can ask for arrays no machine holds (an input of 10**40 elements, explicit padding of
2**31 rows): such a case must be refused up front with its origin, not end a run in a MemoryError or the
kernel's OOM killer. Everything here is arithmetic on Python integers (no overflow, no NumPy arrays).

What one case holds at its peak, in bytes (s: the dtype's size; w: the oracle's working precision, 8, or
16 for float64 cases where np.longdouble is wider; c: a backend's compute precision, max(s, 4)):

- held from start to end: the three inputs (s each), and for a case that expects a result the oracle
  and bound tensors (float64) and TensorFlow's output (s);
- plus the largest of the stages, which run one after the other:
  - drawing the inputs: the input in float64 and one float64 copy (the NCHW transpose or the
    non-finite mask), the filters in float64;
  - the oracle (expected results only; conformance.judging.oracle): the input widened and its absolute value,
    the padded input, the depthwise sum and one product of a tap, and both output passes, all in w;
  - the backend or TensorFlow: copies of the inputs (s), then the padded input, the intermediate
    (N*Ho*Wo*C*M) and the output in c;
  - the comparison (expected results only): about ten float64 arrays of the output's size.

Error cases count their geometry too where it can be computed (strides >= 1): a backend or TensorFlow
that wrongly accepts one computes it, and explicit padding of the batch or channel dimension counts as
padding there.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from conformance.cases import contract
from conformance.cases.case import Case
from conformance.cases.loader import Problem
from conformance.judging import oracle

GIB = 2**30
ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
FLOAT64 = 8
COMPARE_ARRAYS = 10  # float64 arrays of the output's size that conformance.judging.compare holds at once
BUDGET_SHARE = 4  # the default budget: a quarter of the machine's physical memory
ASSUMED_MEMORY = 16 * GIB  # physical memory where the system does not say


@dataclass(frozen=True)
class Elements:
    """Element counts of the arrays one case makes (0 for what is never computed)."""

    input: int
    depthwise: int
    pointwise: int
    padded: int
    intermediate: int
    output: int


def elements(case: Case) -> Elements:
    """The case's array sizes in elements; the input as passed (an override included)."""
    n, h, w, c = case.input
    inputs = (math.prod(case.input_shape), math.prod(case.depthwise_shape), math.prod(case.pointwise_shape))
    if min(case.spatial_strides) < 1:  # no geometry: a backend must refuse before computing anything
        return Elements(*inputs, 0, 0, 0)
    g = contract.geometry(case)
    n_pad = c_pad = 0
    if not isinstance(case.padding, str) and len(case.padding) == 4:  # an error case's 4 pairs
        n_pad, c_pad = (sum(pair) for pair in contract.batch_and_channel(case.padding, case.data_format))
    padded = _product(n + n_pad, h + g.pad_top + g.pad_bottom, w + g.pad_left + g.pad_right, c + c_pad)
    pixels = _product(n, g.out_h, g.out_w)
    return Elements(*inputs, padded, pixels * _product(c, case.channel_multiplier), pixels * max(case.out_channels, 0))


def _product(*sizes: int) -> int:
    """Product of sizes, a negative one counting as 0 (an error case's padding may be negative)."""
    return math.prod(max(size, 0) for size in sizes)


def case_bytes(case: Case) -> int:
    """Estimated peak memory, in bytes, that running `case` needs in the harness (see the module's
    docstring for what is counted). Pure, exact integer arithmetic: any size, however large, gives a
    number; no array is allocated. An estimate: NumPy's and TensorFlow's own overheads are not counted."""
    e = elements(case)
    s = ITEMSIZE[case.dtype]
    inputs = s * (e.input + e.depthwise + e.pointwise)
    stages = [FLOAT64 * (2 * e.input + e.depthwise + e.pointwise),  # drawing
              inputs + max(s, 4) * (e.padded + e.intermediate + e.output)]  # the backend, or TensorFlow
    held = inputs
    if not case.expect_error:
        held += 2 * FLOAT64 * e.output + s * e.output  # oracle, bound, TensorFlow's output
        stages += [_oracle_itemsize(case) * (2 * e.input + e.padded + 2 * e.intermediate + 2 * e.output),
                   COMPARE_ARRAYS * FLOAT64 * e.output]
    return held + max(stages)


def _oracle_itemsize(case: Case) -> int:
    # conformance.judging.oracle's own choice of precision (np.longdouble for float64 where it is wider)
    import numpy as np

    return int(np.dtype(oracle.working_precision(case)).itemsize)


def default_case_budget() -> int:
    """The default for --max-case-memory: a quarter of this machine's physical memory (of 16 GiB where
    the system does not say), in bytes. A run with several workers holds that many cases at once."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX, or the names are unknown here
        memory = 0
    return (memory if memory > 0 else ASSUMED_MEMORY) // BUDGET_SHARE


def gib(size: int) -> str:
    """Bytes for a message, in GiB (MiB or bytes below, so that a small budget does not read "0.0 GiB")."""
    if size < GIB:
        return f"{size / 2**20:,.1f} MiB" if size >= 2**20 else f"{size:,} bytes"
    try:
        value = size / GIB
    except OverflowError:
        return "more than 1e300 GiB"
    return f"{value:,.1f} GiB" if value < 1e6 else f"{value:.3g} GiB"


def over_budget(cases: Iterable[Case], max_bytes: int) -> list[Problem]:
    """A Problem for each case whose estimated peak memory (case_bytes) exceeds `max_bytes`: at the
    case's origin file and line, with its id, the estimate, its largest array and the budget in GiB.
    Empty when every case fits. Callers refuse the run (or the cases) before materializing anything."""
    problems = []
    for case in cases:
        need = case_bytes(case)
        if need > max_bytes:
            problems.append(Problem(case.origin.file, case.origin.line, "",
                                    f"case {case.id} needs about {gib(need)} of memory ({_largest(case)}), "
                                    f"more than the budget of {gib(max_bytes)} per case (--max-case-memory)"))
    return problems


def _largest(case: Case) -> str:
    """The largest array of the case, named, with its number of elements."""
    e = elements(case)
    names = {"input": e.input, "padded input": e.padded, "intermediate (N*Ho*Wo*C*M)": e.intermediate,
             "output": e.output, "depthwise filter": e.depthwise, "pointwise filter": e.pointwise}
    name = max(names, key=lambda key: names[key])
    count = names[name]
    return f"largest: the {name}, {count:,} elements" if count < 10**15 else \
        f"largest: the {name}, about 2**{count.bit_length() - 1} elements"


_SIZE = re.compile(r"\s*([0-9.eE+]+)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)
_UNIT = {"": 1, "k": 2**10, "m": 2**20, "g": GIB, "t": 2**40}


def parse_size(text: str) -> int:
    """A memory size as given on a command line: bytes, or a number with a binary unit (K, M, G, T, as
    KiB, MiB, GiB, TiB or KB...), e.g. `512MiB`, `8GiB`, `1.5G`. Raises ValueError saying what is wrong."""
    match = _SIZE.fullmatch(text)
    try:
        value = float(match.group(1)) * _UNIT[match.group(2).lower()] if match else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"expected a size of at least 1 byte such as 8GiB or 512MiB, got {text[:40]!r}")
    return int(value)
