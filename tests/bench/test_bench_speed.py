"""pytest-benchmark suite: the same paths as ``bnn-sidecar bench``.

CI runs it with ``--benchmark-disable`` (pyproject addopts): every benchmark body
then runs once, so the suite stays fast but still executes and checks its result.
Measure with::

    .venv/bin/pytest tests/bench --benchmark-enable --benchmark-only -p no:cacheprovider

Nothing here asserts a speed; the assertions check that each timed call did its work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sidecar.bench.common import MODEL, Input, count_records, default_inputs, hot_inputs, reader
from sidecar.bench.e2e import NullSink, pipeline
from sidecar.bench.features import real_batch
from sidecar.bench.model import real_features
from sidecar.bench.parse import ceiling
from sidecar.engines.load import load_engine
from sidecar.features.schema import FEATURE_NAMES, extract

INPUTS = {i.fmt: i for i in hot_inputs(default_inputs())}
RECORDS = 20_000


@pytest.fixture(scope="module")
def inputs() -> dict[str, Input]:
    assert set(INPUTS) == {"zeek-tsv", "zeek-json", "eve"}
    return INPUTS


@pytest.mark.parametrize("fmt", ["zeek-tsv", "zeek-json", "eve"])
def test_reader(benchmark: Any, inputs: dict[str, Input], fmt: str) -> None:
    stream = inputs[fmt].stream(RECORDS)
    n = benchmark(count_records, reader(fmt), stream)
    assert n >= RECORDS * (0.6 if fmt == "eve" else 1.0)  # eve: ~70 % of lines are flows


@pytest.mark.parametrize("fmt", ["zeek-json", "eve"])
def test_orjson_ceiling(benchmark: Any, inputs: dict[str, Input], fmt: str) -> None:
    stream = inputs[fmt].stream(RECORDS)
    assert benchmark(ceiling, stream) == len(stream)


@pytest.mark.parametrize("fmt", ["zeek-tsv", "eve"])
@pytest.mark.parametrize("batch", [1, 8, 1024])
def test_features(benchmark: Any, inputs: dict[str, Input], fmt: str, batch: int) -> None:
    b = real_batch(inputs[fmt], batch).take(np.arange(batch))
    x = benchmark(extract, b)
    assert x.shape == (batch, len(FEATURE_NAMES)) and x.dtype == np.float32


@pytest.fixture(scope="module")
def features(inputs: dict[str, Input]) -> np.ndarray:
    return real_features(list(inputs.values()), 8192)


@pytest.mark.parametrize("kind", ["onnx", "numpy"])
@pytest.mark.parametrize("batch", [1, 64, 1024])
def test_model(benchmark: Any, features: np.ndarray, kind: str, batch: int) -> None:
    eng = load_engine(MODEL, kind)
    x = np.ascontiguousarray(features[:batch])
    out = benchmark(eng.run, x)
    assert out.bin_logit.shape == (batch,) and out.fam_logits.shape[0] == batch


@pytest.mark.parametrize("kind", ["onnx", "numpy"])
@pytest.mark.parametrize("fmt", ["zeek-tsv", "eve"])
def test_e2e(benchmark: Any, inputs: dict[str, Input], kind: str, fmt: str) -> None:
    from sidecar.scorer import make_scorer

    scorer = make_scorer(Path(MODEL), kind)
    stream = inputs[fmt].stream(RECORDS)
    sink = NullSink()
    n = benchmark(pipeline, reader(fmt), stream, scorer, sink.write)
    assert n > 0 and sink.bytes > n * 100  # one JSON verdict line per flow
