"""What a backend returned, as the harness judges it: a plain ndarray, or the value as is (not an array).

Subclasses are converted to their base ndarray before anything looks at them: a subclass may redefine
comparison, arithmetic or `isnan` (a masked array hides what its mask covers), so it could pass a check
its values fail. Masked arrays are judged on their data, the mask ignored. Array-likes (`__array__`: a
TensorFlow tensor, a CuPy array moved to the host) are converted; a list is not an array. An object array or a failing
conversion is returned unconverted, and judged as "not an array".
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_judged(output: Any) -> Any:
    if isinstance(output, np.ma.MaskedArray):
        output = np.ma.getdata(output)
    if isinstance(output, np.ndarray) or hasattr(output, "__array__"):
        try:
            array = np.asarray(output)
        except Exception:  # noqa: BLE001 - the backend's object, not our fault: judged as not an array
            return output
        if type(array) is not np.ndarray:  # an __array__ returning a subclass
            array = np.ma.getdata(array).view(np.ndarray)
        return output if array.dtype == object else array
    return output


def as_judged_gradients(output: Any) -> Any:
    """A backward pass's return value: each of three gradients as_judged; anything else as_judged as a whole
    (then judged as not three arrays)."""
    if isinstance(output, (tuple, list)) and len(output) == 3:
        return tuple(as_judged(value) for value in output)
    return as_judged(output)
