#!/usr/bin/env python3
"""Does ``train --benign`` (a site's own benign records) help on networks it has not seen?

Leave-one-network-out over the labelled Zeek logs in ``shared/data/zeek-labeled``, grouped by the
network they were captured on (IoT-23 home network, the CTU-Normal Windows hosts, CTU-SME-11,
MCFP botnet 230). For every seed and every held-out network two models are trained with the
shipped recipe (:func:`sidecar.train.cascade.fit_cascade`, same CIC 80 % split as ``train``):

* ``cic``: CIC rows only (the shipped recipe; one model per seed, it does not depend on the fold);
* ``benign``: CIC rows + the benign records of the *other* networks (:mod:`sidecar.train.benign`).

Each model is scored on the held-out network's Zeek records (benign FPR, attack recall per family)
and on the traffic lab's Suricata eve and cicflowmeter CSV records (``tests/data/lab``, never trained
on). Nothing is tuned on the test side. Writes JSON and a Markdown table.

``--protocol site`` is the deployment case instead: the operator vets the first part of their own
traffic and trains with it. For every Zeek capture and for the lab's benign capture, the benign
records up to the median benign timestamp are training extras; the later benign records are the
benign test set, and every attack record is a test record (no attack record is ever trained on;
lab attack captures are separate pcaps). One ``benign`` model per seed, against the ``cic`` model.

    .venv/bin/python scripts/benign_study.py --seeds 0 1 --epochs 20 --out /tmp/benign-study
    .venv/bin/python scripts/benign_study.py --protocol site --seeds 0 1 --out /tmp/benign-site

``--extras-weight W`` repeats the extras W times in training (site protocol); ``--thresholds T...``
also scores the adapted committee at other thresholds (both members at T; the shipped threshold is
0.269) and writes a sweep table: where the benign FPR on the later traffic moves against scan recall.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "lab"))

from common import LAB_DIR, load_lab  # noqa: E402

from sidecar.features.labels import FAMILIES  # noqa: E402
from sidecar.features.schema import extract  # noqa: E402
from sidecar.train.benign import load_benign  # noqa: E402
from sidecar.train.cascade import Cascade, fit_cascade, heldout_metrics, predict, split  # noqa: E402
from sidecar.train.data import DATA_ROOT, load_table, load_zeek_capture, zeek_labeled_paths  # noqa: E402


def network(path: Path) -> str:
    s = path.as_posix()
    if "/iot-23/" in s:
        return "iot-23"
    if "001-zeek-scenario" in s:
        return "mcfp-230"
    if "slips-ctu-sme-11" in s:
        return "ctu-sme-11"
    return "ctu-normal"


def rate(k: int, n: int) -> float | None:
    return round(k / n, 4) if n else None


class TestSet(NamedTuple):
    X: np.ndarray
    y: np.ndarray


def site_split(
    paths: list[Path], lab: list[Any], audited: bool = False
) -> tuple[np.ndarray, list[tuple[Path, Any]], list[Any]]:
    """Benign records up to the median benign ts of each capture (training extras, packets only);
    the test view of every Zeek capture (later benign + all attack records) and of the lab.
    ``audited``: records whose label the audit suspects (sidecar/train/label_audit.py) are left out of
    both, so an operator's "vetted benign" extras hold no malware C&C traffic."""
    from common import read_all

    from sidecar.features.labels import zeek_family
    from sidecar.train.label_audit import suspect_mask

    fam_idx = {f: i for i, f in enumerate(FAMILIES)}
    extras: list[np.ndarray] = []
    zeek: list[tuple[Path, Any]] = []
    for p in paths:
        b, _ = read_all(p)
        fams = [zeek_family(r) for r in b.label.tolist()]
        gt = np.array([f is not None for f in fams])
        if audited:
            cap = p.parent.relative_to(DATA_ROOT / "zeek-labeled").as_posix()
            labels = np.asarray([str(v) for v in b.label.tolist()], dtype=object)
            gt &= ~suspect_mask(cap, labels, np.asarray(b["resp_h"], dtype=object), np.asarray(b["resp_p"]))
        y = np.array([fam_idx.get(str(f), -1) for f in fams])
        X, ts = extract(b), np.asarray(b["ts"], dtype=np.float64)
        ben = gt & (y == 0)
        cut = np.median(ts[ben]) if ben.any() else -np.inf
        pk = (np.asarray(b["orig_pkts"], dtype=np.float64) > 0) | (np.asarray(b["resp_pkts"], dtype=np.float64) > 0)
        extras.append(X[ben & (ts <= cut) & pk])
        test = gt & ~(ben & (ts <= cut))
        zeek.append((p, TestSet(X[test], y[test])))
    lab_test: list[Any] = []
    for ls in lab:
        ben = ls.labels == "benign"
        ts = np.asarray(ls.batch["ts"], dtype=np.float64)
        cut = np.median(ts[ben]) if ben.any() else -np.inf
        first = ben & (ts <= cut)
        if ls.source == "eve":  # the CSV holds the same flows: train on one source only
            extras.append(extract(ls.batch)[first])
        keep = ~first
        lab_test.append(type(ls)(ls.capture, ls.attack, ls.family, ls.source, ls.batch.take(np.flatnonzero(keep)),
                                 ls.labels[keep], ls.stats))
    return np.concatenate(extras).astype(np.float32), zeek, lab_test


