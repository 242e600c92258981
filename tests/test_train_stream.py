"""Streaming training-data loader: bounded memory on real files, same rows as the in-memory loader."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tqdm")

from sidecar.train.data import load_table
from sidecar.train.stream import row_hash, stream_table

FILE = "cic-ids2018/Brute Force -XSS.csv.gz"  # 734 real rows, 3 exact duplicate CSV rows (README)


def _peak(paths: list[Path], wd: Path) -> tuple[int, dict]:
    tracemalloc.start()
    try:
        t = stream_table(paths, wd, progress=False, chunk_rows=128)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, {"rows": t.report["rows"], "raw": t.report["rows_kept_before_dedup"],
                  "dups": t.report["duplicates_removed"], "X": np.asarray(t.X), "y": t.y}


def test_stream_matches_in_memory_loader(shared: Path, tmp_path: Path) -> None:
    p = shared / FILE
    _, s = _peak([p], tmp_path / "a")
    t = load_table([p])
    assert s["rows"] == t.report["rows"] and s["dups"] == t.report["duplicates_removed"] >= 3
    assert np.array_equal(s["X"].view(np.uint32), t.X.view(np.uint32)) and np.array_equal(s["y"], t.y)


@pytest.mark.slow
def test_stream_memory_is_bounded_when_input_grows(shared: Path, tmp_path: Path) -> None:
    p = shared / FILE
    peak1, one = _peak([p], tmp_path / "one")
    peak8, eight = _peak([p] * 8, tmp_path / "eight")
    # 8x the input rows: every repeat is a duplicate and is removed
    assert eight["raw"] == 8 * one["raw"]
    assert eight["rows"] == one["rows"] and eight["dups"] == one["dups"] + 7 * one["raw"]
    # per-row state is ~20 bytes (hash, family, dataset and day codes); the chunk working set is fixed.
    # So the extra peak for 7 * raw more rows stays far below holding them (F=20 float32 = 80 B/row).
    extra = peak8 - peak1
    assert extra < 7 * one["raw"] * 60, (peak1, peak8)


def test_row_hash_separates_label_and_nan_payload() -> None:
    X = np.array([[1.0, np.nan], [1.0, np.nan], [1.0, 2.0]], dtype=np.float32)
    h = row_hash(X, np.array([0, 1, 0]))
    assert len(set(h.tolist())) == 3
    assert row_hash(X[:1], np.array([0]))[0] == h[0]
