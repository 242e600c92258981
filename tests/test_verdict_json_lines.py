"""``VerdictBatch.json_lines`` (msgspec struct + ``encode_lines``) is byte for byte the orjson
dict-per-row output of ``iter_json`` on real records of every format, with and without msgspec."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sidecar import verdict
from sidecar.jsonlines import json_lines
from sidecar.scorer import make_scorer
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "sidecar" / "data" / "model" / "bnn.onnx"
SAMPLES = REPO / "sidecar" / "data" / "samples"


def _batches(shared: Path) -> list[object]:
    paths = [p for p in sorted(SAMPLES.iterdir()) if p.suffix != ".md"]
    paths += [shared / "cic-ids2018" / "Brute Force -XSS.csv.gz"]
    out = []
    logging.disable(logging.WARNING)
    try:
        for p in paths:
            out += list(read_path(p, "auto", ReadStats(), batch_size=777))
    finally:
        logging.disable(logging.NOTSET)
    return out


def test_json_lines_equals_iter_json(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scorer = make_scorer(MODEL, "onnx")
    verdicts = [scorer.score(b) for b in _batches(shared)]  # type: ignore[arg-type]
    assert sum(len(v) for v in verdicts) > 4000 and any(v.malicious.any() for v in verdicts)
    want = [json_lines(v.iter_json()) for v in verdicts]
    assert verdict._ROW is not None  # msgspec installed: the struct path is the one tested here
    assert [v.json_lines() for v in verdicts] == want
    assert verdicts[0].take(verdicts[0].malicious & False).json_lines() == b""  # empty batch
    monkeypatch.setattr(verdict, "_ROW", None)  # an install without msgspec: the orjson path
    assert [v.json_lines() for v in verdicts] == want
