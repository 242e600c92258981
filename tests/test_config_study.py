"""``scripts/config_study.py`` helpers (the training-configuration study in the model card) on real CIC rows."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from script_loader import load_script

REPO = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    pytest.importorskip("torch")
    return load_script("scripts/config_study.py")


@pytest.fixture(scope="module")
def rows(shared: Path) -> tuple[np.ndarray, np.ndarray]:
    from sidecar.features.labels import FAMILIES, family
    from sidecar.features.schema import extract
    from sidecar.flow import FlowBatch
    from sidecar.sources.base import ReadStats
    from sidecar.sources.detect import read_path

    files = sorted((shared / "cic-ids2018").glob("*.csv.gz"))
    b = FlowBatch.concat([x for p in files for x in read_path(p, "cic-csv", ReadStats(), batch_size=65536)])
    assert b.label is not None
    fams = [family(x) for x in b.label.tolist()]
    keep = np.array([f is not None for f in fams])
    y = np.array([FAMILIES.index(str(f)) for f in fams if f is not None], dtype=np.int64)
    return extract(b)[keep], y


def test_repeat_benign_copies_only_benign_rows(rows: tuple[np.ndarray, np.ndarray]) -> None:
    cs = _load()
    X, y = rows
    assert (y == 0).any() and (y != 0).any()
    X3, y3 = cs.repeat_benign(X, y, 3)
    assert (y3 == 0).sum() == 3 * (y == 0).sum() and (y3 != 0).sum() == (y != 0).sum()
    np.testing.assert_array_equal(X3[: len(y)], X)  # the original rows first, in order
    assert set(cs.BENIGN_REPEAT) <= set(cs.CONFIGS)


def test_port_debias_reaches_the_share_or_the_cap(rows: tuple[np.ndarray, np.ndarray]) -> None:
    cs = _load()
    X, y = rows
    Xd, yd = cs.port_debias(X, y, share=0.25, cap=50)
    port = np.rint(np.expm1(Xd[:, cs.PORT]))
    g = port == 80
    before = np.rint(np.expm1(X[:, cs.PORT])) == 80
    assert (yd[g] != 0).sum() == (y[before] != 0).sum()  # attacks are never copied
    share = float((yd[g] == 0).mean())
    assert share >= 0.25 or (yd[g] == 0).sum() == 50 * (y[before] == 0).sum()
