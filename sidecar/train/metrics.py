"""Metrics for the evaluation report: binary, family (multiclass), per label, ROC/PR points."""

from __future__ import annotations

from typing import Any

import numpy as np

from sidecar.features.labels import FAMILIES


def _div(a: float, b: float) -> float | None:
    return a / b if b else None


def binary(y: np.ndarray, pred: np.ndarray, score: np.ndarray | None = None) -> dict[str, Any]:
    """accuracy, precision, recall, F1, false-positive rate (+ ROC AUC / average precision)."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(pred).astype(bool)
    tp, fp = int((p & y).sum()), int((p & ~y).sum())
    fn, tn = int((~p & y).sum()), int((~p & ~y).sum())
    prec, rec = _div(tp, tp + fp), _div(tp, tp + fn)
    f1 = 2 * prec * rec / (prec + rec) if prec and rec else (0.0 if prec is not None and rec is not None else None)
    out: dict[str, Any] = {
        "n": len(y),
        "accuracy": _div(tp + tn, len(y)),
        "precision": prec,
        "recall": rec,
        "f1": f1,
        "fpr": _div(fp, fp + tn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }
    if score is not None and 0 < y.sum() < len(y):
        from sklearn.metrics import average_precision_score, roc_auc_score

        out["roc_auc"] = float(roc_auc_score(y, score))
        out["average_precision"] = float(average_precision_score(y, score))
    return out


def per_family(y_fam: np.ndarray, pred_fam: np.ndarray) -> dict[str, dict[str, Any]]:
    """One-vs-rest recall / precision / F1 / FPR per family (families with support or predictions)."""
    out: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(FAMILIES):
        y = y_fam == k
        p = pred_fam == k
        if not y.any() and not p.any():
            continue
        b = binary(y, p)
        out[name] = {"support": int(y.sum()), **{m: b[m] for m in ("recall", "precision", "f1", "fpr")}}
    return out


def confusion(y_fam: np.ndarray, pred_fam: np.ndarray, k: int = len(FAMILIES)) -> list[list[int]]:
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_fam.astype(np.int64), pred_fam.astype(np.int64)), 1)
    return cm.tolist()


def full(y_fam: np.ndarray, pred_bin: np.ndarray, score: np.ndarray, pred_fam: np.ndarray) -> dict[str, Any]:
    """Everything for one model on one test set."""
    yb = (y_fam != 0).astype(np.int64)
    return {
        "binary": binary(yb, pred_bin, score),
        "family_accuracy": float((pred_fam == y_fam).mean()) if len(y_fam) else None,
        "per_family": per_family(y_fam, pred_fam),
        "confusion_family": confusion(y_fam, pred_fam),
    }


def summarise_folds(folds: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """Mean / std / min / max of binary accuracy, precision, recall, F1 and family accuracy over folds."""
    out: dict[str, Any] = {}
    for key in ("accuracy", "precision", "recall", "f1", "fpr"):
        v = [f["models"][model]["binary"][key] for f in folds if f["models"][model]["binary"][key] is not None]
        if v:
            out[key] = {"mean": float(np.mean(v)), "std": float(np.std(v)), "min": float(min(v)), "max": float(max(v))}
    v = [f["models"][model]["family_accuracy"] for f in folds if f["models"][model]["family_accuracy"] is not None]
    if v:
        out["family_accuracy"] = {"mean": float(np.mean(v)), "std": float(np.std(v))}
    return out
