"""scripts/lab/cross_source.py on the committed lab records with the shipped model."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
from script_loader import load_script

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "tests" / "data" / "lab"


def _load(name: str) -> ModuleType:
    return load_script(f"scripts/lab/{name}.py")


def test_every_lab_record_is_scored_and_counted(tmp_path: Path) -> None:
    cs = _load("cross_source")
    from sidecar.scorer import make_scorer

    scorer = make_scorer(ROOT / "sidecar" / "data" / "model" / "bnn.onnx")
    res = cs.eval_lab(scorer, LAB)
    labels = {c["capture"]: c for c in json.loads((LAB / "labels.json").read_text())["captures"]}
    assert set(res["captures"]) == set(labels)
    for cap, d in res["captures"].items():
        for src in ("eve", "csv"):
            cell = d[src]
            want = labels[cap]["counts"][src]
            assert cell["records"] == sum(want.values())
            for lab, n in want.items():
                assert cell[lab]["n"] == n
                assert 0 <= cell[lab]["flagged"] <= n
                assert sum(cell[lab]["classes"].values()) == cell[lab]["flagged"]
    fam = res["families"]
    assert fam["benign"]["eve"]["n"] == labels["benign"]["counts"]["eve"]["benign"]
    assert sum(fam[f]["csv"]["n"] for f in fam) == sum(sum(c["counts"]["csv"].values()) for c in labels.values())
    # the Markdown renders and the doc block is replaced, not appended twice
    md = cs.markdown({"model": "m", "model_sha256": "x", "engine": "onnx", "rate_threshold": 50, "lab": res,
                      "cic": {k: {"families": {}} for k in ("CSE-CIC-IDS2018", "CIC-IDS2017-improved")}, "zeek": {}})
    assert "| benign (FPR) |" in md and "dos-synflood" in md and "What the flood and guessing rules add" in md
    doc = tmp_path / "d.md"
    doc.write_text("intro\n")
    cs.write_doc(doc, md)
    cs.write_doc(doc, md)
    text = doc.read_text()
    assert text.startswith("intro\n") and text.count(cs.BEGIN) == 1 and text.count(cs.END) == 1


def test_flood_rule_adds_to_the_model_only_where_a_client_hammers_one_service() -> None:
    """The rule (sidecar/features/rate.py) lifts the lab's HTTP flood, which the model cannot see
    per flow, and adds nothing on the lab's benign traffic; at threshold 0 it adds nothing at all."""
    cs = _load("cross_source")
    from sidecar.features.guess import GuessRule
    from sidecar.features.rate import RateRule
    from sidecar.scorer import make_scorer

    model = ROOT / "sidecar" / "data" / "model" / "bnn.onnx"
    on = cs.eval_lab(make_scorer(model, rate=RateRule()), LAB)
    off = cs.eval_lab(make_scorer(model, rate=RateRule(threshold=0), guess=GuessRule(threshold=0)), LAB)
    for src in ("eve", "csv"):
        flood_on, flood_off = on["captures"]["dos-httpflood"][src], off["captures"]["dos-httpflood"][src]
        lab = flood_on["dos-httpflood"]
        assert lab["flagged_model"] == flood_off["dos-httpflood"]["flagged"]
        assert lab["rate"] >= 0.8 > flood_off["dos-httpflood"]["rate"]
        assert on["families"]["benign"][src]["flagged"] == off["families"]["benign"][src]["flagged"]
        for f, d in off["families"].items():
            assert d[src]["flagged"] == d[src]["flagged_model"], f


def test_whatif_rules_start_from_the_shipped_verdicts_and_remove_only_what_they_say() -> None:
    """scripts/lab/whatif_rules.py (CROSS_SOURCE.md item 11): its "shipped" column is the verdict
    cross_source.py reports, and each rule only removes model verdicts of its own kind: the scan veto
    the ``scan`` verdicts on flows with payload both ways (counted here from the raw byte columns)."""
    cs = _load("cross_source")
    wr = _load("whatif_rules")
    from sidecar.scorer import make_scorer

    scorer = make_scorer(ROOT / "sidecar" / "data" / "model" / "bnn.onnx")
    sets = {(ls.capture, ls.source): ls for ls in wr.load_lab(LAB)}
    for key in (("benign", "eve"), ("ddos", "csv")):
        ls = sets[key]
        v = wr.verdicts(ls.batch, "onnx")
        mal, cls, model = cs._score(scorer, ls.batch)
        assert np.array_equal(v["shipped"], mal)
        two_way = (np.nan_to_num(ls.batch["orig_bytes"]) > 0) & (np.nan_to_num(ls.batch["resp_bytes"]) > 0)
        assert np.array_equal(v["shipped"] & ~v["scan-veto"], model & (cls == "scan") & two_way)
        assert not (v["dos-gate"] & ~v["shipped"]).any()
        assert np.isin(cls[v["shipped"] & ~v["dos-gate"]], ["dos", "ddos"]).all()
        assert (v["flood-tier"] | ~v["shipped"]).all()  # the tier only adds
    # the lab benign capture has scan verdicts on two-way flows, so the veto is not vacuous there
    ben = sets[("benign", "eve")]
    vb = wr.verdicts(ben.batch, "onnx")
    assert (vb["shipped"] & ~vb["scan-veto"]).sum() >= 10
    slow = sets[("dos-slowloris", "eve")]
    vs = wr.verdicts(slow.batch, "onnx")
    assert (vs["flood-tier"] & ~vs["shipped"]).sum() >= 30  # measured: +38 of 162


def test_thirdparty_results_are_regenerated_from_the_committed_records() -> None:
    """scripts/lab/thirdparty.py eval: the committed results (tests/data/thirdparty/results.json, the
    CROSS_SOURCE.md block) are what the shipped model and rules give on the committed eve records."""
    tp = _load("thirdparty")
    from sidecar.scorer import make_scorer

    got = tp.eval_labelled(make_scorer(ROOT / "sidecar" / "data" / "model" / "bnn.onnx"))
    want = json.loads((ROOT / "tests" / "data" / "thirdparty" / "results.json").read_text())["labelled"]
    assert got == want
    brute = got["slips-test19-ssh-bruteforce"]
    assert brute["n"] == 67 and brute["flagged"] / brute["n"] >= 0.9 > brute["flagged_model"] / brute["n"]
