"""Training data: every CIC CSV -> feature matrix + labels, with a per-file/per-label report.

:func:`load_cic` reads each file through :func:`read_cic` (the CSV or Parquet reader) and
:func:`sidecar.features.schema.extract`, maps raw labels to families with
:func:`sidecar.features.labels.family` (unknown labels are counted and dropped), then
removes exact duplicates of (feature row, family) **before** any split, so no duplicate
can sit on both sides of a train/test split. Row counts in the report are per file and
raw label: ``read`` (rows the reader emitted), ``kept`` (known label), ``dropped_unknown``;
``report["duplicates_removed"]`` is the global count removed by de-duplication.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sidecar.features.labels import FAMILIES, family
from sidecar.features.schema import FEATURE_NAMES, extract
from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.sources.cic_csv import read_path

log = logging.getLogger(__name__)

DATA_ROOT = Path(os.environ.get("BNN_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def default_paths(root: str | os.PathLike[str] = DATA_ROOT) -> list[Path]:
    """All CIC CSVs used for training (sorted, deterministic)."""
    r = Path(root)
    out: list[Path] = []
    c18 = r / "cic-ids2018"
    out += sorted(c18.glob("*.csv.gz")) + sorted(c18.glob("*.csv"))
    out += sorted((c18 / "variants" / "improved-2022").glob("*.csv.gz"))
    out += sorted((c18 / "secondary-cic-ids2017").glob("*.csv.gz"))
    out += sorted((r / "cic-ids2017-improved").glob("*.csv.gz"))
    out += sorted((c18 / "more").glob("*/*.csv.gz"))  # original CSE-CIC-IDS2018 rows
    return out


def parquet_paths(root: str | os.PathLike[str] = DATA_ROOT) -> list[Path]:
    """The CSE-CIC-IDS2018 Parquet files of the shared layout (``train --parquet``; not in the default:
    they have no destination port, and training on them was measured to hurt, see models/README.md)."""
    more = Path(root) / "cic-ids2018" / "more"
    return sorted(more.glob("*/*.parquet.gz")) + sorted(more.glob("*/*.parquet"))


def user_paths(root: str | os.PathLike[str]) -> list[Path]:
    """Every CICFlowMeter file under a user's folder (CSV, gzip CSV, Parquet), sorted."""
    r = Path(root)
    pats = ("*.csv", "*.csv.gz", "*.parquet", "*.parquet.gz")
    return sorted({p for pat in pats for p in r.rglob(pat) if p.is_file()})


def read_cic(path: str | os.PathLike[str], stats: ReadStats, batch_size: int = 65536) -> Iterator[FlowBatch]:
    """One CIC file through the reader for its suffix: Parquet (``.parquet[.gz]``, needs pyarrow) or CSV."""
    if Path(path).name.lower().endswith((".parquet", ".parquet.gz")):
        from sidecar.sources.cic_parquet import read_path as read_parquet

        return read_parquet(path, stats, batch_size=batch_size)
    return read_path(path, stats, batch_size=batch_size)


def dataset_of(path: str | os.PathLike[str]) -> str:
    """Which dataset a file belongs to (for leave-one-dataset-out), from its path."""
    s = Path(path).as_posix()
    if "/variants/improved-2022/" in s:
        return "cse-cic-ids2018-improved"
    if "/secondary-cic-ids2017/" in s:
        return "cic-ids2017-secondary"
    if "/cic-ids2017-improved/" in s:
        return "cic-ids2017-improved"
    if "/cic-ids2018/" in s:
        return "cse-cic-ids2018"
    return Path(path).parent.name or "data"


def day_of(ts: np.ndarray) -> np.ndarray:
    """Capture day ``YYYY-MM-DD`` (UTC) from timestamps; ``""`` where missing or implausible."""
    out = np.full(len(ts), "", dtype=object)
    ok = np.isfinite(ts) & (ts > 1.0e9)  # label-encoded / relative timestamps are not dates
    if ok.any():
        d = ts[ok].astype("datetime64[s]").astype("datetime64[D]").astype(str)
        out[ok] = d
    return out


@dataclass
class Table:
    """De-duplicated rows with their groups: ``dataset`` name and capture ``day`` ("" if unknown)."""

    X: np.ndarray
    y: np.ndarray
    dataset: np.ndarray
    day: np.ndarray
    report: dict[str, Any]


def load_cic(
    paths: Iterable[str | os.PathLike[str]] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], dict[str, Any]]:
    """Load CIC CSVs -> ``(X float32[n,F], y_family int64[n], y_bin int64[n], feature names, report)``.

    ``y_family`` indexes :data:`FAMILIES` (0 = benign); ``y_bin = y_family != 0``.
    """
    t = load_table(paths)
    return t.X, t.y, (t.y != 0).astype(np.int64), list(FEATURE_NAMES), t.report