def score(c: Cascade, t: Any, te: np.ndarray, zeek: list[tuple[Path, Any]], lab: list[Any]) -> dict[str, Any]:
    m = heldout_metrics(t.y[te], predict(c, t.X[te]))
    out: dict[str, Any] = {
        "cic": {"accuracy": m["cascade"]["accuracy"], "precision": m["cascade"]["precision"],
                "recall": m["cascade"]["recall"], "family_accuracy": m["family_accuracy"]},
    }
    z: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for _, cap in zeek:
        mal = predict(c, cap.X)["malicious"].astype(bool)
        for fi in np.unique(cap.y):
            sel = cap.y == fi
            z[FAMILIES[fi]][0] += int(sel.sum())
            z[FAMILIES[fi]][1] += int(mal[sel].sum())
    out["zeek"] = {f: {"n": v[0], "flagged": v[1], "rate": rate(v[1], v[0])} for f, v in sorted(z.items())}
    lab_out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for ls in lab:
        mal = predict(c, extract(ls.batch))["malicious"].astype(bool)
        for name in set(ls.labels.tolist()):
            sel = ls.labels == name
            key = f"{ls.source}:{'benign' if name == 'benign' else ls.capture}"
            lab_out[key][0] += int(sel.sum())
            lab_out[key][1] += int(mal[sel].sum())
    out["lab"] = {k: {"n": v[0], "flagged": v[1], "rate": rate(v[1], v[0])} for k, v in sorted(lab_out.items())}
    return out


