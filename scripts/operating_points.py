"""Operating points of the shipped model without retraining: the decision threshold (``sidecar.threshold``)
and family agreement (``sidecar.family_agreement``), measured on every labelled set we have.

* CIC held-out: the 20 % split of ``train`` (seed 0), model only, as ``evaluate --protocols heldout`` scores it;
* Zeek: the 9 labelled captures of ``shared/data/zeek-labeled`` pooled, benign FPR with the published and
  the audited labels (``sidecar/train/label_audit.py``), scan and botnet/C2 recall;
* lab: the eve records of ``tests/data/lab``: benign FPR and the recall of each attack.

Zeek and lab files are scored as ``scripts/lab/cross_source.py`` scores them (micro-batches of 1024 in
file order, flood rule on). Prints a Markdown table and writes JSON (``--json``).

    .venv/bin/python scripts/operating_points.py [--json models/report/operating-points.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "lab"))

from common import LAB_DIR, MODEL, load_lab, shared_dir, zeek_populations  # noqa: E402
from cross_source import _score  # noqa: E402

from sidecar.features.guess import GuessRule  # noqa: E402
from sidecar.features.rate import RateRule  # noqa: E402
from sidecar.scorer import make_scorer  # noqa: E402
from sidecar.train import cascade  # noqa: E402
from sidecar.train.data import FAMILIES, default_paths, load_table  # noqa: E402

THRESHOLDS = (None, 0.3, 0.4, 0.5)  # None: the model's own (0.269 shipped)
LAB_ATTACKS = ("scan-syn", "scan-connect", "bruteforce-ssh", "bruteforce-ftp", "dos-slowloris", "dos-synflood",
               "dos-httpflood", "ddos")  # fmt: skip


def _cic(scorer: Any, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    _p1, _p2, mal, cls, _st = scorer.post(scorer.engine.run(X))
    yb = y != 0
    tp, fp = int((mal & yb).sum()), int((mal & ~yb).sum())
    names = np.asarray(FAMILIES, dtype=object)
    return {"accuracy": float((mal == yb).mean()), "precision": tp / max(1, tp + fp), "recall": tp / int(yb.sum()),
            "fpr": fp / int((~yb).sum()), "family_accuracy": float((np.where(mal, cls, "benign") == names[y]).mean())}  # fmt: skip


def zeek_figures(scorer: Any, zeek: list[tuple[Any, dict[str, np.ndarray]]]) -> dict[str, dict[str, Any]]:
    n: Counter[str] = Counter()
    k: Counter[str] = Counter()
    for batch, pops in zeek:
        mal, _cls, _model = _score(scorer, batch)
        for pop, mask in pops.items():
            n[pop] += int(mask.sum())
            k[pop] += int((mask & mal).sum())
    return {pop: {"n": n[pop], "flagged": k[pop], "rate": k[pop] / n[pop]} for pop in n}


def lab_figures(scorer: Any, lab: list[Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for ls in lab:
        mal, _cls, _model = _score(scorer, ls.batch)
        m = ls.labels == ls.attack
        out[ls.capture] = {"n": int(m.sum()), "flagged": int((m & mal).sum()), "rate": float((m & mal).sum() / m.sum())}
    return out


def measure(threshold: float | None, agreement: bool, X: np.ndarray, y: np.ndarray,
            zeek: list[tuple[Any, dict[str, np.ndarray]]], lab: list[Any]) -> dict[str, Any]:  # fmt: skip
    scorer = make_scorer(MODEL, "onnx", None, threshold, agreement)  # the flood and guessing rules as shipped
    return {"threshold": threshold, "family_agreement": agreement,
            "cic_heldout": _cic(make_scorer(MODEL, "onnx", RateRule(0), threshold, agreement, GuessRule(0)), X, y),
            "zeek": zeek_figures(scorer, zeek), "lab_eve": lab_figures(scorer, lab)}  # fmt: skip


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["| threshold | family agreement | CIC acc | CIC precision | CIC recall | CIC FPR | CIC family acc "
           "| Zeek benign FPR, audited | published labels | Zeek scans | Zeek botnet/C2 | lab benign FPR "
           "| lab attacks (lowest recall) |", "|" + "---|" * 13]  # fmt: skip
    for r in rows:
        c, z, lab = r["cic_heldout"], r["zeek"], r["lab_eve"]
        worst = min(LAB_ATTACKS, key=lambda a: lab[a]["rate"])
        thr = "0.269 (model)" if r["threshold"] is None else f"{r['threshold']:g}"
        out.append(
            f"| {thr} | {'on' if r['family_agreement'] else 'off'} | {c['accuracy']:.4f} | {c['precision']:.4f} "
            f"| {c['recall']:.4f} | {c['fpr']:.4f} | {c['family_accuracy']:.4f} | {z['benign, audited']['rate']:.4f} "
            f"| {z['benign']['rate']:.4f} | {z['scan']['rate']:.4f} | {z['botnet']['rate']:.4f} "
            f"| {lab['benign']['rate']:.3f} | {worst} {lab[worst]['rate']:.3f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write every figure here")
    a = ap.parse_args(argv)
    t = load_table(default_paths(shared_dir()))
    _tr, te = cascade.split(t.y, 0)
    zeek = [(batch, pops) for _p, batch, pops in zeek_populations(shared_dir())]
    lab = [ls for ls in load_lab(LAB_DIR) if ls.source == "eve"]
    rows = [measure(thr, agree, t.X[te], t.y[te], zeek, lab) for agree in (False, True) for thr in THRESHOLDS]
    print(markdown(rows))
    if a.json:
        a.json.write_text(json.dumps({"model": str(MODEL.relative_to(ROOT)), "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
