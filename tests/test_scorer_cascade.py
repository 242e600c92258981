"""The numpy engine's ``run_cascade`` (stage 2 only on screen-flagged rows) gives the same verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sidecar.features.schema import extract
from sidecar.scorer import make_scorer
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sidecar" / "data" / "samples"


def test_cascade_skip_gives_identical_verdicts() -> None:
    numpy_sc = make_scorer(REPO / "sidecar" / "data" / "model" / "bnn.onnx", "numpy")
    onnx_sc = make_scorer(REPO / "sidecar" / "data" / "model" / "bnn.onnx", "onnx")
    assert hasattr(numpy_sc.engine, "run_cascade")
    n_flagged = n_total = 0
    for path in sorted(SAMPLES.glob("*.*")):
        if path.suffix == ".md":
            continue
        for batch in read_path(path, "auto", ReadStats(), batch_size=700):
            fast = numpy_sc.score(batch)  # stage 2 only where the screen flags
            ref = onnx_sc.score(batch)  # onnxruntime computes stage 2 for every row
            full = numpy_sc.post(numpy_sc.engine.run(extract(batch)))  # numpy, every row
            for a, b in ((fast.score, ref.score), (fast.malicious, ref.malicious), (fast.cls, ref.cls),
                         (fast.stage, ref.stage)):
                assert np.array_equal(a, b)
            assert np.array_equal(fast.score2, ref.score2, equal_nan=True)
            assert np.array_equal(full[1], fast.score2, equal_nan=True)
            n_flagged += int((fast.stage == 2).sum())
            n_total += len(batch)
    assert 0 < n_flagged < n_total  # both paths (skipped and computed) were exercised
