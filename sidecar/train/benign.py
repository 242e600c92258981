"""Extra benign training rows from a site's own records (``train --benign``).

A model trained only on CICFlowMeter rows scores benign traffic unlike CIC's testbed badly (see
``docs/CROSS_SOURCE.md``: benign HTTP and SSH in the traffic lab look like CIC's DoS and brute force).
An operator who has records of their own network that they trust to be benign (a vetted day of
``conn.log``, Suricata eve ``flow`` events, CICFlowMeter CSV) can add them to the training set as
benign. They go into the training part only, never into the CIC held-out split.

Rules, each counted in the report:

* every format the sidecar reads is accepted (:func:`sidecar.sources.detect.read_path`, ``auto``);
  a folder is searched recursively and files that are not flow records are skipped and counted;
* files with labels (labelled Zeek logs, CIC CSV) contribute only their benign-labelled rows;
  rows without ground truth (``Background``, ``Unknown``) and attack rows are dropped;
* records in which the sensor saw no packet (``orig_pkts == resp_pkts == 0``) carry nothing a flow
  model can learn from and are dropped;
* exact duplicate feature rows are removed, and so is every row equal to a CIC row (so an extra row
  can never duplicate a CIC held-out row).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sidecar.errors import InputError
from sidecar.features.labels import family, zeek_family
from sidecar.features.schema import FEATURE_NAMES, ZEEK_SOURCES, extract
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import detect_path, read_path

log = logging.getLogger(__name__)


@dataclass
class BenignRows:
    X: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)


def expand(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], Counter[str]]:
    """Files to read: files as given, folders searched recursively for files the reader detects."""
    out: list[Path] = []
    skipped: Counter[str] = Counter()
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            for f in sorted(q for q in p.rglob("*") if q.is_file()):
                try:
                    detect_path(f)
                except InputError:
                    skipped["not_flow_records"] += 1
                    log.info("benign: %s is not a flow-record file, skipped", f)
                    continue
                out.append(f)
        else:
            raise InputError(f"--benign {p}: no such file or folder")
    return out, skipped


def _benign_mask(batch: Any) -> tuple[np.ndarray, int, int]:
    """(keep, dropped as not benign, dropped as no ground truth) for one batch."""
    n = len(batch)
    if batch.label is None:
        return np.ones(n, dtype=bool), 0, 0
    fam = zeek_family if batch.source in ZEEK_SOURCES else family
    fams = [fam(r) for r in batch.label.tolist()]
    keep = np.array([f == "benign" for f in fams], dtype=bool)
    unknown = sum(1 for f in fams if f is None)
    return keep, int(n - keep.sum()) - unknown, unknown


def load_benign(paths: Iterable[str | os.PathLike[str]], cic_X: np.ndarray | None = None) -> BenignRows:
    """Feature rows of the benign records in ``paths`` (see the module rules) and a per-file report."""
    files, skipped_files = expand(paths)
    xs: list[np.ndarray] = []
    per_file: list[dict[str, Any]] = []
    for f in files:
        stats = ReadStats()
        row: dict[str, Any] = {"file": str(f), "read": 0, "not_benign": 0, "no_ground_truth": 0, "no_packets": 0, "kept": 0}
        for batch in read_path(f, "auto", stats, batch_size=65536):
            keep, not_benign, unknown = _benign_mask(batch)
            op = np.asarray(batch["orig_pkts"], dtype=np.float64)
            rp = np.asarray(batch["resp_pkts"], dtype=np.float64)
            empty = (op == 0) & (rp == 0)
            row["read"] += len(batch)
            row["not_benign"] += not_benign
            row["no_ground_truth"] += unknown
            row["no_packets"] += int((keep & empty).sum())
            keep &= ~empty
            row["kept"] += int(keep.sum())
            xs.append(extract(batch)[keep])
        row["reader_skipped"] = dict(stats.skipped)
        per_file.append(row)
    F = len(FEATURE_NAMES)
    X = np.concatenate(xs).astype(np.float32) if xs else np.zeros((0, F), np.float32)
    n_raw = len(X)
    X = _unique_rows(X)
    n_unique = len(X)
    if cic_X is not None and len(X):
        X = X[~_rows_in(X, np.asarray(cic_X, dtype=np.float32))]
    report = {
        "files": per_file,
        "files_skipped": dict(skipped_files),
        "rows_before_dedup": n_raw,
        "duplicates_removed": n_raw - n_unique,
        "equal_to_cic_row_removed": n_unique - len(X),
        "rows": len(X),
    }
    log.info("benign extras: %d rows from %d files", len(X), len(files))
    return BenignRows(X, report)


def _void(X: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(X.astype(np.float32)).view(np.uint32)
    return a.view(np.dtype((np.void, a.shape[1] * 4))).ravel()


def _unique_rows(X: np.ndarray) -> np.ndarray:
    """Exact duplicates removed (NaN-safe: compares the float32 bytes), first occurrence order kept."""
    if len(X) == 0:
        return X
    _, first = np.unique(_void(X), return_index=True)
    return X[np.sort(first)]


def _rows_in(X: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Bool mask: row of ``X`` equals some row of ``other`` (byte-wise)."""
    if len(other) == 0:
        return np.zeros(len(X), dtype=bool)
    return np.isin(_void(X), _void(other))
