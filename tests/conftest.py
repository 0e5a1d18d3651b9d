from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BANK = REPO / "cases"

SMALL_CASE = """
cases:
  - input: [1, 6, 5, 3]
    kernel: [3, 3]
    channel_multiplier: 2
    out_channels: 4
    padding: SAME
    strides: [2, 1]
"""


@pytest.fixture
def case_file(tmp_path: Path) -> Callable[..., Path]:
    """Write YAML text (dedented) to a case file and return its path."""
    def write(text: str, name: str = "cases.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path
    return write