def sweep(c: Cascade, zeek: list[tuple[Path, Any]], thresholds: list[float]) -> list[dict[str, Any]]:
    """Pooled Zeek benign FPR / scan / botnet recall when both committee members flag at ``th``."""
    ps = [(predict(c, cap.X), cap.y) for _, cap in zeek]
    out = []
    for th in thresholds:
        row: dict[str, Any] = {"threshold": th}
        for fam in ("benign", "scan", "botnet"):
            fi = FAMILIES.index(fam)
            n = sum(int((y == fi).sum()) for _, y in ps)
            k = sum(int(((p["p1"] >= th) & (p["p2"] >= th))[y == fi].sum()) for p, y in ps)
            row[fam] = rate(k, n)
        out.append(row)
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "| seed | held-out network | model | CIC acc | Zeek benign FPR (n) | Zeek attack recall | lab eve benign FPR | "
        "lab CSV benign FPR | lab eve attacks | lab eve per capture |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        for model in ("cic", "benign"):
            o = r[model]
            zb = o["zeek"].get("benign", {"n": 0, "rate": None})
            att = {f: v["rate"] for f, v in o["zeek"].items() if f != "benign"}
            lab = o["lab"]
            atk = [v for k, v in lab.items() if k.startswith("eve:") and not k.endswith(":benign")]
            atk_rate = rate(sum(v["flagged"] for v in atk), sum(v["n"] for v in atk))
            per = ", ".join(f"{k[4:]} {v['rate']:.2f}" for k, v in lab.items() if k.startswith("eve:") and not k.endswith(":benign"))
            lines.append(
                f"| {r['seed']} | {r['network']} | {model} | {o['cic']['accuracy']:.4f} | {zb['rate']} ({zb['n']}) | "
                f"{', '.join(f'{f} {v}' for f, v in att.items()) or '–'} | {lab['eve:benign']['rate']} | "
                f"{lab['csv:benign']['rate']} | {atk_rate} | {per} |"
            )
    for r in res["runs"]:
        if r.get("sweep"):
            lines += ["", f"Seed {r['seed']}, extras x{res.get('extras_weight', 1)}: committee threshold sweep "
                      "(later Zeek traffic)", "", "| threshold | benign FPR | scan recall | botnet/C2 recall |",
                      "|---|---|---|---|"]
            lines += [f"| {s['threshold']} | {s['benign']} | {s['scan']} | {s['botnet']} |" for s in r["sweep"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--networks", nargs="*", default=None, help="only these held-out networks")
    ap.add_argument("--protocol", choices=("lono", "site"), default="lono")
    ap.add_argument("--audited", action="store_true",
                    help="site protocol: leave the records whose label the audit suspects out of extras and tests")
    ap.add_argument("--extras-weight", type=int, default=1, help="site protocol: repeat the extras this often")
    ap.add_argument("--thresholds", type=float, nargs="*", default=[],
                    help="site protocol: also score the adapted committee at these thresholds")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    t = load_table()
    paths = zeek_labeled_paths()
    caps = [(p, load_zeek_capture(p, DATA_ROOT)) for p in paths]
    nets = sorted({network(p) for p in paths})
    if a.networks:
        nets = [n for n in nets if n in a.networks]
    lab = load_lab(LAB_DIR)
    res: dict[str, Any] = {"epochs": a.epochs, "audited": a.audited, "extras_weight": a.extras_weight, "runs": []}
    for seed in a.seeds:
        tr, te = split(t.y, seed)
        t0 = time.time()
        base = fit_cascade(t.X[tr], t.y[tr], seed=seed, epochs=a.epochs, s2_epochs=a.epochs)
        print(f"seed {seed}: cic-only model {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        if a.protocol == "site":
            Xe, zeek_test, lab_test = site_split(paths, lab, audited=a.audited)
            X = np.concatenate([t.X[tr]] + [Xe] * a.extras_weight)
            y = np.concatenate([t.y[tr], np.zeros(len(Xe) * a.extras_weight, dtype=t.y.dtype)])
            adapted = fit_cascade(X, y, seed=seed, epochs=a.epochs, s2_epochs=a.epochs)
            res["runs"].append({"seed": seed, "network": "all (time split)", "extra_benign_rows": len(Xe),
                                "cic": score(base, t, te, zeek_test, lab_test),
                                "benign": score(adapted, t, te, zeek_test, lab_test),
                                "sweep": sweep(adapted, zeek_test, a.thresholds)})
            (a.out / "benign_study.json").write_text(json.dumps(res, indent=1))
            continue
        for net in nets:
            held = [(p, c) for p, c in caps if network(p) == net]
            extra = load_benign([p for p in paths if network(p) != net], cic_X=t.X)
            X = np.concatenate([t.X[tr], extra.X])
            y = np.concatenate([t.y[tr], np.zeros(len(extra.X), dtype=t.y.dtype)])
            t0 = time.time()
            adapted = fit_cascade(X, y, seed=seed, epochs=a.epochs, s2_epochs=a.epochs)
            run = {"seed": seed, "network": net, "extra_benign_rows": len(extra.X),
                   "cic": score(base, t, te, held, lab), "benign": score(adapted, t, te, held, lab)}
            res["runs"].append(run)
            print(f"seed {seed} held-out {net}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
            (a.out / "benign_study.json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    (a.out / "benign_study.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
