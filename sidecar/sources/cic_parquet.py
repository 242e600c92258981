"""Reader for CICFlowMeter rows stored as Parquet (``.parquet``, or gzip-wrapped ``.parquet.gz``)
-> the same canonical :class:`FlowBatch` as :mod:`sidecar.sources.cic_csv`.

Made for the widely used Parquet re-packaging of CSE-CIC-IDS2018 (CIC-IDS2017-style names such
as ``Total Fwd Packets``, ``Fwd Packets Length Total``, ``Init Fwd Win Bytes``; no ``Dst Port``, no
``Timestamp``; ``Label`` a dictionary column; most floats downcast to float32). Column names go
through :data:`PARQUET_ALIASES` and then :func:`sidecar.sources.cic_columns.canonical_name`;
the batch is built by :func:`sidecar.sources.cic_csv.build_batch`, so units, ports and
the ``extra`` columns follow the CSV reader exactly:

* no ``Dst Port``/``Src Port`` -> ``resp_p``/``orig_p`` = -1 (missing, never 0); no
  ``Timestamp`` -> NaN ``ts``; float32 values are widened to float64 as stored (not rounded);
* a row with a null, Infinity or NaN numeric value is a counted skip ``inf-nan`` (an unparseable
  number in a string-typed numeric column: ``bad-number``), as in the CSV reader; amounts are
  range-checked by :func:`sidecar.sources.amounts.check_amounts`;
* a file lacking any of the columns the features are built from (:data:`REQUIRED`: Flow Duration,
  Tot Fwd/Bwd Pkts, TotLen Fwd/Bwd Pkts) is skipped whole: every row counted once as
  ``missing-columns`` and one log line naming the absent columns. Reading it would give rows
  whose packet and byte features are all missing, which no live source ever produces;
* a gzip wrapper cut short -> one ``truncated-input`` skip; a file that is not Parquet, or
  whose data pages are corrupt -> one ``bad-parquet`` skip (rows before the damage are kept).

pyarrow is needed only here (the ``train`` extra); without it :func:`read_path` raises
:class:`~sidecar.errors.InputError`.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from sidecar.errors import InputError
from sidecar.flow import FlowBatch
from sidecar.sources.amounts import check_amounts
from sidecar.sources.base import ReadStats
from sidecar.sources.cic_columns import canonical_name, is_pypi_header, unique_names
from sidecar.sources.cic_csv import _BAD_NUM, _STRING_COLS, build_batch, parse_ts

__all__ = ["PARQUET_ALIASES", "REQUIRED", "SOURCE", "read_path"]

log = logging.getLogger(__name__)

SOURCE = "cic-parquet"

#: Parquet (Kaggle re-packaging) names that :func:`canonical_name` does not know -> canonical.
PARQUET_ALIASES: dict[str, str] = {
    "Fwd Packets Length Total": "TotLen Fwd Pkts",
    "Bwd Packets Length Total": "TotLen Bwd Pkts",
    "Avg Packet Size": "Pkt Size Avg",
    "Init Fwd Win Bytes": "Init Fwd Win Byts",
    "Init Bwd Win Bytes": "Init Bwd Win Byts",
    "Fwd Act Data Packets": "Fwd Act Data Pkts",
    **{f"{d} Packet Length {s}": f"{d} Pkt Len {s}" for d in ("Fwd", "Bwd") for s in ("Max", "Min", "Mean", "Std")},
}

#: canonical columns the features need; a file without any of them is skipped whole
REQUIRED: tuple[str, ...] = ("Flow Duration", "Tot Fwd Pkts", "Tot Bwd Pkts", "TotLen Fwd Pkts", "TotLen Bwd Pkts")

#: gzip-wrapped files up to this size are unpacked in memory, larger ones spill to a temp file
_SPOOL_MAX = 64 << 20


def _name(raw: str) -> str:
    s = raw.strip()
    return PARQUET_ALIASES.get(s) or canonical_name(s)


def _open(path: Path) -> IO[bytes]:
    """A seekable binary file with the Parquet bytes; a gzip wrapper (by magic bytes, as
    :func:`sidecar.sources.bom.open_records` decides) is removed. A damaged gzip stream raises
    ``OSError``/``EOFError``; a missing file raises as the CSV reader's does."""
    f = open(path, "rb")  # noqa: SIM115 - returned to the caller
    if f.read(2) != b"\x1f\x8b":
        f.seek(0)
        return f
    f.seek(0)
    tmp = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MAX)  # noqa: SIM115 - returned to the caller
    try:
        with f, gzip.GzipFile(fileobj=f, mode="rb") as gz:
            shutil.copyfileobj(gz, tmp, 1 << 20)
    except BaseException:
        tmp.close()
        raise
    tmp.seek(0)
    return tmp


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise InputError(f"reading Parquet needs pyarrow, in the 'train' extra (pip install -e '.[train]'): {exc}") from exc
    return pa, pq


