"""scripts/operating_points.py: the committed table (models/report/operating-points.json) is what the
script measures now, checked on the lab's eve records (the fast part) and on the CIC held-out rows."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from script_loader import load_script

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "models" / "report" / "operating-points.json"


def _load() -> ModuleType:
    return load_script("scripts/operating_points.py")


def test_committed_lab_figures_are_regenerated_exactly() -> None:
    op = _load()
    lab = [ls for ls in op.load_lab(op.LAB_DIR) if ls.source == "eve"]
    committed = json.loads(COMMITTED.read_text())["rows"]
    assert len(committed) == 2 * len(op.THRESHOLDS)
    for row in committed:
        scorer = op.make_scorer(op.MODEL, "onnx", None, row["threshold"], row["family_agreement"])
        assert op.lab_figures(scorer, lab) == row["lab_eve"], (row["threshold"], row["family_agreement"])
    # family agreement only removes flags: never more benign flagged, never more attacks found
    by = {(r["threshold"], r["family_agreement"]): r for r in committed}
    for thr in op.THRESHOLDS:
        off, on = by[(thr, False)], by[(thr, True)]
        for cap, cell in on["lab_eve"].items():
            assert cell["flagged"] <= off["lab_eve"][cap]["flagged"]
        assert on["zeek"]["benign"]["flagged"] <= off["zeek"]["benign"]["flagged"]
    # and it is not vacuous: the lab's benign FPR falls (0.213 -> 0.168 measured)
    assert by[(None, True)]["lab_eve"]["benign"]["flagged"] < by[(None, False)]["lab_eve"]["benign"]["flagged"]


def test_committed_cic_heldout_figures_match_the_split() -> None:
    op = _load()
    t = op.load_table(op.default_paths(op.shared_dir()))
    _tr, te = op.cascade.split(t.y, 0)
    committed = json.loads(COMMITTED.read_text())["rows"]
    for row in committed[:: len(op.THRESHOLDS)]:  # the model's own threshold, agreement off and on
        scorer = op.make_scorer(op.MODEL, "onnx", op.RateRule(0), row["threshold"], row["family_agreement"], op.GuessRule(0))
        assert op._cic(scorer, t.X[te], t.y[te]) == pytest.approx(row["cic_heldout"], abs=1e-12)
