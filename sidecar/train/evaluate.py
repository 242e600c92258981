"""Evaluation protocols for ``bnn-sidecar evaluate`` (needs the ``train`` extra).

Protocols (each writes one section of ``metrics.json``):

* ``heldout``: the given model (through the ONNX engine, exactly as the sidecar scores) on the
  held-out 20 % split ``train`` made (same seed, same de-duplicated rows), with the MLP and tree
  baselines trained on the same 80 %.
* ``cv10``: stratified k-fold cross-validation on the de-duplicated rows (duplicates are removed
  *before* splitting). Each fold retrains the BNN cascade, the MLP and the tree on the same rows.
* ``lodo``: leave-one-dataset-out (train on the other datasets, test on the left-out one).
* ``loday``: leave-one-day-out wherever rows carry a capture day (CIC-IDS2017 improved,
  CSE-CIC-IDS2018 improved): train on everything but that day, test on the day.
* ``zeek``: cross-source: the given model on every labelled Zeek conn log (never trained on),
  per capture and per label, beside the baselines trained on all CIC rows.
* ``zeekloco``: capture-level split, reported separately: for each labelled Zeek capture, all
  models are trained on every CIC row plus the *other* captures and tested on the left-out one.

Models compared: ``bnn`` (cascade), ``bnn_screen`` (stage 1 alone), ``mlp`` (full precision),
``tree`` (random forest). Pooled out-of-fold predictions are kept for the plots.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sidecar.engines.base import EngineOutput
from sidecar.features.labels import FAMILIES
from sidecar.scorer import ModelMeta
from sidecar.train import baselines, cascade, metrics
from sidecar.train.data import DATA_ROOT, Table, load_zeek_capture, zeek_labeled_paths

log = logging.getLogger(__name__)

PROTOCOLS = ("heldout", "cv10", "lodo", "loday", "zeek", "zeekloco")
MODELS = ("bnn", "bnn_screen", "mlp", "tree")


@dataclass
class Config:
    epochs: int = 5
    folds: int = 10
    seed: int = 0
    tree_trees: int = 50
    progress: bool = True


# prediction = (pred_bin int[n], score float[n], pred_family int[n])
Pred = tuple[np.ndarray, np.ndarray, np.ndarray]


def _bnn_preds(pr: dict[str, np.ndarray]) -> dict[str, Pred]:
    return {
        "bnn": (pr["malicious"], pr["cascade_score"], pr["family"]),
        "bnn_screen": (pr["screen"], pr["p1"], np.where(pr["screen"] == 1, pr["family_raw"], 0)),
    }


def _baseline_preds(Xtr: np.ndarray, ytr: np.ndarray, cfg: Config) -> dict[str, baselines.Predictor]:
    return {
        "mlp": baselines.fit_mlp(Xtr, ytr, seed=cfg.seed, epochs=cfg.epochs),
        "tree": baselines.fit_tree(Xtr, ytr, seed=cfg.seed, n_trees=cfg.tree_trees),
    }


def _apply(pred: baselines.Predictor, X: np.ndarray) -> Pred:
    p, fam = pred(X)
    mal = (p >= 0.5).astype(np.int64)
    # family forced consistent with the binary decision, as the scorer does for the BNN
    fam = np.where(mal == 1, fam, 0)
    return mal, p, fam


def fit_and_predict(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, cfg: Config) -> dict[str, Pred]:
    """Train all models on ``(Xtr, ytr)`` and predict ``Xte``."""
    c = cascade.fit_cascade(Xtr, ytr, seed=cfg.seed, epochs=cfg.epochs, s2_epochs=cfg.epochs)
    out = _bnn_preds(cascade.predict(c, Xte))
    for name, pred in _baseline_preds(Xtr, ytr, cfg).items():
        out[name] = _apply(pred, Xte)
    return out


def _fold_result(name: str, n_train: int, yte: np.ndarray, preds: dict[str, Pred]) -> dict[str, Any]:
    return {
        "name": name,
        "n_train": n_train,
        "n_test": len(yte),
        "models": {m: metrics.full(yte, *preds[m]) for m in preds},
        "fraction_to_stage2": float(preds["bnn_screen"][0].mean()) if len(yte) else None,
    }


def _pool(folds: list[dict[str, Any]]) -> dict[str, Any]:
    return {m: metrics.summarise_folds(folds, m) for m in folds[0]["models"]} if folds else {}


def run_groups(t: Table, groups: np.ndarray, names: list[Any], cfg: Config, what: str) -> dict[str, Any]:
    """Leave-one-group-out over ``names`` (values of ``groups``)."""
    folds = []
    for g in tqdm(names, desc=what, disable=not cfg.progress):
        te = groups == g
        if te.sum() == 0 or (~te).sum() == 0:
            continue
        preds = fit_and_predict(t.X[~te], t.y[~te], t.X[te], cfg)
        folds.append(_fold_result(str(g), int((~te).sum()), t.y[te], preds))
    return {"folds": folds, "summary": _pool(folds), "epochs": cfg.epochs}


def run_cv(t: Table, cfg: Config) -> tuple[dict[str, Any], dict[str, Pred]]:
    from sklearn.model_selection import StratifiedKFold

    skf = StratifiedKFold(n_splits=cfg.folds, shuffle=True, random_state=cfg.seed)
    n = len(t.y)
    oof: dict[str, list[np.ndarray]] = {}
    pooled: dict[str, Pred] = {}
    folds = []
    order = np.empty(0, np.int64)
    for k, (tr, te) in enumerate(
        tqdm(list(skf.split(np.zeros(n), t.y)), desc=f"cv{cfg.folds}", disable=not cfg.progress)
    ):
        preds = fit_and_predict(t.X[tr], t.y[tr], t.X[te], cfg)
        folds.append(_fold_result(f"fold{k}", len(tr), t.y[te], preds))
        order = np.concatenate([order, te])
        for m, (pb, sc, pf) in preds.items():
            oof.setdefault(m, []).append(np.stack([pb.astype(np.float64), sc, pf.astype(np.float64)]))
    inv = np.argsort(order)
    for m, parts in oof.items():
        a = np.concatenate(parts, axis=1)[:, inv]
        pooled[m] = (a[0].astype(np.int64), a[1], a[2].astype(np.int64))
    res = {
        "folds": folds,
        "summary": _pool(folds),
        "pooled": {m: metrics.full(t.y, *p) for m, p in pooled.items()},
        "rows": n,
        "duplicates_removed_before_split": t.report.get("duplicates_removed"),
        "epochs": cfg.epochs,
        "k": cfg.folds,
    }
    return res, pooled


def engine_predict(model_path: str | Path, X: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The shipped model through the ONNX engine (sha256-checked), post-processed like the scorer."""
    from sidecar.engines.load import load_engine

    eng = load_engine(model_path, "onnx")
    props: dict[str, str] = eng.metadata()
    out: EngineOutput = eng.run(X)
    return cascade.post(out, ModelMeta.from_props(props)), props


