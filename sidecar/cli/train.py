"""``bnn-sidecar train``: train the BNN cascade on CICFlowMeter CSVs and export it (``train`` extra).

The shipped default model is reproduced with::

    bnn-sidecar train --data ../shared/data --out /tmp/bnn --epochs 20 --seed 0

``--data`` is a folder: the project's shared layout (``cic-ids2018/``, ``cic-ids2017-improved/``) is
used when present, otherwise every ``*.csv``/``*.csv.gz`` below it (e.g. the per-day
CSE-CIC-IDS2018 files). Prints the rows kept and dropped per file and label, writes
``model.onnx`` (+ ``.sha256``), ``model.bnnpack.npz``, ``metrics.json`` and ``data_report.json``.

``--stream`` (automatic when the CSVs total more than 256 MB, e.g. the full 16 M-row
CSE-CIC-IDS2018) reads the files in chunks with bounded memory (:mod:`sidecar.train.stream`):
features go to ``OUT/_features/features.f32`` (memmap), training encodes each minibatch on
the fly. Progress bars show files, rows and epochs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sidecar.errors import ConfigError, InputError

#: total CSV bytes above which ``train`` streams (bounded memory) instead of loading in one go
STREAM_ABOVE = 256 << 20


def bnn_n_thresh() -> int:
    """The training default (sidecar.train.bnn.N_THRESH) without importing torch for ``--help``."""
    return 7


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="folder of CICFlowMeter CSVs")
    p.add_argument("--out", required=True, help="output folder (model.onnx, .sha256, .bnnpack.npz, reports)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--stage2",
        choices=("committee", "stacked"),
        default="committee",
        help="second stage: committee (default, the shipped model: a second BNN from another initialisation must "
        "agree) or stacked (a BNN trained on what stage 1 flags, with its score as input)",
    )
    p.add_argument(
        "--thermometer-steps",
        type=int,
        default=bnn_n_thresh(),
        metavar="N",
        help="quantile thresholds per feature in the BNNs' input code (default 7, the shipped model; "
        "see the model card's configuration study)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--parquet",
        action="store_true",
        help="with the shared data layout: also read cic-ids2018/more/*/*.parquet.gz (no destination port; "
        "off by default, see the model card). A folder of your own is read whole, Parquet included",
    )
    p.add_argument("--stream", action="store_true", help="bounded-memory chunked loading (auto above 256 MB of CSV)")
    p.add_argument(
        "--benign",
        nargs="+",
        metavar="PATH",
        default=[],
        help="your own network's benign records (conn.log, eve, CSV; files or folders) added to the training part "
        "(labelled files: benign rows only)",
    )
    p.add_argument("--benign-weight", type=int, default=1, metavar="N",
                   help="with --benign: each of your records counts N times in training (the model card measures 1 and 3)")


def run(args: argparse.Namespace) -> int:
    try:
        from sidecar.train.cascade import train_and_export
        from sidecar.train.data import default_paths, format_table, load_table, parquet_paths, user_paths
    except ImportError as exc:
        raise InputError(f"training needs the 'train' extra (pip install -e '.[train]'): {exc}") from exc
    from sidecar.engines.pack import pack_onnx

    if not 1 <= args.thermometer_steps <= 63:
        raise ConfigError(f"--thermometer-steps must be 1..63, got {args.thermometer_steps}")
    if not 1 <= args.benign_weight <= 100:
        raise ConfigError(f"--benign-weight must be 1..100, got {args.benign_weight}")
    root = Path(args.data)
    paths = default_paths(root)
    if paths and args.parquet:
        paths += parquet_paths(root)
    if not paths:
        paths = user_paths(root)
    if not paths:
        raise InputError(f"no CICFlowMeter CSV or Parquet files under {root}")
    total = sum(p.stat().st_size for p in paths)
    out = Path(args.out)
    if args.stream or total > STREAM_ABOVE:
        from sidecar.train.stream import stream_table

        t: Any = stream_table(paths, out / "_features", progress=not args.no_progress)
    else:
        t = load_table(paths)
    if len(t.y) == 0:
        raise InputError(f"no labelled rows in {len(paths)} files under {root}")
    rep = t.report
    print(format_table(rep["table"]))
    print(
        f"rows: {rep['rows']} kept of {rep['rows_kept_before_dedup']} (duplicates removed: {rep['duplicates_removed']}, "
        f"unknown labels dropped: {rep['unknown_dropped']}, reader skipped: {sum(rep['reader_skipped'].values())}) "
        f"from {len(paths)} files"
    )
    extra = None
    if args.benign:
        from sidecar.train.benign import load_benign

        b = load_benign(args.benign, cic_X=t.X)
        extra = b.X
        rep["benign_extra"] = b.report
        for r in b.report["files"]:
            print(f"benign extra {r['file']}: read {r['read']}, kept {r['kept']} (not benign {r['not_benign']}, "
                  f"no ground truth {r['no_ground_truth']}, no packets {r['no_packets']})")
        print(f"benign extra rows: {b.report['rows']} (duplicates removed {b.report['duplicates_removed']}, "
              f"equal to a CIC row {b.report['equal_to_cic_row_removed']}, non-record files {b.report['files_skipped']})")
    metrics = train_and_export(
        out, t.X, t.y, seed=args.seed, epochs=args.epochs, report=rep, progress=not args.no_progress, extra_benign=extra,
        n_thresh=args.thermometer_steps,
        stage2_kind=args.stage2, extra_weight=args.benign_weight,
    )
    pack_onnx(out / "model.onnx", out / "model.bnnpack.npz")
    h = metrics["headline"]
    print(f"held-out screen (stage 1): precision {h['screen_precision']:.4f} recall {h['screen_recall']:.4f}")
    for k in ("accuracy", "precision", "recall", "f1", "family_accuracy", "fraction_to_stage2"):
        print(f"held-out cascade {k}: {h[k]:.4f}")
    print(f"wrote {out} (train {metrics['train_seconds']} s)")
    return 0
