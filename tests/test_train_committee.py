"""Stage 2 as a committee member (the shipped default) on real CIC rows.

The member is the stage-1 recipe from another init seed, exported as contract tower ``s2``; a flow
is malicious only when both BNNs' screens flag it, and both engines give the same integers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from sidecar.engines.load import load_engine
from sidecar.engines.pack import pack_onnx
from sidecar.scorer import Scorer
from sidecar.train import bnn, cascade
from sidecar.train.data import load_cic

FILES = ("cic-ids2018/SQL Injection.csv.gz", "cic-ids2017-improved/Portscan_5000.csv.gz",
         "cic-ids2017-improved/BENIGN_5000.csv.gz")


@pytest.fixture(scope="module")
def data(shared: Path) -> tuple[np.ndarray, np.ndarray]:
    X, y, *_ = load_cic([shared / f for f in FILES])
    return X[::3], y[::3]


@pytest.fixture(scope="module")
def committee(data: tuple[np.ndarray, np.ndarray]) -> cascade.Cascade:
    X, y = data
    return cascade.fit_cascade(X, y, seed=0, epochs=2, hidden=(32, 16))


def test_member_is_the_stage1_recipe_from_the_next_seed(committee: cascade.Cascade, data: Any) -> None:
    X, y = data
    s1, s2 = committee.towers["s1"], committee.towers["s2"]
    assert len(s2["layers"]) == 2
    for W, T in s2["layers"]:
        assert W.dtype == np.int8 and set(np.unique(W).tolist()) <= {-1, 1} and T.dtype == np.int32
    for k in ("thermo_feat", "thermo_thr", "nan_feat"):
        assert np.array_equal(s1[k], s2[k])
    # an independent fit from seed 1 has, as its stage 1, exactly the member of the seed-0 committee
    other = cascade.fit_cascade(X, y, seed=cascade.COMMITTEE_SEED, epochs=2, hidden=(32, 16))
    for (Wa, Ta), (Wb, Tb) in zip(other.towers["s1"]["layers"], s2["layers"], strict=True):
        assert np.array_equal(Wa, Wb) and np.array_equal(Ta, Tb)
    assert np.array_equal(other.towers["s1"]["Wbin"], s2["Ws2"])
    # ... and its family head too (the committee's second family vote)
    assert np.array_equal(other.towers["s1"]["Wfam"], s2["Wfam"]) and np.array_equal(other.towers["s1"]["bfam"], s2["bfam"])
    assert not np.array_equal(s1["layers"][0][0], s2["layers"][0][0])


def test_malicious_means_both_screens_flag(committee: cascade.Cascade, data: Any) -> None:
    X, _ = data
    pr = cascade.predict(committee, X)
    z = np.log(cascade.THRESHOLD1 / (1 - cascade.THRESHOLD1))
    l1 = bnn.int_forward(committee.towers["s1"], X)["bin_logit"] * committee.towers["s1"]["bin_scale"]
    l2 = bnn.int_forward(committee.towers["s2"], X)["bin_logit"] * committee.towers["s2"]["s2_scale"]
    both = (l1 >= z) & (l2 >= z)
    assert np.array_equal(pr["malicious"].astype(bool), both)
    assert np.array_equal(pr["screen"].astype(bool), l1 >= z)
    # the member disagrees somewhere (else stage 2 would be a copy) and vetoes only: never adds a flag
    assert (pr["screen"].astype(bool) & ~both).any() and not (both & ~pr["screen"].astype(bool)).any()


def test_engines_bit_identical(committee: cascade.Cascade, data: Any, tmp_path: Path) -> None:
    X, y = data
    blob = cascade.export_onnx(committee, tmp_path, {"seed": 0}, bnn.data_digest(X, y))
    assert cascade.onnx_check(blob, committee, X) == {"rows": len(X), "bin_equal": True, "fam_equal": True,
                                                      "s2_equal": True, "fam2_equal": True}
    model = tmp_path / "model.onnx"
    pack_onnx(model, tmp_path / "model.bnnpack.npz")
    a, b = load_engine(model, "onnx"), load_engine(model, "numpy")
    ref = bnn.int_forward(committee.towers["s2"], X)["fam_logits"]
    for k in ("bin_logit", "fam_logits", "stage2_logit", "fam2_logits"):
        np.testing.assert_array_equal(getattr(a.run(X), k), getattr(b.run(X), k))
    np.testing.assert_array_equal(a.run(X).fam2_logits, ref)
    # the cascade paths (stage 2 on flagged rows only) carry the member's family logits on those rows
    sc = Scorer(a, committee.model_meta(), "t")
    for eng in (a, b):
        for n in (1, 7, 64, len(X)):
            out = eng.run_cascade(X[:n], sc.screen)
            flagged = sc.screen(out.bin_logit)
            assert out.fam2_logits is not None and np.array_equal(out.fam2_logits[flagged], ref[:n][flagged])
            assert not out.fam2_logits[~flagged].any()
    pe = cascade.post(a.run(X), committee.model_meta())
    pr = cascade.predict(committee, X)
    assert np.array_equal(pe["malicious"], pr["malicious"]) and np.array_equal(pe["family"], pr["family"])
    assert b.metadata()["bnn.stage2"] == "committee"


def test_family_is_named_by_both_members(committee: cascade.Cascade, data: Any) -> None:
    """A flagged flow's family: argmax of stage 1's family logits times ``bnn.fam_scale`` plus the
    member's times ``bnn.s2_fam_scale`` (the best attack family if that sum says benign)."""
    X, _ = data
    mm = committee.model_meta()
    assert mm.fam_scale == committee.towers["s1"]["fam_scale"] and mm.s2_fam_scale == committee.towers["s2"]["fam_scale"]
    f1 = bnn.int_forward(committee.towers["s1"], X)["fam_logits"]
    f2 = bnn.int_forward(committee.towers["s2"], X)["fam_logits"]
    both = f1 * mm.fam_scale + f2 * mm.s2_fam_scale
    pr = cascade.predict(committee, X)
    mal = pr["malicious"].astype(bool)
    want = np.where(both.argmax(1) == 0, both[:, 1:].argmax(1) + 1, both.argmax(1))
    assert mal.any() and np.array_equal(pr["family"][mal], want[mal]) and not pr["family"][~mal].any()
    # without the member's vote (a model that has none) the family is stage 1's own
    from dataclasses import replace

    from sidecar.engines.base import EngineOutput

    out = EngineOutput(bin_logit=bnn.int_forward(committee.towers["s1"], X)["bin_logit"].astype(np.int32),
                       fam_logits=f1.astype(np.int32),
                       stage2_logit=bnn.int_forward(committee.towers["s2"], X)["bin_logit"].astype(np.int32))
    alone = cascade.post(out, replace(mm, fam_scale=None, s2_fam_scale=None))
    want1 = np.where(f1.argmax(1) == 0, f1[:, 1:].argmax(1) + 1, f1.argmax(1))
    assert np.array_equal(alone["family"][mal], want1[mal])


def test_unknown_stage2_kind_is_refused(data: Any) -> None:
    X, y = data
    with pytest.raises(ValueError, match="stage2_kind"):
        cascade.fit_cascade(X[:10], y[:10], stage2_kind="boosted")


def test_cli_default_thermometer_steps_is_the_training_default() -> None:
    from sidecar.cli.train import bnn_n_thresh

    assert bnn_n_thresh() == bnn.N_THRESH
