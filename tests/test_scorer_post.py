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