def load_table(paths: Iterable[str | os.PathLike[str]] | None = None) -> Table:
    """Like :func:`load_cic`, keeping each row's dataset and day (for the leave-one-out protocols)."""
    plist = default_paths() if paths is None else [Path(p) for p in paths]
    fam_idx = {f: i for i, f in enumerate(FAMILIES)}
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    gs: list[np.ndarray] = []  # dataset name per row
    ds: list[np.ndarray] = []  # day per row
    table: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    unknown_total = 0
    for p in plist:
        stats = ReadStats()
        per: dict[str, dict[str, Any]] = {}
        for batch in read_cic(p, stats):
            X = extract(batch)
            raw = list(batch.label) if batch.label is not None else [None] * len(batch)
            fams = [family(r) for r in raw]
            keep = np.array([f is not None for f in fams], dtype=bool)
            for r, f in zip(raw, fams, strict=True):
                key = str(r)
                row = per.setdefault(
                    key,
                    {"file": str(p), "label": key, "family": f, "read": 0, "kept": 0, "dropped_unknown": 0},
                )
                row["read"] += 1
                if f is None:
                    row["dropped_unknown"] += 1
                else:
                    row["kept"] += 1
            xs.append(X[keep])
            ys.append(np.array([fam_idx[f] for f in fams if f is not None], dtype=np.int64))
            gs.append(np.full(int(keep.sum()), dataset_of(p), dtype=object))
            ds.append(day_of(np.asarray(batch["ts"], dtype=np.float64))[keep])
        for reason, c in stats.skipped.items():
            skipped[f"{p.name}:{reason}"] += c
        unknown_total += sum(r["dropped_unknown"] for r in per.values())
        table.extend(per.values())
    F = len(FEATURE_NAMES)
    X_all = np.concatenate(xs) if xs else np.zeros((0, F), np.float32)
    y_all = np.concatenate(ys) if ys else np.zeros(0, np.int64)
    g_all = np.concatenate(gs) if gs else np.zeros(0, object)
    d_all = np.concatenate(ds) if ds else np.zeros(0, object)
    n_before = len(y_all)
    # exact duplicates of (features, label); NaN-safe via the raw bytes of the float32 row
    if n_before:
        rows = np.ascontiguousarray(
            np.concatenate([X_all.view(np.uint32), y_all[:, None].astype(np.uint32)], axis=1)
        )
        _, first = np.unique(rows.view(np.dtype((np.void, rows.shape[1] * 4))).ravel(), return_index=True)
        first.sort()
        X_all, y_all = X_all[first], y_all[first]
        g_all, d_all = g_all[first], d_all[first]
    dups = n_before - len(y_all)
    report: dict[str, Any] = {
        "files": [str(p) for p in plist],
        "rows_kept_before_dedup": n_before,
        "duplicates_removed": dups,
        "rows": len(y_all),
        "unknown_dropped": unknown_total,
        "reader_skipped": dict(skipped),
        "family_counts": {FAMILIES[i]: int(c) for i, c in sorted(Counter(y_all.tolist()).items())},
        "table": table,
    }
    log.info("load_cic: %d rows (%d duplicates removed, %d unknown dropped)", len(y_all), dups, unknown_total)
    return Table(X_all.astype(np.float32), y_all, g_all, d_all, report)


def format_table(table: Sequence[dict[str, Any]]) -> str:
    """Plain-text rendering of the per-file/per-label table."""
    lines = [f"{'file':40s} {'label':36s} {'family':12s} {'read':>7s} {'kept':>7s} {'unk':>5s}"]
    for r in table:
        lines.append(
            f"{Path(r['file']).name[:40]:40s} {r['label'][:36]:36s} {r['family']!s:12s} "
            f"{r['read']:7d} {r['kept']:7d} {r['dropped_unknown']:5d}"
        )
    return "\n".join(lines)


@dataclass
class Capture:
    """One labelled Zeek conn log: features, family labels and the raw label strings."""

    name: str
    X: np.ndarray
    y: np.ndarray  # family index; rows without ground truth (Background/Unknown) are dropped
    labels: np.ndarray  # raw "Label/detail" strings
    no_packets: np.ndarray  # bool: orig_pkts == resp_pkts == 0 (Zeek saw no packet of the flow)
    dropped: int
    suspect: np.ndarray  # bool: label suspected wrong (sidecar.train.label_audit), kept as is


def zeek_labeled_paths(root: str | os.PathLike[str] = DATA_ROOT) -> list[Path]:
    base = Path(root) / "zeek-labeled"
    return sorted(p for p in base.rglob("*.gz") if "conn" in p.name and "labels.config" not in p.name)


def load_zeek_capture(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Capture:
    """Read one labelled conn log with the sidecar's own Zeek reader and feature extraction."""
    from sidecar.features.labels import zeek_family
    from sidecar.sources.zeek_tsv import read_path as read_zeek

    p = Path(path)
    fam_idx = {f: i for i, f in enumerate(FAMILIES)}
    from sidecar.train.label_audit import suspect_mask

    name = p.parent.relative_to(Path(root) / "zeek-labeled").as_posix() if root else p.parent.name
    xs, ys, ls, zs, ss = [], [], [], [], []
    dropped = 0
    for batch in read_zeek(p, ReadStats()):
        raw = list(batch.label) if batch.label is not None else [None] * len(batch)
        fams = [zeek_family(r) for r in raw]
        keep = np.array([f is not None for f in fams], dtype=bool)
        dropped += int((~keep).sum())
        xs.append(extract(batch)[keep])
        ys.append(np.array([fam_idx[f] for f in fams if f is not None], dtype=np.int64))
        ls.append(np.asarray(raw, dtype=object)[keep])
        op = np.asarray(batch["orig_pkts"], dtype=np.float64)
        rp = np.asarray(batch["resp_pkts"], dtype=np.float64)
        zs.append(((op == 0) & (rp == 0))[keep])
        raw_a = np.asarray([str(r) for r in raw], dtype=object)
        sus = suspect_mask(name, raw_a, np.asarray(batch["resp_h"], dtype=object), np.asarray(batch["resp_p"]))
        ss.append(sus[keep])
    F = len(FEATURE_NAMES)
    return Capture(
        name,
        np.concatenate(xs) if xs else np.zeros((0, F), np.float32),
        np.concatenate(ys) if ys else np.zeros(0, np.int64),
        np.concatenate(ls) if ls else np.zeros(0, object),
        np.concatenate(zs) if zs else np.zeros(0, bool),
        dropped,
        np.concatenate(ss) if ss else np.zeros(0, bool),
    )
