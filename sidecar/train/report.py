"""Evaluation report files: ``metrics.json``, ``README.md`` (Markdown summary) and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sidecar.features.labels import FAMILIES
from sidecar.train import metrics

REFERENCE = (
    "Reference: BNN on a Raspberry Pi acc 0.92 / recall 0.96 / precision 0.64; full-precision deep nets on "
    "CSE-CIC-IDS2018 (10-fold CV) 98.75 % binary, 98.6 % multiclass, attack recall 94.6 %, 0.21 % of benign "
    "flagged; per-day accuracy 87 % (03-01) to 100 %."
)


def _f(v: Any, nd: int = 4) -> str:
    return "–" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def _model_rows(models: dict[str, Any]) -> list[str]:
    rows = ["| model | accuracy | precision | recall | F1 | FPR | ROC AUC | family acc |", "|---|---|---|---|---|---|---|---|"]
    for m, r in models.items():
        b = r["binary"]
        rows.append(
            f"| {m} | {_f(b['accuracy'])} | {_f(b['precision'])} | {_f(b['recall'])} | {_f(b['f1'])} | "
            f"{_f(b['fpr'])} | {_f(b.get('roc_auc'))} | {_f(r['family_accuracy'])} |"
        )
    return rows


def _per_family(models: dict[str, Any], model: str = "bnn") -> list[str]:
    rows = ["| family | support | recall | precision | F1 | FPR |", "|---|---|---|---|---|---|"]
    for fam, r in models[model]["per_family"].items():
        rows.append(f"| {fam} | {r['support']} | {_f(r['recall'])} | {_f(r['precision'])} | {_f(r['f1'])} | {_f(r['fpr'])} |")
    return rows


def _groups_table(r: dict[str, Any]) -> list[str]:
    rows = [
        "| left out | n test | BNN acc | BNN recall | BNN FPR | screen acc | MLP acc | tree acc | per-family BNN recall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in r["folds"]:
        m = f["models"]
        fams = ", ".join(
            f"{k} {_f(v['recall'], 2)}" for k, v in m["bnn"]["per_family"].items() if k != "benign" and v["support"]
        )
        rows.append(
            f"| {f['name']} | {f['n_test']} | {_f(m['bnn']['binary']['accuracy'])} | {_f(m['bnn']['binary']['recall'])} | "
            f"{_f(m['bnn']['binary']['fpr'])} | {_f(m['bnn_screen']['binary']['accuracy'])} | "
            f"{_f(m['mlp']['binary']['accuracy'])} | {_f(m['tree']['binary']['accuracy'])} | {fams} |"
        )
    return rows


def _zeek_table(r: dict[str, Any]) -> list[str]:
    rows = [
        "| capture | label | n | zero-packet records | BNN flagged | screen flagged | MLP flagged | tree flagged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in r["captures"]:
        for lab, v in c["per_label"].items():
            rows.append(
                f"| {c['capture']} | {lab} | {v['n']} | {v['no_packet_records']} | {_f(v['bnn']['flagged'], 3)} | "
                f"{_f(v['bnn_screen']['flagged'], 3)} | {_f(v['mlp']['flagged'], 3)} | {_f(v['tree']['flagged'], 3)} |"
            )
    rows += ["", "Pooled over all captures (flagged = recall for attack families, FPR for benign):", ""]
    rows += ["| model | " + " | ".join(r["by_family"]["bnn"]) + " |", "|---" * (1 + len(r["by_family"]["bnn"])) + "|"]
    for m, fams in r["by_family"].items():
        rows.append(f"| {m} | " + " | ".join(f"{_f(v['flagged'], 3)} (n={v['n']})" for v in fams.values()) + " |")
    return rows


#: the shipped model, as the report names it (not this machine's absolute path)
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "model" / "bnn.onnx"


def model_title(model_path: str) -> str:
    """The report's name for ``model_path``: the shipped file by its path in the repository."""
    if Path(model_path).resolve() == SHIPPED:
        return "`sidecar/data/model/bnn.onnx` (the shipped model)"
    return f"`{model_path}`"


