"""Streaming, bounded-memory loading of large CIC CSV sets (the full CSE-CIC-IDS2018: 16 M rows).

:func:`stream_table` reads each file in chunks through :func:`sidecar.sources.cic_csv.read_path`
(65,536 rows per batch), extracts the features, and appends them to an on-disk float32 file;
RAM holds only the current chunk plus, per row, a 64-bit row hash, the family (int8), the
dataset code (uint8) and the day code (uint16): 20 bytes per row, about 320 MB for 16 M rows.
Duplicates of (feature row, family) are removed after the pass (first occurrence kept, as
:func:`sidecar.train.data.load_table` does) by sorting the hashes, and the kept rows are
compacted chunk by chunk into ``features.f32`` (an ``np.memmap``), so the feature matrix is
never copied into RAM. A 64-bit hash collision would drop one distinct row (probability about
``n**2 / 2**65``, ~7e-6 for 16 M rows).

Progress bars (tqdm) show files and rows.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sidecar.features.labels import FAMILIES, family
from sidecar.features.schema import FEATURE_NAMES, extract
from sidecar.sources.base import ReadStats
from sidecar.train.data import dataset_of, day_of
from sidecar.train.data import read_cic as read_path

log = logging.getLogger(__name__)

F = len(FEATURE_NAMES)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def row_hash(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """64-bit hash of each (float32 feature row bytes, label): FNV-1a over 32-bit words + a shift mix."""
    a = np.ascontiguousarray(X, dtype=np.float32).view(np.uint32).astype(np.uint64)
    h = np.full(len(a), _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(a.shape[1] + 1):
            h ^= a[:, j] if j < a.shape[1] else np.asarray(y, dtype=np.uint64)
            h *= _FNV_PRIME
            h ^= h >> np.uint64(29)
    return h


@dataclass
class StreamTable:
    X: np.ndarray  # float32 memmap [n, F] of the de-duplicated rows
    y: np.ndarray  # int64 family index
    dataset: np.ndarray  # object: dataset name per row
    day: np.ndarray  # object: "YYYY-MM-DD" or ""
    report: dict[str, Any]


def stream_table(
    paths: Iterable[str | os.PathLike[str]],
    workdir: str | os.PathLike[str],
    progress: bool = True,
    chunk_rows: int = 65536,
) -> StreamTable:
    """Read, featurise and de-duplicate ``paths`` with bounded memory; features live in ``workdir``."""
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    raw_path, out_path = wd / "features.raw.f32", wd / "features.f32"
    fam_idx = {f: i for i, f in enumerate(FAMILIES)}
    hashes: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    dsc: list[np.ndarray] = []
    dyc: list[np.ndarray] = []
    ds_names: dict[str, int] = {}
    day_names: dict[str, int] = {"": 0}
    per: dict[tuple[str, str], dict[str, Any]] = {}
    skipped: Counter[str] = Counter()
    n_raw = 0
    plist = [Path(p) for p in paths]
    rows_bar = tqdm(desc="rows", unit="row", disable=not progress, unit_scale=True)
    with open(raw_path, "wb") as raw:
        for p in tqdm(plist, desc="files", unit="file", disable=not progress):
            stats = ReadStats()
            dcode = ds_names.setdefault(dataset_of(p), len(ds_names))
            for batch in read_path(p, stats, batch_size=chunk_rows):
                rows_bar.update(len(batch))
                labels = list(batch.label) if batch.label is not None else [None] * len(batch)
                fams = [family(r) for r in labels]
                for r, f in zip(labels, fams, strict=True):
                    row = per.setdefault((str(p), str(r)), {"file": str(p), "label": str(r), "family": f,
                                                             "read": 0, "kept": 0, "dropped_unknown": 0})
                    row["read"] += 1
                    row["kept" if f is not None else "dropped_unknown"] += 1
                keep = np.array([f is not None for f in fams], dtype=bool)
                X = extract(batch)[keep]
                y = np.array([fam_idx[f] for f in fams if f is not None], dtype=np.int8)
                days = day_of(np.asarray(batch["ts"], dtype=np.float64))[keep]
                raw.write(np.ascontiguousarray(X, dtype=np.float32).tobytes())
                hashes.append(row_hash(X, y))
                ys.append(y)
                dsc.append(np.full(len(y), dcode, dtype=np.uint8))
                dyc.append(np.array([day_names.setdefault(d, len(day_names)) for d in days], dtype=np.uint16))
                n_raw += len(y)
            for reason, c in stats.skipped.items():
                skipped[f"{p.name}:{reason}"] += c
    rows_bar.close()
    h = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    del hashes
    _, first = np.unique(h, return_index=True)
    del h
    first.sort()
    n = len(first)
    raw_mm = np.memmap(raw_path, dtype=np.float32, mode="r", shape=(n_raw, F)) if n_raw else np.zeros((0, F), np.float32)
    out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=(n, F))
    step = 1 << 20
    for lo in tqdm(range(0, n, step), desc="compact", disable=not progress):
        sel = first[lo : lo + step]
        out[lo : lo + len(sel)] = raw_mm[sel]
    out.flush()
    del raw_mm
    raw_path.unlink()
    y_all = (np.concatenate(ys) if ys else np.zeros(0, np.int8))[first].astype(np.int64)
    ds_arr = np.array(list(ds_names), dtype=object)
    day_arr = np.array(list(day_names), dtype=object)
    dataset = ds_arr[(np.concatenate(dsc) if dsc else np.zeros(0, np.uint8))[first]] if n else np.zeros(0, object)
    day = day_arr[(np.concatenate(dyc) if dyc else np.zeros(0, np.uint16))[first]] if n else np.zeros(0, object)
    report: dict[str, Any] = {
        "files": [str(p) for p in plist],
        "rows_kept_before_dedup": n_raw,
        "duplicates_removed": n_raw - n,
        "rows": n,
        "unknown_dropped": sum(r["dropped_unknown"] for r in per.values()),
        "reader_skipped": dict(skipped),
        "family_counts": {FAMILIES[i]: int(c) for i, c in sorted(Counter(y_all.tolist()).items())},
        "table": list(per.values()),
        "features_file": str(out_path),
    }
    log.info("stream_table: %d rows kept of %d (%d duplicates)", n, n_raw, n_raw - n)
    X_mm = np.load(out_path, mmap_mode="r")
    return StreamTable(X_mm, y_all, dataset, day, report)
