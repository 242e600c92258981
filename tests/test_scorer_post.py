"""Float post-processing of integer engine outputs (shared by every engine)."""

from __future__ import annotations

import numpy as np

from sidecar.engines.base import EngineOutput
from sidecar.scorer import ModelMeta, Scorer
from sidecar.verdict import STAGE_CASCADE, STAGE_SCREEN

FAMS = ["benign", "scan", "bruteforce", "dos", "ddos", "web", "infiltration", "botnet"]
META = ModelMeta(features=[], families=FAMS, bin_scale=0.1, bin_offset=0.0, s2_scale=0.1, s2_offset=0.0,
                 threshold1=0.5, threshold2=0.5)


def test_cascade_decisions() -> None:
    fam = np.zeros((4, 8), dtype=np.int32)
    fam[:, 0] = 10  # benign argmax everywhere
    fam[:, 4] = 5  # ddos is the best attack family
    fam[3, 1] = 20  # scan wins outright
    out = EngineOutput(
        bin_logit=np.array([-30, 30, 30, 30], dtype=np.int32),
        fam_logits=fam,
        stage2_logit=np.array([50, -50, 50, 50], dtype=np.int32),
    )
    s = Scorer(engine=None, meta=META, model_id="x")  # type: ignore[arg-type]
    p1, p2, mal, cls, stage = s.post(out)
    assert mal.tolist() == [False, False, True, True]  # row 1: stage 2 vetoes the screen
    assert cls.tolist() == ["benign", "benign", "ddos", "scan"]  # flagged + benign argmax -> best attack
    assert stage.tolist() == [STAGE_SCREEN, STAGE_CASCADE, STAGE_CASCADE, STAGE_CASCADE]
    assert np.isnan(p2[0]) and not np.isnan(p2[1])
    assert np.all((p1 >= 0) & (p1 <= 1))


def test_both_members_name_the_family() -> None:
    """With the member's family head (``fam2_logits``) and both scales, a flagged flow's family is the
    argmax of ``fam * fam_scale + fam2 * s2_fam_scale``; without either scale it is stage 1's own."""
    from dataclasses import replace

    fam = np.zeros((3, 8), dtype=np.int32)
    fam2 = np.zeros((3, 8), dtype=np.int32)
    fam[:, 3], fam[:, 4] = 10, 8  # stage 1: dos over ddos
    fam2[0, 4] = 10  # row 0: the member says ddos firmly -> the sum says ddos (10*1 + 0 vs 8*1 + 10*0.5)
    fam2[1, 4] = 2  # row 1: a weak vote -> dos stays (10 vs 8 + 1)
    fam2[2, 0] = 40  # row 2: the member says benign -> the sum's best attack family names it
    out = EngineOutput(bin_logit=np.full(3, 30, np.int32), fam_logits=fam, stage2_logit=np.full(3, 50, np.int32),
                       fam2_logits=fam2)
    meta = replace(META, fam_scale=1.0, s2_fam_scale=0.5)
    _, _, mal, cls, _ = Scorer(engine=None, meta=meta, model_id="x").post(out)  # type: ignore[arg-type]
    assert mal.all() and cls.tolist() == ["ddos", "dos", "dos"]
    # family agreement reads the same sum: row 2's sum says benign (20 > 10), so it is vetoed
    agree = Scorer(engine=None, meta=meta, model_id="x", family_agreement=True)  # type: ignore[arg-type]
    assert agree.post(out)[2].tolist() == [True, True, False]
    # a model without the member's head (or its scales) names by stage 1 alone
    for m, o in ((META, out), (meta, replace(out, fam2_logits=None))):
        assert Scorer(engine=None, meta=m, model_id="x").post(o)[3].tolist() == ["dos"] * 3  # type: ignore[arg-type]
