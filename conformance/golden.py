"""Golden references: TensorFlow's verdicts stored once, so that backends conform without TensorFlow.

One entry per case, content-addressed by the parameters that determine the computation (not its tags,
description or tolerance; its name does count, because the name is part of the id that seeds the data):
`ROOT/ab/<key>.npz` holds TensorFlow's output (where it is the reference), the oracle and the bound;
`ROOT/ab/<key>.json` holds the reference status, TensorFlow's metrics, the versions that produced it, a
digest of the inputs and the sha256 of the .npz. Both are written to a temporary name and renamed (the
.json last, as the commit mark), so concurrent writers never leave a half entry. Reading verifies the
checksum and that the regenerated inputs are the ones the entry was computed from (a NumPy that changed
its random streams would otherwise compare against stale outputs).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from conformance import __version__
from conformance.case import Case
from conformance.data import Inputs
from conformance.oracle import OracleOutputs
from conformance.reference import Reference, tensorflow_version

GOLDEN_FORMAT = 1
# Labels that change neither the inputs nor the outputs. The name is not one of them: it is part of the
# case id, and the id seeds the data (data.materialize), so two cases that differ only by name have
# different inputs and need entries of their own.
NOT_COMPUTATIONAL = ("description", "tags", "tolerance", "error_pattern", "origin")


class GoldenError(Exception):
    """A golden entry that is missing, corrupted, or made from other inputs."""


def golden_key(case: Case) -> str:
    parameters = {k: v for k, v in case.parameters().items() if k not in NOT_COMPUTATIONAL}
    return hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()


def inputs_digest(inputs: Inputs) -> str:
    digest = hashlib.sha256()
    for array in (inputs.input, inputs.depthwise_filter, inputs.pointwise_filter):
        digest.update(str((array.dtype, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


class GoldenStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def paths(self, case: Case) -> tuple[Path, Path]:
        key = golden_key(case)
        return self.root / key[:2] / f"{key}.npz", self.root / key[:2] / f"{key}.json"

    def write(self, case: Case, inputs: Inputs, reference: Reference) -> None:
        arrays: dict[str, np.ndarray] = {}
        if reference.oracle is not None:
            arrays = {"oracle": reference.oracle.output, "bound": reference.oracle.bound}
        if reference.output is not None:  # stored as float64: lossless for every dtype, portable
            arrays["tensorflow"] = reference.output.astype(np.float64)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        payload = buffer.getvalue()
        meta = {"format": GOLDEN_FORMAT, "case": case.id, "source": reference.source, "status": reference.status,
                "detail": reference.detail, "metrics": reference.metrics, "inputs_sha256": inputs_digest(inputs),
                "npz_sha256": hashlib.sha256(payload).hexdigest(),
                "versions": {"sepconv_conformance": __version__, "tensorflow": tensorflow_version(),
                             "numpy": np.__version__}}
        npz_path, json_path = self.paths(case)
        _atomic_write(npz_path, payload)
        _atomic_write(json_path, json.dumps(meta, indent=1, default=str).encode())

    def read(self, case: Case, inputs: Inputs) -> Reference:
        npz_path, json_path = self.paths(case)
        try:
            meta = json.loads(json_path.read_text(encoding="utf-8"))
            payload = npz_path.read_bytes()
        except FileNotFoundError:
            raise GoldenError(f"no golden entry for this case in {self.root} (run `sepconv-conformance golden "
                              "build` with TensorFlow installed)") from None
        except (OSError, ValueError) as error:
            raise GoldenError(f"unreadable golden entry {json_path}: {error}") from None
        if hashlib.sha256(payload).hexdigest() != meta.get("npz_sha256"):
            raise GoldenError(f"corrupted golden entry {npz_path}: checksum mismatch")
        if meta.get("inputs_sha256") != inputs_digest(inputs):
            raise GoldenError(f"golden entry {json_path} was computed from other inputs (NumPy "
                              f"{meta['versions']['numpy']} then, {np.__version__} now): rebuild the goldens")
        with np.load(io.BytesIO(payload)) as arrays:
            oracle = OracleOutputs(arrays["oracle"], arrays["bound"]) if "oracle" in arrays else None
            output = (arrays["tensorflow"].astype(inputs.input.dtype) if "tensorflow" in arrays else None)
        return Reference(meta["source"], meta["status"], meta["detail"], output, oracle, meta["metrics"])


def build_goldens(cases: Sequence[Case], root: Path) -> dict[str, Any]:
    """Run TensorFlow (checked against the oracle) once per case and store the entries."""
    from conformance.runner import prepare

    store = GoldenStore(root)
    statuses: dict[str, int] = {}
    for case in cases:
        inputs, reference = prepare(case, True)
        store.write(case, inputs, reference)
        statuses[reference.status] = statuses.get(reference.status, 0) + 1
    return {"entries": len(cases), "reference_statuses": statuses}
