"""Language-neutral test vectors: every case's inputs, references and tolerance, as .npy files plus JSON.

A pack lets a team without Python (a C++ kernel, say) check its implementation against exactly the
inputs, TensorFlow outputs, oracle and bound tensors this suite uses. See docs/vector-pack.md.

Layout:  out/manifest.json  and  out/<case id>/{input, depthwise_filter, pointwise_filter}.npy, plus for
valid cases  oracle.npy, bound.npy  (float64) and  tensorflow.npy  where TensorFlow produced the
reference. A backward case (manifest "mode": "backward") adds output_gradient.npy, and holds
<gradient>.oracle.npy, <gradient>.bound.npy and <gradient>.tensorflow.npy per gradient instead, each judged
with its entry of "gradient_tolerances". bfloat16 tensors are stored as their uint16 bit patterns
("storage": "bfloat16-as-uint16").
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import conformance
from conformance.cases.case import Case
from conformance.cases.data import materialize
from conformance.files import BFLOAT16_STORAGE, atomic_write, npy_storable
from conformance.judging.backward import GRADIENTS, gradient_tolerance
from conformance.judging.reference import Reference, tensorflow_version
from conformance.judging.references import ReferenceSource
from conformance.judging.tolerance import ORACLE_ROUNDOFF, Tolerance

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
FORMAT = "sepconv-conformance-vectors"
FORMAT_VERSION = 1
MAX_FOLDER_NAME = 200
FORMULA = ("|out - expected| <= sides * scale * (bound_coefficient * bound + magnitude_coefficient * |oracle|"
           " + constant) + 2^-53 * bound + atol; sides = 2 against tensorflow.npy (reference.source 'tensorflow'),"
           " 1 against oracle.npy otherwise; exact: |out - expected| <= atol (bitwise when atol is 0);"
           " NaN and Inf positions and signs must match the expected tensor")


def folder_name(case_id: str) -> str:
    """A case's folder in the pack: its id, or for an id too long for a file name (the limit is 255 bytes)
    a prefix of it and a digest of the whole; the manifest maps ids to paths either way."""
    if len(case_id.encode()) <= MAX_FOLDER_NAME:
        return case_id
    return f"{case_id[:MAX_FOLDER_NAME - 40]}-{hashlib.sha256(case_id.encode()).hexdigest()[:32]}"


def _npy_bytes(array: np.ndarray) -> tuple[bytes, dict[str, Any]]:
    """The .npy bytes of an array, and its file entry (dtype, shape, storage) without path and sha256."""
    array = np.ascontiguousarray(array)
    entry: dict[str, Any] = {"dtype": str(array.dtype), "shape": list(array.shape)}
    array, bfloat16 = npy_storable(array)
    entry["storage"] = BFLOAT16_STORAGE if bfloat16 else "native"
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue(), entry


def _tolerance_entry(case: Case, tol: Tolerance | None = None) -> dict[str, Any]:
    tol = tol or Tolerance.for_case(case)
    bound_coefficient, magnitude_coefficient, constant = tol.coefficients()
    return {"unit_roundoff": tol.unit_roundoff, "underflow": tol.underflow, "accumulation": tol.accumulation,
            "accumulator": tol.accumulator, "bound_coefficient": bound_coefficient,
            "magnitude_coefficient": magnitude_coefficient, "constant": constant,
            "scale": tol.scale, "atol": tol.atol, "exact": tol.exact, "statistics": tol.statistics,
            "oracle_roundoff": ORACLE_ROUNDOFF, "formula": FORMULA, "describe": tol.describe()}


def _tensors(case: Case, inputs: Any, reference: Reference) -> dict[str, np.ndarray]:
    tensors = {"input": inputs.input, "depthwise_filter": inputs.depthwise_filter,
               "pointwise_filter": inputs.pointwise_filter}
    if case.mode == "backward":
        tensors["output_gradient"] = inputs.output_gradient
        for name, exact in (reference.gradient_oracles or {}).items():  # none for an error case
            tensors |= {f"{name}.oracle": exact.output, f"{name}.bound": exact.bound}
        for name, value in (reference.gradients or {}).items():
            tensors[f"{name}.tensorflow"] = value
        return tensors
    if not case.expect_error:
        if reference.output is not None:
            tensors["tensorflow"] = reference.output
        if reference.oracle is not None:
            tensors["oracle"] = reference.oracle.output.astype(np.float64)
            tensors["bound"] = reference.oracle.bound.astype(np.float64)
    return tensors


def case_entry(case: Case, reference: Reference, files: dict[str, Any]) -> dict[str, Any]:
    """The manifest entry for one case."""
    return {
        "id": case.id,
        "parameters": case.parameters(),  # every Case field as JSON; origin as "file:line"
        "operator": {"strides": list(case.operator_strides), "padding": case.operator_padding,
                     "data_format": case.data_format, "dilations": list(case.rates)},
        "expect": case.expect,
        "error_pattern": case.error_pattern,
        "mode": case.mode,
        "tolerance": _tolerance_entry(case),
        # backward: each gradient's own error model (its reduction lengths: conformance/judging/backward.py)
        **({"gradient_tolerances": {name: _tolerance_entry(case, gradient_tolerance(case, name))
                                    for name in GRADIENTS}} if case.mode == "backward" else {}),
        "reference": {"source": reference.source, "status": reference.status, "detail": reference.detail},
        "files": files,
    }


def export_pack(cases: Sequence[Case], out: Path, source: ReferenceSource) -> dict:
    """Write the vector pack for `cases` under `out`, with the references of `source` (TensorFlow, checked
    by the oracle, or the oracle alone); returns {"cases", "files", "bytes", "manifest"}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids = [case.id for case in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate case ids: {duplicates}")
    unsafe = [i for i in ids if not _SAFE_ID.fullmatch(i)]
    if unsafe:  # ids become folder names; a `name` may hold anything
        raise ValueError(f"case ids unusable as folder names: {unsafe}")
    entries, written, file_count = [], 0, 0
    for case in cases:
        inputs = materialize(case)
        reference = source.reference(case, inputs)
        files: dict[str, Any] = {}
        for name, array in _tensors(case, inputs, reference).items():
            data, entry = _npy_bytes(array)
            relative = f"{folder_name(case.id)}/{name}.npy"
            atomic_write(out / relative, data)
            files[name] = {"path": relative, **entry, "sha256": hashlib.sha256(data).hexdigest()}
            written += len(data)
            file_count += 1
        entries.append(case_entry(case, reference, files))
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "tool_version": conformance.__version__,
                "numpy": np.__version__, "tensorflow": tensorflow_version() if source.name == "tensorflow" else None,
                "cases": entries}
    text = (json.dumps(manifest, indent=2, allow_nan=False) + "\n").encode()
    atomic_write(out / "manifest.json", text)
    written += len(text)
    return {"cases": len(entries), "files": file_count + 1, "bytes": written,
            "manifest": str(out / "manifest.json")}
