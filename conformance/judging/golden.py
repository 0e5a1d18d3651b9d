"""Golden references: TensorFlow's verdicts stored once, so that backends conform without TensorFlow.

One entry per case, content-addressed by the parameters that determine the computation (not its tags,
description or tolerance; its name does count, because the name is part of the id that seeds the data):
`ROOT/ab/<key>.npz` holds TensorFlow's output (where it is the reference), the oracle and the bound;
`ROOT/ab/<key>.json` holds the reference status, TensorFlow's metrics, the versions that produced it, a
digest of the inputs and the sha256 of the .npz. Both are written to a temporary name and renamed (the
.json last, as the commit mark), so concurrent writers never leave a half entry.

What reading an entry verifies (any failure is a GoldenError naming the file and the reason):
- its form: the .json is an object with every key, of the right type, in this format version, with a
  source and status that fit the case; the .npz is a zip of exactly the arrays the status calls for
  (none for an error case; oracle and bound, plus TensorFlow's output when it is the reference), each
  float64 in the case's output shape, TensorFlow's exactly representable in the case's dtype;
- the .npz's sha256 against the .json (accidental corruption), and that the regenerated inputs are the
  ones the entry was computed from (a NumPy that changed its random streams);
- with `verify` (the default), its values, against the oracle recomputed on the spot (no TensorFlow
  needed): the stored oracle and bound must equal the recomputed ones within ORACLE_DRIFT (below), and
  TensorFlow's stored output must lie within the tolerance model of the recomputed oracle, judged
  exactly as conformance.judging.reference.build_reference judges TensorFlow. So a forged .npz with a matching
  checksum cannot move the reference, and the recomputed oracle and bound are the ones returned.

What it cannot verify: that TensorFlow computed the stored output (any output within the model of the
oracle passes, as it would have passed the live check); the status when it says TensorFlow was not the
reference (refused, mismatch, nondeterministic, not_run: the backend is then judged against the
recomputed oracle, which is sound, but TensorFlow's fault is taken on trust); for an error case, that
TensorFlow rejected it; and the detail, metrics and versions texts. The TensorFlow versions are reported,
not checked: see GoldenStore.tensorflow_versions and version_note.

Cost: verification computes the oracle again and compares once more, about what a live run spends on
them besides TensorFlow (see docs/goldens.md for the bank's numbers). For the full-size `bench` layers it
is most of the read's time, and it stays on: an unverified reference could make any backend pass.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from conformance import __version__
from conformance.cases import contract
from conformance.cases.case import Case
from conformance.cases.data import Inputs, numpy_dtype
from conformance.files import atomic_write
from conformance.judging.backward import GRADIENTS, backward_oracle, gradient_tolerance
from conformance.judging.compare import compare
from conformance.judging.oracle import OracleOutputs, compute_oracle
from conformance.judging.reference import REFERENCE_STATUSES, Reference, tensorflow_version
from conformance.judging.tolerance import Tolerance

if TYPE_CHECKING:  # references.py reads goldens through GoldenStore: a runtime import would be a cycle
    from conformance.judging.references import ReferenceSource

GOLDEN_FORMAT = 1
# Labels that change neither the inputs nor the outputs. The name is not one of them: it is part of the
# case id, and the id seeds the data (data.materialize), so two cases that differ only by name have
# different inputs and need entries of their own.
NOT_COMPUTATIONAL = ("description", "tags", "tolerance", "error_pattern", "origin")
META_TYPES: dict[str, type] = {"format": int, "case": str, "source": str, "status": str, "detail": str,
                               "metrics": dict, "inputs_sha256": str, "npz_sha256": str, "versions": dict}
# The oracle is not bitwise reproducible across machines: its float64 pointwise stage is a BLAS matmul
# whose summation order depends on the CPU's kernels, and float64 cases use np.longdouble, which is 80-bit
# on x86-64, 128-bit on aarch64 Linux and plain float64 on macOS arm64. Each evaluation is within
# KS * (2^-53 * B + 2^-1074) of the exact value (the tolerance model's first-order analysis in float64,
# KS = kh*kw + C*M + 1), so two may differ by twice that: ORACLE_DRIFT * KS * (2^-53 * B + 2^-1074).
# That is 2^-28 of the float32 model's per-element limit; NaN and Inf must match exactly. The slack moves
# no verdict: the recomputed oracle and bound are the ones a backend is then judged against.
ORACLE_DRIFT = 2.0
FLOAT64_ROUNDOFF, FLOAT64_SUBNORMAL = 2.0**-53, 2.0**-1074
UNKNOWN_VERSION = "unknown"


class GoldenError(Exception):
    """A golden entry that is missing, malformed, corrupted, made from other inputs, or fails
    verification against the recomputed oracle."""


def golden_key(case: Case) -> str:
    parameters = {k: v for k, v in case.parameters().items() if k not in NOT_COMPUTATIONAL}
    if parameters.get("input_tensor_shape") is None:  # a later field: absent, the keys stay as they were
        parameters.pop("input_tensor_shape", None)
    return hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()


def inputs_digest(inputs: Inputs) -> str:
    digest = hashlib.sha256()
    for array in (inputs.input, inputs.depthwise_filter, inputs.pointwise_filter):
        digest.update(str((array.dtype, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def version_note(golden_versions: Mapping[str, int], installed_version: str | None) -> str | None:
    """One line when the goldens were made with a TensorFlow other than the installed one, else None.

    golden_versions: GoldenStore.tensorflow_versions's answer; installed_version:
    conformance.judging.reference.tensorflow_version() (None where TensorFlow is not installed). E.g.
    "goldens made with TensorFlow 2.20.0 (674 entries); installed: 2.21.0", or "...; installed: none".
    """
    if not golden_versions or set(golden_versions) == {installed_version}:
        return None
    made = ", ".join(f"{version} ({count} entr{'y' if count == 1 else 'ies'})" for version, count
                     in sorted(golden_versions.items(), key=lambda item: (-item[1], item[0])))
    return f"goldens made with TensorFlow {made}; installed: {installed_version or 'none'}"


def _parse_meta(path: Path, text: str, case: Case) -> dict[str, Any]:
    """The entry's .json, checked for form and for fitting the case; GoldenError otherwise."""
    def malformed(reason: str) -> GoldenError:
        return GoldenError(f"malformed golden entry {path}: {reason}")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise malformed(f"not JSON ({error})") from None
    if not isinstance(meta, dict):
        raise malformed(f"a JSON {type(meta).__name__}, not an object")
    for key, kind in META_TYPES.items():
        if key not in meta:
            raise malformed(f"no {key!r}")
        if type(meta[key]) is not kind:  # exact: JSON's true is not a format number
            raise malformed(f"{key!r} is {type(meta[key]).__name__}, expected {kind.__name__}")
    if meta["format"] != GOLDEN_FORMAT:
        raise malformed(f"format {meta['format']}, this version reads format {GOLDEN_FORMAT}: rebuild the goldens")
    if reason := _misfit(case, meta["source"], meta["status"]):
        raise malformed(reason)
    return meta


