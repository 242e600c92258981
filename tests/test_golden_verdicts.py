"""Both engines write exactly the golden ``score`` output on real fixtures (tests/golden_verdicts.py)."""

from __future__ import annotations

import pytest
from golden_flows import CASES
from golden_verdicts import GOLDEN, render


@pytest.mark.parametrize("engine", ["onnx", "numpy"])
@pytest.mark.parametrize(("name", "rel", "fmt"), CASES, ids=[c[0] for c in CASES])
def test_score_output_matches_golden(name: str, rel: str, fmt: str, engine: str, shared: object) -> None:
    want = (GOLDEN / f"{name}.jsonl").read_bytes()
    got = render(rel, fmt, engine)
    assert got.count(b"\n") == want.count(b"\n") > 0
    assert got == want