def markdown(res: dict[str, Any], model_path: str) -> str:
    out = [f"# Evaluation report: {model_title(model_path)}", "", REFERENCE, ""]
    out.append(
        f"Rows (de-duplicated before any split): {res['rows']}. Config: `{json.dumps(res['config'])}`. "
        "Models: `bnn` = the cascade (stage 1 + stage 2), `bnn_screen` = stage 1 alone, `mlp` = full-precision "
        "MLP (128/64) on the same features, `tree` = random forest (50 trees). In `heldout` and `zeek` the BNN is "
        "the given model file; in the other protocols it is retrained per fold with the config's epochs."
    )
    if "heldout" in res:
        h = res["heldout"]
        out += ["", f"## Held-out 20 % (split seed {h['split_seed']}; same data as training: {h['same_data_as_training']})", ""]
        out += [*_model_rows(h["models"]), ""]
        out += [f"Fraction of flows reaching stage 2: {_f(h['fraction_to_stage2'])}.", "", "Per family (BNN cascade):", ""]
        out += _per_family(h["models"])
    for key in [k for k in res["protocols"] if k.startswith("cv")]:
        r = res[key]
        out += ["", f"## Stratified {r['k']}-fold cross-validation ({r['rows']} rows, {r['duplicates_removed_before_split']} duplicates removed before splitting; {r['epochs']} epochs per fold)", ""]
        out += ["Pooled out-of-fold predictions:", "", *_model_rows(r["pooled"]), ""]
        s = r["summary"]
        out += ["Per-fold spread (mean ± std):", "", "| model | accuracy | precision | recall | family acc |", "|---|---|---|---|---|"]
        for m, v in s.items():
            out.append(
                f"| {m} | {v['accuracy']['mean']:.4f} ± {v['accuracy']['std']:.4f} | {v['precision']['mean']:.4f} ± {v['precision']['std']:.4f} | "
                f"{v['recall']['mean']:.4f} ± {v['recall']['std']:.4f} | {v['family_accuracy']['mean']:.4f} ± {v['family_accuracy']['std']:.4f} |"
            )
        out += ["", "Per family (BNN cascade, pooled):", "", *_per_family(r["pooled"])]
    if "lodo" in res:
        out += ["", "## Leave-one-dataset-out", "", *_groups_table(res["lodo"])]
    if "loday" in res:
        out += ["", "## Leave-one-day-out (dataset@day)", "", *_groups_table(res["loday"])]
    if "zeek" in res:
        out += ["", "## Cross-source: labelled Zeek conn logs (never trained on)", "", *_zeek_table(res["zeek"])]
    if "zeekloco" in res:
        out += ["", "## Zeek capture-level split (trained on CIC + the other captures; reported separately)", ""]
        out += [*_groups_table(res["zeekloco"]), "", "| capture | label | n | BNN | screen | MLP | tree |", "|---|---|---|---|---|---|---|"]
        for f in res["zeekloco"]["folds"]:
            for lab, v in f["per_label"].items():
                out.append(f"| {f['name']} | {lab} | {v['n']} | {_f(v['bnn'], 3)} | {_f(v['bnn_screen'], 3)} | {_f(v['mlp'], 3)} | {_f(v['tree'], 3)} |")
    out += ["", "Plots: " + ", ".join(f"`{p}`" for p in res.get("plots", [])), ""]
    return "\n".join(out)


def plots(out: Path, data: dict[str, Any]) -> list[str]:
    """Confusion matrices (binary + family), ROC + PR, score histograms per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    written: list[str] = []
    for key, (y, preds) in data.items():
        yb = (y != 0).astype(np.int64)
        pb, score, pf = preds["bnn"]
        fig, ax = plt.subplots(1, 2, figsize=(12, 5))
        cmb = np.array(metrics.confusion(yb, pb, 2))
        cmf = np.array(metrics.confusion(y, pf))
        for a, cm, names, title in ((ax[0], cmb, ["benign", "attack"], "binary"), (ax[1], cmf, list(FAMILIES), "family")):
            a.imshow(np.log1p(cm), cmap="Blues")
            a.set_xticks(range(len(names)), names, rotation=45, ha="right")
            a.set_yticks(range(len(names)), names)
            for i in range(cm.shape[0]):
                for j in range(cm.shape[1]):
                    if cm[i, j]:
                        a.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7)
            a.set_xlabel("predicted")
            a.set_ylabel("true")
            a.set_title(f"{key}: BNN cascade, {title}")
        fig.tight_layout()
        written.append(_save(fig, out / f"{key}_confusion.png"))
        fig, ax = plt.subplots(1, 2, figsize=(12, 5))
        for m, (_, sc, _) in preds.items():
            if 0 < yb.sum() < len(yb):
                fpr, tpr, _ = roc_curve(yb, sc)
                pr, rc, _ = precision_recall_curve(yb, sc)
                ax[0].plot(fpr, tpr, label=m)
                ax[1].plot(rc, pr, label=m)
        ax[0].set_xscale("log")
        ax[0].set_xlim(1e-4, 1)
        ax[0].set(xlabel="false-positive rate (log)", ylabel="true-positive rate", title=f"{key}: ROC")
        ax[1].set(xlabel="recall", ylabel="precision", title=f"{key}: precision-recall")
        for a in ax:
            a.legend()
            a.grid(alpha=0.3)
        fig.tight_layout()
        written.append(_save(fig, out / f"{key}_roc_pr.png"))
        fig, ax = plt.subplots(figsize=(9, 5))
        bins = np.linspace(0, 2, 41)
        for k, fam in enumerate(FAMILIES):
            if (y == k).any():
                ax.hist(score[y == k], bins=bins.tolist(), histtype="step", label=f"{fam} ({int((y == k).sum())})", density=True)
        ax.axvline(1.0, color="k", ls=":", lw=1)
        ax.set(
            xlabel="cascade score: p1 below the screen threshold, 1 + p2 above it",
            ylabel="density",
            title=f"{key}: BNN score by true family",
        )
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, out / f"{key}_score_hist.png"))
    return written


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def write(out: Path, res: dict[str, Any], plot_data: dict[str, Any], model_path: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    res["plots"] = plots(out, plot_data)
    (out / "metrics.json").write_text(json.dumps(res, indent=1, default=_json_default))
    (out / "README.md").write_text(markdown(res, model_path))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
