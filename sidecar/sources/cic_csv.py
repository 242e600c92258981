"""Reader for CICFlowMeter CSV files (every header dialect) -> canonical :class:`FlowBatch`.

Dialects handled (header names are normalised to the CSE-CIC-IDS2018 names, e.g.
``Dst Port``, ``Tot Fwd Pkts``, ``TotLen Fwd Pkts``, by :data:`ALIASES` and a
snake_case key match):

* CSE-CIC-IDS2018 (79/80/84 columns, ``Dst Port``, ``Tot Fwd Pkts``...);
* CIC-IDS2017 ``GeneratedLabelledFlows`` / ``MachineLearningCSV`` (names with leading
  spaces, ``Destination Port``, ``Total Fwd Packets``, ``Total Length of Fwd Packets``);
* the 2022 "improved" re-extraction (``Total Fwd Packet``, ``Attempted Category``...);
* the PyPI ``cicflowmeter`` 0.5 snake_case output (``dst_port``, ``tot_fwd_pkts``): see
  :func:`_pypi_units` (seconds -> microseconds, whole-frame bytes -> payload).

Canonical mapping: ``duration`` = Flow Duration / 1e6 s, ``orig_pkts``/``resp_pkts`` =
Tot Fwd/Bwd Pkts, ``orig_bytes``/``resp_bytes`` = TotLen Fwd/Bwd Pkts (payload bytes),
IP bytes and TCP flag bitmasks are missing (CIC has only per-flag counts). All other
numeric CIC columns go to ``FlowBatch.extra`` (float64) under the canonical CIC name.
Rows with ``Infinity``/``NaN`` in a numeric field, repeated header rows, rows with the
wrong column count and unparseable numbers are skipped and counted.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from sidecar.flow import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, FlowBatch
from sidecar.sources.amounts import check_amounts
from sidecar.sources.base import ReadStats
from sidecar.sources.bom import open_records
from sidecar.sources.cic_columns import ALIASES, CANONICAL, canonical_name, is_pypi_header, unique_names

__all__ = ["ALIASES", "CANONICAL", "SOURCE", "build_batch", "canonical_name", "parse_ts", "read_path"]

SOURCE = "cic-csv"
_STRING_COLS = {"Flow ID", "Src IP", "Dst IP", "Timestamp", "Label"}
_PROTO = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6"}
_BAD_NUM = {"infinity", "-infinity", "inf", "-inf", "nan", "+infinity"}


_TS_FORMATS = ("%d/%m/%Y %H:%M:%S", "%d/%m/%Y %I:%M:%S %p", "%d/%m/%Y %H:%M", "%d/%m/%Y %I:%M %p")


def parse_ts(s: str) -> float:
    """CIC timestamp (``15/02/2018 08:25:18``, with AM/PM, or ISO) -> epoch, read as UTC; NaN if unparseable."""
    s = s.strip()
    if not s:
        return math.nan
    for fmt in _TS_FORMATS:
        try:
            return datetime.strptime(s, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            pass
    try:
        d = datetime.fromisoformat(s)
    except ValueError:
        return math.nan
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


def _open_text(path: str | os.PathLike[str]) -> io.TextIOBase:
    """The file (plain or gzip) as text, after one leading UTF-8 BOM."""
    return io.TextIOWrapper(open_records(path), encoding="utf-8", errors="replace", newline="")


def _blank(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _int_or(v: str | None, default: int = -1) -> int:
    if v is None or not v.strip():
        return default
    return int(float(v))


def read_path(path: str | os.PathLike[str], stats: ReadStats, batch_size: int = 65536) -> Iterator[FlowBatch]:
    """Read one CICFlowMeter CSV (plain or gzip); never raises on bad rows."""
    fname = Path(path).name
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        try:
            header_raw = next(reader)
            while _blank(header_raw):  # blank lines before the header: not records, counted
                stats.ignored["blank"] += 1
                header_raw = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            stats.skip("bad-csv", where=f"{path}:1", detail=str(e))
            return
        except (OSError, EOFError) as e:  # a gzip cut mid-stream (gzip.BadGzipFile is an OSError)
            stats.skip("truncated-input", where=str(path), detail=str(e))
            return
        stats.ignored["header"] += 1
        names = unique_names(header_raw)
        pypi = is_pypi_header(header_raw)
        idx = {c: i for i, c in enumerate(names)}
        ncol = len(names)
        num_idx = [i for i, c in enumerate(names) if c not in _STRING_COLS]
        lab_i = idx.get("Label")
        stripped_header = [h.strip() for h in header_raw]

        buf_rows: list[tuple[list[str], list[float], int]] = []

        def flush() -> Iterator[FlowBatch]:
            b = check_amounts(_build(buf_rows, names, idx, num_idx, lab_i, pypi, fname), stats, str(path))
            stats.emitted += len(b)
            if len(b):
                yield b

        lineno = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                lineno += 1
                stats.read += 1
                stats.skip("bad-csv", where=f"{path}:{lineno}", detail=str(e))
                continue
            except (OSError, EOFError) as e:  # a gzip cut mid-stream: keep the rows before it
                stats.skip("truncated-input", where=str(path), detail=str(e))
                break
            lineno = reader.line_num
            if _blank(row):
                stats.ignored["blank"] += 1  # not a record, counted like the Zeek readers do
                continue
            stats.read += 1
            where = f"{path}:{lineno}"
            if [c.strip() for c in row] == stripped_header:
                stats.skip("repeated-header", where=where)
                continue
            if len(row) != ncol:
                stats.skip("bad-columns", where=where, detail=f"{len(row)} columns, want {ncol}")
                continue
            vals: list[float] = []
            reason = ""
            for i in num_idx:
                cell = row[i].strip()
                if not cell or cell.lower() in _BAD_NUM:  # empty = NaN as pandas writes it
                    reason = "inf-nan"
                    break
                try:
                    vals.append(float(cell))
                except ValueError:
                    reason = "bad-number"
                    break
            if not reason and any(math.isinf(v) or math.isnan(v) for v in vals):
                reason = "inf-nan"
            if reason:
                stats.skip(reason, where=where, detail=",".join(row)[:200])
                continue
            buf_rows.append((row, vals, lineno))
            if len(buf_rows) >= batch_size:
                yield from flush()
                buf_rows = []
        if buf_rows:
            yield from flush()


def _build(
    rows: list[tuple[list[str], list[float], int]],
    names: list[str],
    idx: dict[str, int],
    num_idx: list[int],
    lab_i: int | None,
    pypi: bool,
    fname: str,
) -> FlowBatch:
    n = len(rows)
    mat = np.asarray([v for _, v, _ in rows], dtype=np.float64).reshape(n, len(num_idx))

    def sval(col: str) -> list[Any]:
        i = idx.get(col)
        if i is None:
            return [None] * n
        return [r[i].strip() or None for r, _, _ in rows]

    ts_i = idx.get("Timestamp")
    ts = [parse_ts(r[ts_i]) for r, _, _ in rows] if ts_i is not None else [math.nan] * n
    fid = sval("Flow ID")
    uid = [f if f is not None else f"{fname}:{ln}" for f, (_, _, ln) in zip(fid, rows, strict=True)]
    label = [r[lab_i].strip() for r, _, _ in rows] if lab_i is not None else None
    return build_batch(
        {names[i]: mat[:, k] for k, i in enumerate(num_idx)},
        n,
        ts=np.asarray(ts, dtype=np.float64),
        uid=uid,
        orig_h=sval("Src IP"),
        resp_h=sval("Dst IP"),
        label=label,
        pypi=pypi,
    )


def build_batch(
    numeric: dict[str, np.ndarray],
    n: int,
    ts: np.ndarray,
    uid: list[Any],
    orig_h: list[Any],
    resp_h: list[Any],
    label: list[Any] | None,
    pypi: bool = False,
    source: str = SOURCE,
) -> FlowBatch:
    """The canonical batch from validated CIC values (shared by the CSV and Parquet readers).

    ``numeric``: canonical CIC column name -> float64 values (finite; the caller has skipped
    Infinity/NaN rows), in file order; columns absent from the file are missing (NaN / -1).
    """

    def num(col: str) -> np.ndarray:
        a = numeric.get(col)
        return a.copy() if a is not None else np.full(n, np.nan)

    def port(col: str) -> np.ndarray:
        a = numeric.get(col)
        if a is None:
            return np.full(n, -1, dtype=np.int32)
        return np.where((a >= 0) & (a <= 65535), a, -1).astype(np.int32)

    proto_a = num("Protocol")
    protos = [None if p != p else _PROTO.get(int(p), str(int(p))) for p in proto_a.tolist()]
    cols: dict[str, Any] = {
        "ts": ts,
        "uid": uid,
        "orig_h": orig_h,
        "orig_p": port("Src Port"),
        "resp_h": resp_h,
        "resp_p": port("Dst Port"),
        "proto": protos,
        "duration": num("Flow Duration") * 1e-6,
        "orig_pkts": num("Tot Fwd Pkts"),
        "resp_pkts": num("Tot Bwd Pkts"),
        "orig_bytes": num("TotLen Fwd Pkts"),
        "resp_bytes": num("TotLen Bwd Pkts"),
    }
    skip = {"Src Port", "Dst Port", "Protocol", "Flow Duration"}
    extra = {c: np.ascontiguousarray(a) for c, a in numeric.items() if c not in skip}
    if pypi:
        _pypi_units(cols, extra, num, proto_a)
    return FlowBatch.from_columns(cols, source, n=n, label=label, extra=extra)


#: PyPI cicflowmeter columns in SECONDS; CSE-CIC-IDS2018 has them in microseconds.
_PYPI_SECONDS = tuple(
    f"{d} IAT {s}" for d in ("Flow", "Fwd", "Bwd") for s in ("Tot", "Mean", "Std", "Max", "Min")
) + tuple(f"{a} {s}" for a in ("Active", "Idle") for s in ("Mean", "Std", "Max", "Min"))
_L4_HDR = {6: 20.0, 17: 8.0}


def _pypi_units(cols: dict[str, Any], extra: dict[str, np.ndarray], num: Any, proto: np.ndarray) -> None:
    """Convert the PyPI ``cicflowmeter`` 0.5 dialect to the canonical conventions, in place.

    * Times: ``flow_duration``, the IAT and active/idle columns are SECONDS (microseconds in
      CSE-CIC-IDS2018): ``duration`` is read as seconds and the time columns kept in
      ``extra`` are multiplied by 1e6 so they carry the CIC unit.
    * First packet counted twice: 0.5.0 puts a flow's first packet in ``Flow.__init__`` and
      ``add_packet`` adds it again, so ``tot_fwd_pkts`` is one too many and ``totlen_fwd_pkts``
      / ``fwd_header_len`` hold that packet twice. ``orig_pkts = tot_fwd_pkts - 1``; the
      duplicate's frame length is taken as ``fwd_pkt_len_min`` (exact when all forward frames
      have one size, e.g. scans, floods, one-packet UDP; else low by a few bytes).
    * Bytes: ``totlen_*`` (and ``*_pkt_len_*``) are WHOLE-FRAME lengths (``len(packet)``, link
      layer included) where CIC has transport payload. Assuming Ethernet (14 bytes a packet,
      as the eve reader does): ``*_ip_bytes = frames - 14 * pkts``; payload ``= ip_bytes -``
      IP header bytes (``*_header_len``, the exact IHL sum) ``- pkts * transport header`` (TCP
      20, UDP 8; TCP options are unknown and not subtracted, as for eve), clamped at 0.
      Without the ``*_header_len`` columns (a ``--fields`` subset) bytes are left as written.
      ``extra`` keeps the columns as the tool wrote them (apart from the time unit).
    """
    cols["duration"] = num("Flow Duration")
    for c in _PYPI_SECONDS:
        if c in extra:
            extra[c] = extra[c] * 1e6
    l4 = np.asarray([_L4_HDR.get(int(p), 0.0) if p == p else 0.0 for p in proto.tolist()], dtype=np.float64)
    written = cols["orig_pkts"]
    true_fwd = np.where(written >= 1, written - 1.0, written)
    cols["orig_pkts"] = true_fwd
    first = extra.get("Fwd Pkt Len Min", np.zeros(len(written)))
    with np.errstate(invalid="ignore", divide="ignore"):
        keep = np.where(written > 0, true_fwd / written, 1.0)  # share of header bytes not from the duplicate
    for side, d in (("orig", "Fwd"), ("resp", "Bwd")):
        hdr = extra.get(f"{d} Header Len")
        if hdr is None:
            continue
        pkts, frame = cols[f"{side}_pkts"], cols[f"{side}_bytes"]
        if side == "orig":
            frame, hdr = np.maximum(frame - first, 0.0), hdr * keep
        ip = np.maximum(frame - 14.0 * pkts, 0.0)
        cols[f"{side}_ip_bytes"] = ip
        cols[f"{side}_bytes"] = np.maximum(ip - hdr - l4 * pkts, 0.0)
    _pypi_direction_flags(cols, extra, proto)


#: the PyPI dialect's flag-count columns (both directions) and their canonical bits
_PYPI_FLAG_BITS = (("FIN Flag Cnt", FIN), ("SYN Flag Cnt", SYN), ("RST Flag Cnt", RST), ("PSH Flag Cnt", PSH),
                   ("ACK Flag Cnt", ACK), ("URG Flag Cnt", URG), ("ECE Flag Cnt", ECE), ("CWE Flag Count", CWR))


def _pypi_direction_flags(cols: dict[str, Any], extra: dict[str, np.ndarray], proto: np.ndarray) -> None:
    """Per-direction TCP flags where the PyPI counts prove them (in place; elsewhere they stay missing).

    The counts span both directions, but 0.5.0 counts the first forward packet twice. With ONE
    forward packet and at most one backward packet, each flag count is ``2 * fwd + bwd`` with
    fwd, bwd in {0, 1}: the forward packet has the flag iff the count is >= 2, the backward one iff
    what is left is 1. A count that fits no such split leaves the row's flags missing. These rows
    are single-SYN probes, rejected connects and floods: with their flags known, the shared
    feature code gives a SYN-only direction no payload (its TCP options are not data), as for eve.
    """
    if any(c not in extra for c, _ in _PYPI_FLAG_BITS):
        return
    o, r = cols["orig_pkts"], cols["resp_pkts"]
    ok = (proto == 6) & (o == 1) & ((r == 0) | (r == 1))
    fwd = np.zeros(len(o), dtype=np.int16)
    bwd = np.zeros(len(o), dtype=np.int16)
    for col, bit in _PYPI_FLAG_BITS:
        c = extra[col]
        f = c >= 2
        rest = c - 2.0 * f
        ok &= (rest >= 0) & (rest <= r) & (rest == np.floor(rest))
        fwd |= np.where(f, bit, 0).astype(np.int16)
        bwd |= np.where(rest >= 1, bit, 0).astype(np.int16)
    missing = np.full(len(o), -1, dtype=np.int16)
    cols["orig_flags"] = np.where(ok, fwd, missing)
    cols["resp_flags"] = np.where(ok, bwd, missing)