def run_heldout(t: Table, model_path: Path, cfg: Config) -> tuple[dict[str, Any], dict[str, Pred], np.ndarray]:
    from sidecar.train.bnn import data_digest

    pr, props = engine_predict(model_path, t.X)
    seed = int(json.loads(props.get("bnn.metrics", "{}")).get("seed", cfg.seed))
    tr, te = cascade.split(t.y, seed)
    same = props.get("bnn.data_digest") == data_digest(t.X, t.y)
    preds = {k: (v[0][te], v[1][te], v[2][te]) for k, v in _bnn_preds(pr).items()}
    for name, pred in _baseline_preds(t.X[tr], t.y[tr], cfg).items():
        preds[name] = _apply(pred, t.X[te])
    res = _fold_result("heldout", len(tr), t.y[te], preds)
    res["same_data_as_training"] = bool(same)
    res["split_seed"] = seed
    return res, preds, te


def run_zeek(model_path: Path, t: Table, cfg: Config, root: Path = DATA_ROOT) -> dict[str, Any]:
    """The model (and baselines fitted on all CIC rows) on every labelled Zeek capture."""
    base = _baseline_preds(t.X, t.y, cfg)
    caps = []
    all_y: list[np.ndarray] = []
    all_s: list[np.ndarray] = []
    all_p: dict[str, list[np.ndarray]] = {}
    for path in tqdm(zeek_labeled_paths(root), desc="zeek captures", disable=not cfg.progress):
        c = load_zeek_capture(path, root)
        if len(c.y) == 0:
            continue
        pr, _ = engine_predict(model_path, c.X)
        preds = _bnn_preds(pr)
        for name, pred in base.items():
            preds[name] = _apply(pred, c.X)
        per_label: dict[str, Any] = {}
        for lab in sorted(set(c.labels.tolist())):
            m = c.labels == lab
            row: dict[str, Any] = {"n": int(m.sum()), "no_packet_records": int((m & c.no_packets).sum())}
            for name, (pb, _, pf) in preds.items():
                row[name] = {
                    "flagged": float(pb[m].mean()),
                    "family_match": float((pf[m] == c.y[m]).mean()),
                }
            per_label[str(lab)] = row
        caps.append(
            {
                "capture": c.name,
                "rows": len(c.y),
                "dropped_no_ground_truth": c.dropped,
                "models": {m: metrics.full(c.y, *preds[m]) for m in preds},
                "fraction_to_stage2": float(preds["bnn_screen"][0].mean()),
                "per_label": per_label,
            }
        )
        all_y.append(c.y)
        all_s.append(c.suspect)
        for m, (pb, _, _) in preds.items():
            all_p.setdefault(m, []).append(pb)
    yy = np.concatenate(all_y) if all_y else np.zeros(0, np.int64)
    sus = np.concatenate(all_s) if all_s else np.zeros(0, bool)
    by_family: dict[str, Any] = {}
    for m, parts in all_p.items():
        pb = np.concatenate(parts)
        fam_rows: dict[str, Any] = {}
        for k, fam in enumerate(FAMILIES):
            sel = yy == k
            if sel.any():
                fam_rows[fam] = {"n": int(sel.sum()), "flagged": float(pb[sel].mean())}
        # benign without the records whose label the audit suspects (sidecar/train/label_audit.py)
        sel = (yy == 0) & ~sus
        if sel.any() and sus.any():
            fam_rows["benign (audited labels)"] = {"n": int(sel.sum()), "flagged": float(pb[sel].mean())}
        by_family[m] = fam_rows
    return {"captures": caps, "by_family": by_family, "note": "flagged = recall for attack families, FPR for benign"}


