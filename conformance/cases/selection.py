"""Which cases a run draws from and takes: the bundled bank, the bank's digest, and shards."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from conformance.cases.case import Case


def default_bank() -> Path:
    """The bundled bank: packaged as conformance/bank in a wheel, the repo's cases/ in a checkout."""
    package = Path(__file__).resolve().parent.parent
    packaged = package / "bank"
    return packaged if packaged.is_dir() else package.parent / "cases"


def bank_digest(cases: list[Case]) -> str:
    """Identifies the whole bank a run drew from (before -k, --id and --shard): shards of one bank agree."""
    text = "\n".join(sorted(json.dumps(c.parameters() | {"origin": None}, sort_keys=True) for c in cases))
    return hashlib.sha256(text.encode()).hexdigest()


class ShardError(ValueError):
    """A --shard value that is not K/N with 1 <= K <= N."""


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'K/N' -> (K, N) with 1 <= K <= N; raises ShardError otherwise."""
    if text is None:
        return None
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise ShardError(f"--shard {text[:40]!r}: expected K/N with 1 <= K <= N, e.g. 2/4")
    return int(k), int(n)


def in_shard(case_id: str, shard: tuple[int, int] | None) -> bool:
    """Stable across machines, Python versions and bank edits: depends on the id alone."""
    if shard is None:
        return True
    k, n = shard
    return int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "big") % n == k - 1
