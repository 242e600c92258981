"""Readers reproduce the committed golden outputs on real fixtures (see tests/golden_flows.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_flows import CASES, GOLDEN, render


@pytest.mark.parametrize(("name", "rel", "fmt"), CASES, ids=[c[0] for c in CASES])
def test_golden(shared: Path, name: str, rel: str, fmt: str) -> None:
    want = (GOLDEN / f"{name}.jsonl").read_bytes()
    got = render(rel, fmt)
    assert got == want, f"{name} differs from its golden file; regenerate with tests/golden_flows.py and review"
