"""``bnn-sidecar evaluate``: evaluate a model and write a report directory (``train`` extra).

Writes ``DIR/metrics.json``, ``DIR/README.md`` and PNG plots (confusion matrices, ROC + PR,
score histograms per label). The committed report of the shipped model is ``models/report/``::

    bnn-sidecar evaluate --data ../shared/data --out models/report --protocols heldout,cv10,lodo,loday,zeek

Protocols are described in :mod:`sidecar.train.evaluate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sidecar.errors import InputError

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "data" / "model" / "bnn.onnx"


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="ONNX model (default: the shipped one)")
    p.add_argument("--data", default=None, help="data root (shared layout: cic-ids2018/, cic-ids2017-improved/, zeek-labeled/)")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--protocols", default="heldout,cv10,lodo,loday,zeek", help="comma list of heldout,cv10,lodo,loday,zeek")
    p.add_argument("--epochs", type=int, default=5, help="BNN and MLP epochs per retrained fold (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    try:
        from sidecar.train import evaluate as ev
        from sidecar.train import report
        from sidecar.train.data import DATA_ROOT, default_paths, load_table
    except ImportError as exc:
        raise InputError(f"evaluate needs the 'train' extra (pip install -e '.[train]'): {exc}") from exc
    root = Path(args.data) if args.data else DATA_ROOT
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    bad = [p for p in protocols if p not in ev.PROTOCOLS and not (p.startswith("cv") and p[2:].isdigit())]
    if bad:
        raise InputError(f"unknown protocol(s) {bad}; known: {', '.join(ev.PROTOCOLS)} (cvK for K folds)")
    model = Path(args.model)
    if not model.is_file():
        raise InputError(f"model {model} not found")
    paths = default_paths(root) or sorted([*root.rglob("*.csv"), *root.rglob("*.csv.gz")])
    if not paths:
        raise InputError(f"no CICFlowMeter CSV files under {root}")
    t = load_table(paths)
    cfg = ev.Config(epochs=args.epochs, seed=args.seed, progress=not args.no_progress)
    res, plot_data = ev.evaluate(t, model, protocols, cfg, root)
    out = Path(args.out)
    report.write(out, res, plot_data, str(args.model))
    print(f"wrote {out}/metrics.json, {out}/README.md and {len(res.get('plots', []))} plots")
    return 0