def _misfit(case: Case, source: str, status: str) -> str | None:
    """Why a source and status cannot be the reference for this case, or None."""
    if status not in REFERENCE_STATUSES:
        return f"unknown reference status {status!r}"
    expected = ("contract",) if case.expect_error else ("tensorflow",) if status == "ok" else ("oracle",)
    if source not in expected:
        return (f"source {source!r} with status {status!r} for a case that expects "
                f"{'an error' if case.expect_error else 'a result'} (expected {expected[0]!r})")
    return None


def _tensor_shapes(case: Case) -> dict[str, tuple[int, ...]]:
    """The prefix of each stored tensor's arrays, and its shape: "" and the output's for a forward case;
    "<gradient>." and that gradient's (the input's, or a filter's) for a backward case."""
    if case.mode == "backward":
        shapes = (case.input_shape, case.depthwise_shape, case.pointwise_shape)
        return {f"{name}.": tuple(shape) for name, shape in zip(GRADIENTS, shapes)}
    return {"": contract.output_shape(case)}


def _expected_arrays(case: Case, source: str) -> set[str]:
    if case.expect_error:
        return set()
    kinds = ("oracle", "bound", "tensorflow") if source == "tensorflow" else ("oracle", "bound")
    return {prefix + kind for prefix in _tensor_shapes(case) for kind in kinds}


