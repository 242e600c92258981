"""Stage 2 (stacked BNN) on real CIC rows: exact export within the graph contract.

A small cascade is trained on two real CIC files; the exported ``s2`` tower must
(1) keep every layer but the score layer ±1, (2) recompute stage 1's score bits exactly,
(3) match torch's eval-mode stage 2 in sign, and (4) give bit-identical integers in
onnxruntime and the numpy engine.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from sidecar.engines.load import load_engine  # noqa: E402
from sidecar.engines.pack import load_pack, pack_onnx  # noqa: E402
from sidecar.engines.reuse import plan_residual  # noqa: E402
from sidecar.train import bnn, cascade, stage2  # noqa: E402
from sidecar.train.data import load_cic  # noqa: E402

FILES = ("cic-ids2018/SQL Injection.csv.gz", "cic-ids2017-improved/Portscan_5000.csv.gz",
         "cic-ids2017-improved/BENIGN_5000.csv.gz")


@pytest.fixture(scope="module")
def trained(shared: Path) -> tuple[cascade.Cascade, np.ndarray, np.ndarray]:
    X, y, *_ = load_cic([shared / f for f in FILES])
    # keep it fast: every 3rd row
    X, y = X[::3], y[::3]
    c = cascade.fit_cascade(X, y, seed=0, epochs=2, s2_epochs=2, hidden=(32, 16), s2_hidden=(8, 8, 4),
                            stage2_kind="stacked")
    return c, X, y


def test_s2_layers_are_pm1_except_score_layer(trained: tuple[Any, ...]) -> None:
    c, _, _ = trained
    layers = c.towers["s2"]["layers"]
    assert len(layers) == 4
    for i, (W, T) in enumerate(layers):
        assert W.dtype == np.int8 and T.dtype == np.int32 and T.shape == (W.shape[1],)
        if i != 2:
            assert set(np.unique(W).tolist()) <= {-1, 1}, i
    W2 = layers[2][0]
    assert (W2 == 0).any() and np.abs(W2).max() <= 127  # the int8 score layer (exact int matmul path)


def test_s2_recomputes_stage1_score_bits_exactly(trained: tuple[Any, ...]) -> None:
    c, X, _ = trained
    s1, s2 = c.towers["s1"], c.towers["s2"]
    h = bnn.int_forward(s2, X)["hidden"]
    ref = bnn.int_forward(s1, X)
    n1, n2 = (W.shape[1] for W, _ in s1["layers"])
    # the stage-1 columns inside s2 equal stage 1's hidden bits
    assert np.array_equal(h[0][:, :n1], ref["hidden"][0])
    assert np.array_equal(h[1][:, :n2], ref["hidden"][1])
    # and its first S units of layer 2 are the score bits of stage 1's logit
    thr = s2["layers"][2][1][: np.count_nonzero(s2["layers"][2][0][:n2].any(axis=0))] + int(s1["bbin"][0])
    S = len(thr)
    assert S >= 1
    assert np.array_equal(h[2][:, :S], (ref["bin_logit"][:, None] >= thr[None, :]).astype(np.int32))
    assert c.info["s2_sign_agreement"] >= 0.99


def test_cascade_engines_bit_identical(trained: tuple[Any, ...], tmp_path: Path) -> None:
    c, X, y = trained
    blob = cascade.export_onnx(c, tmp_path, {"seed": 0}, bnn.data_digest(X, y))
    assert cascade.onnx_check(blob, c, X) == {"rows": len(X), "bin_equal": True, "fam_equal": True, "s2_equal": True}
    model = tmp_path / "model.onnx"
    assert (tmp_path / "model.onnx.sha256").read_text().split()[0] == hashlib.sha256(blob).hexdigest()
    pack_onnx(model, tmp_path / "model.bnnpack.npz")
    # the engines do not recompute stage 1 inside s2: the residual plan reads most of it from stage 1
    p = load_pack(tmp_path / "model.bnnpack.npz")
    res = plan_residual(p)
    s2_bits = len(p["s2.thermo_feat"]) + len(p["s2.nan_feat"])
    s2_units = sum(int(p[f"s2.T{i}"].shape[0]) for i in range(int(p["s2.n_layers"])))
    new_units = sum(int(st.thr.shape[0]) for st in res.layers if st.thr is not None)
    assert res.s1_levels and res.n_bits() < s2_bits / 2 and new_units < s2_units / 2
    a = load_engine(model, "onnx").run(X)
    b = load_engine(model, "numpy").run(X)
    for k in ("bin_logit", "fam_logits", "stage2_logit"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    # scorer semantics: what predict() reports is what the engine output gives
    pr = cascade.predict(c, X)
    mm = c.model_meta()
    pe = cascade.post(a, mm)
    assert np.array_equal(pr["malicious"], pe["malicious"]) and np.array_equal(pr["family"], pe["family"])
    meta = json.loads(json.dumps(load_engine(model, "numpy").metadata()))
    assert float(meta["bnn.threshold1"]) == pytest.approx(cascade.THRESHOLD1)


def test_stage2_only_vetoes() -> None:
    # malicious needs the screen: a flow below threshold1 is never malicious whatever stage 2 says
    from sidecar.engines.base import EngineOutput
    from sidecar.scorer import ModelMeta

    mm = ModelMeta([], ["benign", "scan"], 1.0, 0.0, 1.0, 0.0, 0.5, 0.5)
    out = EngineOutput(
        bin_logit=np.array([-3, -3, 3, 3], np.int32),
        fam_logits=np.array([[0, 1]] * 4, np.int32),
        stage2_logit=np.array([-3, 3, -3, 3], np.int32),
    )
    pr = cascade.post(out, mm)
    assert pr["screen"].tolist() == [0, 0, 1, 1]
    assert pr["malicious"].tolist() == [0, 0, 0, 1]
    assert np.all(pr["cascade_score"][:2] < 0.5) and np.all(pr["cascade_score"][2:] >= 1.0)


def test_calibrate_offset_minimises_errors() -> None:
    logit = np.array([-5, -4, -1, 0, 2, 3, 4, 6])
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    off = stage2.calibrate_offset(logit, 1.0, y)
    pred = logit + off >= 0
    assert np.array_equal(pred, y == 1)
    # all-positive rows: veto nothing
    off = stage2.calibrate_offset(np.array([-3, 1, 2]), 0.5, np.array([1, 1, 1]))
    assert np.all(np.array([-3, 1, 2]) * 0.5 + off >= 0)
