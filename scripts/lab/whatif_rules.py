"""What-ifs for three rules that were measured and NOT adopted (docs/CROSS_SOURCE.md, item 11).

Two start from a fact of the training rows and remove model verdicts that contradict it:

* ``scan-veto``: a ``scan`` verdict on a flow that carried payload in BOTH directions is dropped.
  Only 1.3 % of the CIC scan rows the model was trained on carry payload both ways (a probe has
  nothing to say and gets nothing back; nmap's version probes are the exception), against 82 %
  of CIC benign rows.
* ``dos-gate``: a ``dos``/``ddos`` verdict of the model whose key (client, server, port, proto)
  has no other record in its flood-rule window (count < 2, ``sidecar/features/rate.py``) is
  dropped: a denial of service is many connections, not one.

One adds verdicts:

* ``flood-tier``: a second, lower flood-rule tier for flows the model already finds somewhat suspicious
  (flood count >= 10 and model score >= 0.05): slowloris's idle connections score 0.05-0.17.

Scored the way ``scripts/lab/cross_source.py`` scores (shipped model, flood rule on, micro-batches
of 1024 in file order, counts from zero per file). Prints a Markdown table: per population, the
flag rate as shipped and under each rule, with the number of verdicts each rule removes.

    .venv/bin/python scripts/lab/whatif_rules.py
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import LAB_DIR, MODEL, load_lab, shared_dir, zeek_populations

from sidecar.features.rate import RateCounter
from sidecar.features.schema import FEATURE_NAMES, extract
from sidecar.flow import FlowBatch
from sidecar.scorer import make_scorer
from sidecar.verdict import STAGE_GUESS, STAGE_RATE

BATCH = 1024
RULES = ("shipped", "scan-veto", "dos-gate", "flood-tier")
_IO, _IR = FEATURE_NAMES.index("log_orig_bytes"), FEATURE_NAMES.index("log_resp_bytes")


def verdicts(batch: FlowBatch, engine: str) -> dict[str, np.ndarray]:
    """Malicious mask per rule for every record of one file."""
    scorer = make_scorer(MODEL, engine)
    counter = RateCounter(scorer.rate.window_s)
    mal, cls, stage, count, score = [], [], [], [], []
    for i in range(0, len(batch), BATCH):
        part = batch.take(np.arange(i, min(i + BATCH, len(batch))))
        v = scorer.score(part)
        mal.append(v.malicious)
        cls.append(v.cls)
        stage.append(v.stage)
        score.append(v.score)
        count.append(counter.update(part))
    m, c, s, n, p = (np.concatenate(x) for x in (mal, cls, stage, count, score))
    X = extract(batch)
    two_way = (np.nan_to_num(X[:, _IO]) > 0) & (np.nan_to_num(X[:, _IR]) > 0)
    model = m & ~np.isin(s, [STAGE_RATE, STAGE_GUESS])
    return {
        "shipped": m,
        "scan-veto": m & ~(model & (c == "scan") & two_way),
        "dos-gate": m & ~(model & np.isin(c, ["dos", "ddos"]) & (n < 2)),
        "flood-tier": m | ((n >= 10) & (p >= 0.05)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="onnx", choices=("onnx", "numpy"))
    a = ap.parse_args(argv)
    n: Counter[str] = Counter()
    k: Counter[tuple[str, str]] = Counter()
    names = {"benign": "Zeek benign (published labels)", "benign, audited": "Zeek benign (audited)"}
    for _p, batch, masks in zeek_populations(shared_dir()):
        v = verdicts(batch, a.engine)
        for key, mask in masks.items():
            pop = names.get(key, f"Zeek {key}")
            n[pop] += int(mask.sum())
            for r in RULES:
                k[(pop, r)] += int((mask & v[r]).sum())
    for ls in load_lab(LAB_DIR):
        v = verdicts(ls.batch, a.engine)
        mask = ls.labels == ls.attack
        pop = f"lab {ls.source} {ls.capture}"
        n[pop] += int(mask.sum())
        for r in RULES:
            k[(pop, r)] += int((mask & v[r]).sum())
    print("| population | n | shipped | " + " | ".join(f"{r} | change" for r in RULES[1:]) + " |")
    print("|---|---|---|" + "---|---|" * (len(RULES) - 1))
    for pop, total in n.items():
        if total == 0:
            continue
        s = k[(pop, "shipped")]
        cells = [f"{s / total:.4f}"]
        for r in RULES[1:]:
            cells += [f"{k[(pop, r)] / total:.4f}", f"{k[(pop, r)] - s:+d}"]
        print(f"| {pop} | {total} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
