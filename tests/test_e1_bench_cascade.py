"""pytest-benchmark cases for what the scorer really runs: ``engine.run_cascade(x, scorer.screen)``.

Like tests/bench/test_bench_speed.py (whose ``test_model`` times ``engine.run``): with the
project's ``--benchmark-disable`` each body runs once and its result is checked; measure with
``--benchmark-enable --benchmark-only``. Nothing here asserts a speed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sidecar.bench.common import MODEL, default_inputs, hot_inputs
from sidecar.bench.model import real_features
from sidecar.scorer import Scorer, make_scorer


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    return real_features(hot_inputs(default_inputs()), 8192)


@pytest.fixture(scope="module", params=["onnx", "numpy"])
def scorer(request: pytest.FixtureRequest) -> Scorer:
    return make_scorer(Path(MODEL), request.param)


@pytest.mark.parametrize("batch", [1, 64, 1024])
def test_model_cascade(benchmark: Any, features: np.ndarray, scorer: Scorer, batch: int) -> None:
    x = np.ascontiguousarray(features[:batch])
    out = benchmark(scorer.engine.run_cascade, x, scorer.screen)  # type: ignore[attr-defined]
    full = scorer.engine.run(x)
    flagged = scorer.screen(full.bin_logit)
    assert np.array_equal(out.bin_logit, full.bin_logit)
    assert np.array_equal(out.stage2_logit[flagged], full.stage2_logit[flagged]) and not out.stage2_logit[~flagged].any()
