"""Golden ``bnn-sidecar score`` output (verdict JSON lines) of the shipped model on real fixtures.

The same fixtures as :mod:`golden_flows`; the output is what ``score`` writes (one verdict per flow,
``sidecar.jsonlines.score_to_json_lines``). Regenerate after an intended model or scoring change with::

    .venv/bin/python tests/golden_verdicts.py

and review the diff of ``tests/golden/verdicts/*.jsonl`` like code (a new shipped model changes the
``model`` field of every line and the scores).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from golden_flows import CASES, SHARED  # noqa: E402

GOLDEN = REPO / "tests" / "golden" / "verdicts"
MODEL = REPO / "sidecar" / "data" / "model" / "bnn.onnx"


def render(rel: str, fmt: str, engine: str = "onnx") -> bytes:
    from sidecar.jsonlines import score_to_json_lines
    from sidecar.scorer import make_scorer
    from sidecar.sources.base import ReadStats
    from sidecar.sources.detect import read_path

    out = io.BytesIO()
    score_to_json_lines(read_path(SHARED / rel, fmt, ReadStats()), make_scorer(MODEL, engine), out.write)
    return out.getvalue()


def main() -> int:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, rel, fmt in CASES:
        (GOLDEN / f"{name}.jsonl").write_bytes(render(rel, fmt))
        print(f"wrote tests/golden/verdicts/{name}.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