def run_zeek_loco(t: Table, cfg: Config, root: Path = DATA_ROOT) -> dict[str, Any]:
    caps = [load_zeek_capture(p, root) for p in zeek_labeled_paths(root)]
    caps = [c for c in caps if len(c.y)]
    folds = []
    for i, c in enumerate(tqdm(caps, desc="zeek leave-one-capture-out", disable=not cfg.progress)):
        others = [o for j, o in enumerate(caps) if j != i]
        Xtr = np.concatenate([t.X, *[o.X for o in others]])
        ytr = np.concatenate([t.y, *[o.y for o in others]])
        preds = fit_and_predict(Xtr, ytr, c.X, cfg)
        f = _fold_result(c.name, len(ytr), c.y, preds)
        f["per_label"] = {
            str(lab): {"n": int((c.labels == lab).sum()),
                       **{m: float(preds[m][0][c.labels == lab].mean()) for m in preds}}
            for lab in sorted(set(c.labels.tolist()))
        }
        folds.append(f)
    return {"folds": folds, "summary": _pool(folds), "epochs": cfg.epochs}


def evaluate(
    t: Table, model_path: Path, protocols: list[str], cfg: Config, zeek_root: Path = DATA_ROOT
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the protocols; returns (metrics JSON, arrays for the plots)."""
    res: dict[str, Any] = {"protocols": protocols, "config": cfg.__dict__, "rows": len(t.y)}
    plots: dict[str, Any] = {}
    for p in protocols:
        t0 = time.time()
        if p == "heldout":
            r, preds, te = run_heldout(t, model_path, cfg)
            plots["heldout"] = (t.y[te], preds)
        elif p.startswith("cv"):
            cfg_k = Config(**(cfg.__dict__ | {"folds": int(p[2:] or cfg.folds)}))
            r, pooled = run_cv(t, cfg_k)
            plots[p] = (t.y, pooled)
        elif p == "lodo":
            r = run_groups(t, t.dataset, sorted(set(t.dataset.tolist())), cfg, "lodo")
        elif p == "loday":
            key = np.array([f"{d}@{day}" if day else "" for d, day in zip(t.dataset, t.day, strict=True)], object)
            names = sorted(k for k in set(key.tolist()) if k)
            r = run_groups(t, key, names, cfg, "loday")
        elif p == "zeek":
            r = run_zeek(model_path, t, cfg, zeek_root)
        elif p == "zeekloco":
            r = run_zeek_loco(t, cfg, zeek_root)
        else:
            raise ValueError(f"unknown protocol {p!r} (known: {', '.join(PROTOCOLS)})")
        r["seconds"] = round(time.time() - t0, 1)
        res[p] = r
        log.info("protocol %s done in %.0f s", p, r["seconds"])
    return res, plots