def read_path(path: str | os.PathLike[str], stats: ReadStats, batch_size: int = 65536) -> Iterator[FlowBatch]:
    """Read one CICFlowMeter Parquet file (plain or gzip-wrapped); never raises on bad input."""
    pa, pq = _pyarrow()
    p = Path(path)
    try:
        fh = _open(p)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (OSError, EOFError) as e:  # gzip cut mid-stream or damaged (BadGzipFile is an OSError)
        stats.skip("truncated-input", where=str(p), detail=str(e))
        return
    with fh:
        try:
            pf = pq.ParquetFile(fh)
        except (pa.ArrowException, OSError, ValueError) as e:
            stats.skip("bad-parquet", where=str(p), detail=str(e))
            return
        raw_names = list(pf.schema_arrow.names)
        names = unique_names(raw_names, _name)
        lacking = [c for c in REQUIRED if c not in names]
        if lacking:
            n_rows = int(pf.metadata.num_rows)
            stats.read += n_rows
            stats.skipped["missing-columns"] += n_rows
            log.warning("skipped %s: all %d rows (missing-columns): no %s", p, n_rows, ", ".join(lacking))
            return
        pypi = is_pypi_header(raw_names)
        row0 = 0
        batches = pf.iter_batches(batch_size=batch_size)
        while True:
            try:
                rb = next(batches)
            except StopIteration:
                break
            except (pa.ArrowException, OSError, ValueError) as e:
                stats.skip("bad-parquet", where=f"{p}:row {row0 + 1}", detail=str(e))
                break
            b = _batch(pa, rb, names, stats, p, row0, pypi)
            row0 += rb.num_rows
            if b is not None:
                b = check_amounts(b, stats, str(p))
                stats.emitted += len(b)
                if len(b):
                    yield b


def _strings(pa: Any, arr: Any) -> list[Any]:
    """A column as Python strings (dictionary/category decoded); null -> None."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return [None if v is None else str(v) for v in arr.to_pylist()]


def _numbers(pa: Any, arr: Any) -> tuple[np.ndarray, np.ndarray]:
    """A numeric column as float64 (nulls NaN) and a per-row ``bad-number`` mask."""
    n = len(arr)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        out = np.full(n, np.nan)
        bad = np.zeros(n, dtype=bool)
        for i, v in enumerate(arr.to_pylist()):
            cell = (v or "").strip()
            if not cell or cell.lower() in _BAD_NUM:
                continue  # NaN: an inf-nan skip, as the CSV reader does
            try:
                out[i] = float(cell)
            except ValueError:
                bad[i] = True
        return out, bad
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_duration(t):
        return np.full(n, np.nan), np.ones(n, dtype=bool)  # not a CIC number
    try:
        vals = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowException, TypeError) as e:
        log.debug("column of type %s is not numeric: %s", t, e)
        return np.full(n, np.nan), np.ones(n, dtype=bool)
    return np.asarray(vals, dtype=np.float64), np.zeros(n, dtype=bool)


def _ts(pa: Any, arr: Any) -> np.ndarray:
    """Timestamp column -> epoch seconds (naive values read as UTC, as the CSV reader does)."""
    t = arr.type
    if pa.types.is_timestamp(t):
        per_s = {"s": 1, "ms": 1000, "us": 1_000_000, "ns": 1_000_000}[t.unit]
        ints = arr.cast(pa.int64())
        v = np.asarray(ints.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        if t.unit == "ns":  # to whole microseconds first: ns since 1970 do not fit a float64 exactly
            v = np.floor_divide(v, 1000)
        out = v.astype(np.float64) / per_s  # rounded as datetime.timestamp() rounds
        out[~np.asarray(ints.is_valid().to_numpy(zero_copy_only=False), dtype=bool)] = np.nan
        return out
    return np.asarray([math.nan if s is None else parse_ts(s) for s in _strings(pa, arr)], dtype=np.float64)


def _batch(
    pa: Any, rb: Any, names: list[str], stats: ReadStats, path: Path, row0: int, pypi: bool
) -> FlowBatch | None:
    """One record batch -> canonical batch of its valid rows (others counted as skips)."""
    n = rb.num_rows
    stats.read += n
    numeric: dict[str, np.ndarray] = {}
    bad_num = np.zeros(n, dtype=bool)
    for c, arr in zip(names, rb.columns, strict=True):
        if c in _STRING_COLS:
            continue
        vals, bad = _numbers(pa, arr)
        numeric[c] = vals
        bad_num |= bad
    fin = np.ones(n, dtype=bool)
    for vals in numeric.values():
        fin &= np.isfinite(vals)
    inf_nan = ~fin & ~bad_num
    for reason, mask in (("bad-number", bad_num), ("inf-nan", inf_nan)):
        for i in np.flatnonzero(mask).tolist():
            bad_cols = [c for c, v in numeric.items() if not math.isfinite(float(v[i]))]
            stats.skip(reason, where=f"{path}:row {row0 + i + 1}", detail=",".join(bad_cols)[:200])
    keep = ~(bad_num | inf_nan)
    if not keep.any():
        return None
    k = int(keep.sum())
    col = dict(zip(names, rb.columns, strict=True))

    def sval(name: str) -> list[Any]:
        a = col.get(name)
        if a is None:
            return [None] * k
        vals = [None if s is None else (s.strip() or None) for s in _strings(pa, a)]
        return [v for v, ok in zip(vals, keep.tolist(), strict=True) if ok]

    ts_a = col.get("Timestamp")
    ts = _ts(pa, ts_a)[keep] if ts_a is not None else np.full(k, np.nan)
    rows = (np.flatnonzero(keep) + row0 + 1).tolist()
    fid = sval("Flow ID")
    uid = [f if f is not None else f"{path.name}:{r}" for f, r in zip(fid, rows, strict=True)]
    lab = col.get("Label")
    label = None
    if lab is not None:
        label = [("" if s is None else s.strip()) for s, ok in zip(_strings(pa, lab), keep.tolist(), strict=True) if ok]
    return build_batch(
        {c: v[keep] for c, v in numeric.items()},
        k,
        ts=ts,
        uid=uid,
        orig_h=sval("Src IP"),
        resp_h=sval("Dst IP"),
        label=label,
        pypi=pypi,
        source=SOURCE,
    )
