"""Bounded-memory pieces of ``train`` on a large (``--stream``) data set: the lean stratified split, the
80/20 parts copied memmap to memmap, and logits kept only for the heads a caller needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from sidecar.train import bnn, cascade


def test_lean_split_is_stratified_disjoint_and_seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    y = np.repeat(np.arange(8), [7000, 1234, 999, 501, 88, 7, 3, 2])
    np.random.default_rng(5).shuffle(y)
    monkeypatch.setattr(cascade, "LEAN_SPLIT_ROWS", 100)
    tr, te = cascade.split(y, 0)
    assert len(tr) + len(te) == len(y) and not np.intersect1d(tr, te).size
    assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(len(y)))
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(te) > 0)  # sorted row numbers, as sklearn's path returns
    for c in range(8):  # every class split 80/20 (rounded), as sklearn's stratified split does
        n_c = int((y == c).sum())
        assert int((y[te] == c).sum()) == round(0.2 * n_c), c
    again, other = cascade.split(y, 0), cascade.split(y, 1)
    assert np.array_equal(again[1], te) and not np.array_equal(other[1], te)
    # small data sets keep sklearn's split (the shipped model's held-out part never moves)
    monkeypatch.setattr(cascade, "LEAN_SPLIT_ROWS", len(y))
    from sklearn.model_selection import train_test_split

    want = np.sort(train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=y)[1])
    assert np.array_equal(cascade.split(y, 0)[1], want)


def test_take_rows_copies_a_memmap_to_disk(tmp_path: Path) -> None:
    x = np.lib.format.open_memmap(tmp_path / "features.f32", mode="w+", dtype=np.float32, shape=(1000, 5))
    x[:] = np.random.default_rng(1).normal(size=(1000, 5)).astype(np.float32)
    x[3, 2] = np.nan  # missing stays missing
    idx = np.sort(np.random.default_rng(2).choice(1000, 300, replace=False))
    got = cascade.take_rows(x, idx, "train", chunk=64)
    assert isinstance(got, np.memmap) and Path(str(got.filename)).parent == tmp_path
    np.testing.assert_array_equal(np.asarray(got), np.asarray(x)[idx])
    cascade.drop_rows(got)  # its file goes once read; the source memmap stays
    assert not Path(str(got.filename)).exists() and (tmp_path / "features.f32").exists()
    cascade.drop_rows(x)
    assert (tmp_path / "features.f32").exists()
    plain = np.asarray(x).copy()  # an in-memory matrix: plain indexing, nothing written
    out = cascade.take_rows(plain, idx, "test")
    assert not isinstance(out, np.memmap) and np.array_equal(out, plain[idx], equal_nan=True)


def test_int_logits_chunked_keeps_only_the_asked_heads() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(700, 4)).astype(np.float32)
    th = bnn.fit_thermometer(X, 3)
    tower = bnn.export_tower(bnn.BNN(th.n_bits, (16, 8)), th)
    ref = bnn.int_forward(tower, X)
    both = bnn.int_logits_chunked(tower, X, chunk=64)
    only = bnn.int_logits_chunked(tower, X, chunk=64, keys=("bin_logit",))
    assert set(both) == {"bin_logit", "fam_logits"} and set(only) == {"bin_logit"}
    np.testing.assert_array_equal(both["fam_logits"], ref["fam_logits"])
    np.testing.assert_array_equal(only["bin_logit"], ref["bin_logit"])


def test_train_stream_end_to_end_leaves_no_split_copies(shared: Path, tmp_path: Path) -> None:
    """``train --stream`` on real CIC files: the memmap path (take_rows, drop_rows) trains, exports a
    model that loads, and removes its 80/20 copies; the feature memmap stays (it is the loader's cache)."""
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    for f in ("cic-ids2017-improved/Portscan_5000.csv.gz", "cic-ids2017-improved/BENIGN_5000.csv.gz"):
        (data / Path(f).name).symlink_to(shared / f)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "sidecar.cli.main", "-q", "train", "--data", str(data), "--out", str(out),
                        "--stream", "--epochs", "1", "--no-progress"], capture_output=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    feats = sorted(p.name for p in (out / "_features").iterdir())
    assert "features.f32" in feats and not [p for p in feats if p.endswith((".train.f32", ".test.f32"))], feats
    from sidecar.scorer import make_scorer

    sc = make_scorer(out / "model.onnx", "onnx")
    assert sc.meta.fam_scale is not None and sc.meta.s2_fam_scale is not None


def test_predict_in_row_blocks_equals_one_block(shared: Path) -> None:
    from sidecar.train.data import load_cic

    X, y, *_ = load_cic([shared / "cic-ids2017-improved/Portscan_5000.csv.gz",
                         shared / "cic-ids2017-improved/BENIGN_5000.csv.gz"])  # fmt: skip
    c = cascade.fit_cascade(X[::4], y[::4], seed=0, epochs=1, hidden=(16, 8))
    whole, blocks = cascade.predict(c, X, chunk=len(X)), cascade.predict(c, X, chunk=999)
    assert whole.keys() == blocks.keys() and whole["malicious"].any()
    for k in whole:
        np.testing.assert_array_equal(whole[k], blocks[k], err_msg=k)
