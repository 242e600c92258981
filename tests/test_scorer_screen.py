"""The scorer's screen lookup table gives exactly the float test it replaces, for both engines."""

from __future__ import annotations

import numpy as np
import pytest

from sidecar.features.schema import extract
from sidecar.scorer import make_scorer
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path
from sidecar.verdict import STAGE_CASCADE

MODEL = "sidecar/data/model/bnn.onnx"


@pytest.mark.parametrize("engine", ["onnx", "numpy"])
def test_screen_table_equals_float_screen(engine: str) -> None:
    sc = make_scorer(MODEL, engine)
    lut = sc._screen_table()
    assert lut is not None, "the shipped model's engines report their bin_logit range"
    lo, table = lut
    hi = lo + len(table) - 1
    every = np.arange(lo - 50, hi + 51, dtype=np.int32)  # the whole range plus values outside it
    assert np.array_equal(sc.screen(every), sc._screen_float(every))
    inside = every[(every >= lo) & (every <= hi)]
    assert np.array_equal(sc.screen(inside), table[inside - lo])
    assert 0 < table.sum() < len(table)  # the threshold falls inside the range
    assert sc.screen(np.zeros(0, np.int32)).shape == (0,)


def test_verdict_stage_follows_the_table() -> None:
    sc = make_scorer(MODEL, "numpy")
    batch = next(iter(read_path("sidecar/data/samples/ctu-sme-11.conn.log.labeled.gz", "auto", ReadStats(), 4096)))
    v = sc.score(batch)
    logit = sc.engine.run(extract(batch)).bin_logit
    flagged = sc._screen_float(logit)
    assert 0 < flagged.sum() < len(flagged)
    assert np.array_equal(np.asarray(v.stage) == STAGE_CASCADE, flagged)
