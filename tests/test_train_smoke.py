"""Smoke tests for sidecar.train: CIC loading and exact BN folding of the BNN."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sidecar.features.labels import FAMILIES  # noqa: E402
from sidecar.features.schema import FEATURE_NAMES  # noqa: E402
from sidecar.train import bnn  # noqa: E402
from sidecar.train.data import load_cic  # noqa: E402

SQLI = Path("/work/shared/data/cic-ids2018/SQL Injection.csv.gz")
needs_data = pytest.mark.skipif(not SQLI.exists(), reason="CIC sample data not present")


@pytest.fixture(scope="module")
def sqli() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], dict]:
    return load_cic([SQLI])


@needs_data
def test_load_cic_small_file(sqli: tuple) -> None:
    X, y, yb, names, rep = sqli
    # README of the data set: 286 rows = Benign 199 + SQL Injection 87
    by_label = {r["label"]: r for r in rep["table"]}
    assert by_label["Benign"]["read"] == 199 and by_label["Benign"]["kept"] == 199
    assert by_label["SQL Injection"]["read"] == 87 and by_label["SQL Injection"]["family"] == "web"
    assert rep["rows_kept_before_dedup"] == 286 and rep["unknown_dropped"] == 0
    assert rep["rows"] == 286 - rep["duplicates_removed"] == len(y)
    assert rep["duplicates_removed"] >= 3  # README: 3 exact duplicate CSV rows
    assert X.dtype == np.float32 and X.shape == (len(y), len(FEATURE_NAMES)) and names == list(FEATURE_NAMES)
    assert y.dtype == np.int64 and set(np.unique(y)) <= {0, FAMILIES.index("web")}
    assert np.array_equal(yb, (y != 0).astype(np.int64))
    # no duplicate (features, label) rows remain
    key = np.concatenate([X.view(np.uint32), y[:, None].astype(np.uint32)], axis=1)
    assert len(np.unique(key, axis=0)) == len(y)


def _check_tower(model: bnn.BNN, tower: dict, X: np.ndarray) -> None:
    for W, T in tower["layers"]:
        assert W.dtype == np.int8 and set(np.unique(W)) <= {-1, 1}
        assert T.dtype == np.int32 and T.shape == (W.shape[1],)
    assert tower["Wbin"].dtype == np.int8 and tower["bbin"].dtype == np.int32
    assert tower["Wfam"].dtype == np.int8 and tower["Wfam"].shape[1] == len(FAMILIES)
    v = bnn.verify_folding(model, tower, X)
    assert v["exact"], v
    # quantised heads track the float heads
    th = bnn.Thermometer(tower["thermo_feat"], tower["thermo_thr"], tower["nan_feat"])
    with torch.no_grad():
        lb, _ = model(torch.from_numpy(th.bits(X).astype(np.float32)))
    approx = bnn.int_forward(tower, X)["bin_logit"] * tower["bin_scale"]
    assert np.allclose(approx, lb.numpy(), atol=0.05 * (1 + np.abs(lb.numpy()).max()))


@needs_data
def test_bn_folding_matches_torch(sqli: tuple) -> None:
    X, y, *_ = sqli
    th = bnn.fit_thermometer(X)
    assert th.thermo_thr.dtype == np.float32 and np.all(np.bincount(th.thermo_feat) <= bnn.N_THRESH)
    bits = th.bits(X)
    assert bits.dtype == np.uint8 and bits.shape[1] == th.n_bits
    model = bnn.train_model(bits, y, seed=0, epochs=1, hidden=(32, 16), batch_size=64)
    _check_tower(model, bnn.export_tower(model, th), X)
    # force negative / zero gammas to exercise the column flip and the constant-unit paths
    with torch.no_grad():
        for bn_ in model.bns:
            bn_.weight[::3] *= -1
            bn_.weight[1] = 0.0
    _check_tower(model, bnn.export_tower(model, th), X)


def test_thermometer_nan_gives_zero_bits() -> None:
    X = np.array([[0.0, 1.0], [1.0, np.nan], [2.0, 3.0], [3.0, 5.0]], dtype=np.float32)
    th = bnn.fit_thermometer(X)
    b = th.bits(X)
    nan_row = b[1]
    assert nan_row[: len(th.thermo_feat)][th.thermo_feat == 1].sum() == 0
    assert nan_row[len(th.thermo_feat) + 1] == 1 and b[0, len(th.thermo_feat) + 1] == 0