def _parse_arrays(path: Path, payload: bytes, case: Case, source: str) -> dict[str, np.ndarray]:
    """The entry's .npz: exactly the arrays its source calls for, float64, in the case's output shape."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as error:  # noqa: BLE001 - an untrusted file: whatever the parser raises means malformed
        raise GoldenError(f"malformed golden entry {path}: not a readable .npz ({type(error).__name__}: "
                          f"{error})") from None
    expected = _expected_arrays(case, source)
    if set(arrays) != expected:
        raise GoldenError(f"malformed golden entry {path}: arrays {sorted(arrays)}, expected {sorted(expected)} "
                          f"for source {source!r}")
    shapes = _tensor_shapes(case)
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray):  # NpzFile hands back the raw bytes of a member that is not .npy
            raise GoldenError(f"malformed golden entry {path}: {name!r} is not a .npy array")
        shape = shapes[name[:name.rfind(".") + 1]]
        if array.dtype != np.float64 or array.shape != shape:
            raise GoldenError(f"malformed golden entry {path}: {name!r} is {array.dtype} {list(array.shape)}, "
                              f"expected float64 {list(shape)}")
    return arrays


def _tensorflow_output(path: Path, case: Case, stored: np.ndarray) -> np.ndarray:
    """TensorFlow's output back in the case's dtype; it was stored losslessly, so it must round-trip."""
    output = stored.astype(numpy_dtype(case.dtype))
    if not np.array_equal(output.astype(np.float64), stored, equal_nan=True):
        raise GoldenError(f"malformed golden entry {path}: TensorFlow's output holds values that are not "
                          f"{case.dtype}")
    return output


def _drift(stored: np.ndarray, recomputed: np.ndarray, allowed: np.ndarray) -> str | None:
    """Where a stored oracle tensor is farther from the recomputed one than two float64 evaluations can
    be (NaN and Inf must match exactly), or None."""
    if np.array_equal(stored, recomputed, equal_nan=True):  # the usual case: same machine, same BLAS
        return None
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(stored) & np.isfinite(recomputed)
        off = np.where(finite, np.abs(stored - recomputed) > allowed,
                       ~((stored == recomputed) | (np.isnan(stored) & np.isnan(recomputed))))
    if not off.any():
        return None
    index = np.unravel_index(int(np.argmax(off)), off.shape)
    return (f"{int(off.sum())} of {off.size} elements differ; first at {[int(i) for i in index]}: stored "
            f"{float(stored[index])!r}, recomputed {float(recomputed[index])!r}")


def _verify(path: Path, case: Case, arrays: dict[str, np.ndarray], oracle: OracleOutputs,
            output: np.ndarray | None, tolerance: Tolerance, prefix: str = "") -> None:
    """One stored tensor's values (arrays `prefix`oracle, ...) against the recomputed oracle, judged with
    `tolerance`; GoldenError naming what disagrees."""
    allowed = ORACLE_DRIFT * tolerance.accumulation * (FLOAT64_ROUNDOFF * oracle.bound + FLOAT64_SUBNORMAL)
    for name, recomputed in (("oracle", oracle.output), ("bound", oracle.bound)):
        if where := _drift(arrays[prefix + name], recomputed, allowed):
            raise GoldenError(f"golden entry {path} fails verification: the stored {prefix}{name} is not the "
                              f"recomputed one: {where}")
    if output is None:
        return
    # As build_reference judges TensorFlow: against the oracle, one side of rounding error.
    verdict = compare(output, oracle.output, oracle.output, oracle.bound, tolerance, sides=1,
                      dtype=numpy_dtype(case.dtype), variance=oracle.variance)
    if not verdict.passed:
        raise GoldenError(f"golden entry {path} fails verification: TensorFlow's stored {prefix or 'output '}"
                          f"vs the recomputed oracle: {verdict.reason}")


class GoldenStore:
    """A folder of golden entries. `verify` (default True) checks each entry's values against the
    oracle recomputed at read time; without it only form, checksum and inputs are checked."""

    def __init__(self, root: Path | str, verify: bool = True):
        self.root = Path(root)
        self.verify = verify

    def paths(self, case: Case) -> tuple[Path, Path]:
        key = golden_key(case)
        return self.root / key[:2] / f"{key}.npz", self.root / key[:2] / f"{key}.json"

    def write(self, case: Case, inputs: Inputs, reference: Reference) -> None:
        arrays: dict[str, np.ndarray] = {}
        oracles = {f"{name}.": exact for name, exact in (reference.gradient_oracles or {}).items()}
        found = {f"{name}.": value for name, value in (reference.gradients or {}).items()}
        if reference.oracle is not None:
            oracles[""] = reference.oracle
        if reference.output is not None:
            found[""] = reference.output
        for prefix, exact in oracles.items():
            arrays |= {f"{prefix}oracle": exact.output, f"{prefix}bound": exact.bound}
        for prefix, value in found.items():  # stored as float64: lossless for every dtype, portable
            arrays[f"{prefix}tensorflow"] = value.astype(np.float64)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types the keywords as allow_pickle
        payload = buffer.getvalue()
        meta = {"format": GOLDEN_FORMAT, "case": case.id, "source": reference.source, "status": reference.status,
                "detail": reference.detail, "metrics": reference.metrics, "inputs_sha256": inputs_digest(inputs),
                "npz_sha256": hashlib.sha256(payload).hexdigest(),
                "versions": {"sepconv_conformance": __version__, "tensorflow": tensorflow_version(),
                             "numpy": np.__version__}}
        npz_path, json_path = self.paths(case)
        atomic_write(npz_path, payload)
        atomic_write(json_path, json.dumps(meta, indent=1, default=str).encode())

    def _meta(self, case: Case) -> dict[str, Any]:
        """The entry's checked .json; GoldenError when it is missing or malformed."""
        json_path = self.paths(case)[1]
        try:
            text = json_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise GoldenError(f"no golden entry for this case in {self.root} (run `sepconv-conformance golden "
                              "build` with TensorFlow installed)") from None
        except (OSError, ValueError) as error:
            raise GoldenError(f"unreadable golden entry {json_path}: {error}") from None
        return _parse_meta(json_path, text, case)

    def read(self, case: Case, inputs: Inputs) -> Reference:
        """The case's reference, checked as the module docstring says; GoldenError naming the file and
        the reason when the entry is missing, malformed, corrupted, stale or fails verification."""
        npz_path, json_path = self.paths(case)
        meta = self._meta(case)
        try:
            payload = npz_path.read_bytes()
        except OSError as error:
            raise GoldenError(f"unreadable golden entry {npz_path}: {error}") from None
        if hashlib.sha256(payload).hexdigest() != meta["npz_sha256"]:
            raise GoldenError(f"corrupted golden entry {npz_path}: checksum mismatch")
        if meta["inputs_sha256"] != inputs_digest(inputs):
            raise GoldenError(f"golden entry {json_path} was computed from other inputs (NumPy "
                              f"{meta['versions'].get('numpy')} then, {np.__version__} now): rebuild the goldens")
        arrays = _parse_arrays(npz_path, payload, case, meta["source"])
        if case.mode == "backward" and not case.expect_error:
            return self._backward(npz_path, case, inputs, arrays, meta)
        output = _tensorflow_output(npz_path, case, arrays["tensorflow"]) if "tensorflow" in arrays else None
        oracle = OracleOutputs(arrays["oracle"], arrays["bound"]) if "oracle" in arrays else None
        if self.verify and oracle is not None:
            oracle = compute_oracle(case, inputs)
            _verify(npz_path, case, arrays, oracle, output, Tolerance.for_case(case))
        return Reference(meta["source"], meta["status"], meta["detail"], output, oracle, meta["metrics"])

    def _backward(self, npz_path: Path, case: Case, inputs: Inputs, arrays: dict[str, np.ndarray],
                  meta: dict[str, Any]) -> Reference:
        """A backward case's entry: each gradient's stored tensors, verified as a forward output's are."""
        found = {name: _tensorflow_output(npz_path, case, arrays[f"{name}.tensorflow"]) for name in GRADIENTS
                 if f"{name}.tensorflow" in arrays}
        oracles = {name: OracleOutputs(arrays[f"{name}.oracle"], arrays[f"{name}.bound"]) for name in GRADIENTS}
        if self.verify:
            oracles = backward_oracle(case, inputs)
            for name in GRADIENTS:
                _verify(npz_path, case, arrays, oracles[name], found.get(name), gradient_tolerance(case, name),
                        f"{name}.")
        return Reference(meta["source"], meta["status"], meta["detail"], metrics=meta["metrics"],
                         gradients=found or None, gradient_oracles=oracles)

    def tensorflow_versions(self, cases: Iterable[Case]) -> dict[str, int]:
        """TensorFlow version -> how many of these cases' entries were made with it, e.g.
        {"2.21.0": 674}. Reads only each entry's small .json. Entries that are missing or malformed are
        not counted (reading them is that case's error); one that records no version counts as
        "unknown". Pass the answer, with the installed version, to version_note."""
        counts: dict[str, int] = {}
        for case in cases:
            try:
                version = self._meta(case)["versions"].get("tensorflow")
            except GoldenError:
                continue
            name = version if isinstance(version, str) and version else UNKNOWN_VERSION
            counts[name] = counts.get(name, 0) + 1
        return counts


def build_goldens(cases: Sequence[Case], root: Path, source: ReferenceSource) -> dict[str, Any]:
    """Run TensorFlow (checked against the oracle) once per case through `source` (the isolated
    TensorFlow, from the command line) and store the entries."""
    from conformance.cases.data import materialize

    store = GoldenStore(root)
    statuses: dict[str, int] = {}
    for case in cases:
        inputs = materialize(case)
        reference = source.reference(case, inputs)
        store.write(case, inputs, reference)
        statuses[reference.status] = statuses.get(reference.status, 0) + 1
    return {"entries": len(cases), "reference_statuses": statuses}
