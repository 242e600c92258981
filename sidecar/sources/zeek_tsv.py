"""Zeek conn.log reader, ASCII/TSV format (header driven).

Handles several header blocks in one stream, extra columns (labels, community_id,
the IoT-23 combined ``tunnel_parents   label   detailed-label`` column), ``scope_sep``
names (``id_orig_h``), CRLF line ends and masked btest timestamps. Bad rows are
counted in :class:`ReadStats` and never raise.

Lines are taken in chunks: runs of plain data lines are column-counted in bulk and
converted by the vectorised bytes path (:mod:`sidecar.sources.zeek_tsv_fast`);
header, blank, odd or over-long lines and any block the fast path declines go
through the row-by-row code here, which is the reference.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from itertools import islice, repeat
from pathlib import Path
from typing import IO, Any

import numpy as np

from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.sources.bom import open_records
from sidecar.sources.zeek_tsv_fast import convert_block as _fast_batch
from sidecar.sources.zeek_tsv_fast import fast_sep
from sidecar.sources.zeek_tsv_values import (
    DETAIL_NAMES,
    FLOAT_COLS,
    LABEL_NAMES,
    MAX_COUNT,
    MAX_DURATION,
    MAX_LINE,
    NAME_MAP,
    OUT_COLS,
    PORT_COLS,
    SOURCE,
    STR_COLS,
    BadValue,
    Columns,
    check_amount,
    combine_label,
    convert,
    flags_from_history,
    parse_float,
    parse_port,
)

__all__ = [
    "DETAIL_NAMES",
    "FLOAT_COLS",
    "LABEL_NAMES",
    "MAX_COUNT",
    "MAX_DURATION",
    "MAX_LINE",
    "NAME_MAP",
    "OUT_COLS",
    "PORT_COLS",
    "SOURCE",
    "STR_COLS",
    "BadValue",
    "Columns",
    "check_amount",
    "combine_label",
    "convert",
    "flags_from_history",
    "open_path",
    "parse_float",
    "parse_port",
    "read_lines",
    "read_path",
]

#: lines taken from the input per bulk step
CHUNK = 4096
#: first bytes of a line that is certainly a plain data line (printable ASCII, not '#')
_PLAIN_FIRST = np.zeros(256, dtype=bool)
_PLAIN_FIRST[0x21:0x7F] = True
_PLAIN_FIRST[ord("#")] = False


def _unescape_sep(s: str) -> str:
    try:
        return s.encode("latin-1").decode("unicode_escape")
    except (UnicodeError, ValueError):
        return "\t"


class _Header:
    def __init__(self) -> None:
        self.sep = "\t"
        self.unset = "-"
        self.empty = "(empty)"
        self.path: str | None = None
        self.fields: list[str] | None = None
        self.ncols = 0
        self.combined: int | None = None  # index of a space-joined column group
        self.combined_n = 0
        self.index: dict[str, int] = {}
        self.label_i: int | None = None
        self.detail_i: int | None = None
        self.is_conn = False

    def set_fields(self, parts: list[str]) -> None:
        self.combined = None
        names: list[str] = []
        for i, p in enumerate(parts):
            sub = p.split()
            if len(sub) > 1 and self.combined is None:
                self.combined = i
                self.combined_n = len(sub)
            names.extend(sub if len(sub) > 1 else [p.strip()])
        self.ncols = len(parts)
        self.fields = names
        self.index = {}
        for i, nm in enumerate(names):
            canon = NAME_MAP.get(nm)
            if canon is not None and canon not in self.index:
                self.index[canon] = i
        self.label_i = next((i for i, nm in enumerate(names) if nm in LABEL_NAMES), None)
        self.detail_i = next((i for i, nm in enumerate(names) if nm in DETAIL_NAMES), None)
        self.is_conn = "orig_h" in self.index and (self.path in (None, "conn"))


class _Buf:
    """Batch under construction: fast-path pieces plus slow-path rows, in order."""

    def __init__(self, labelled: bool) -> None:
        self.labels: list[Any] | None = [] if labelled else None  # marker only
        self.pieces: list[FlowBatch] = []
        self.rows: Columns | None = None
        self.n = 0

    def add(self, rec: dict[str, Any], label: str | None = None) -> None:
        if self.rows is None:
            self.rows = Columns(self.labels is not None)
        self.rows.add(rec, label)
        self.n += 1

    def add_batch(self, fb: FlowBatch) -> None:
        self._close_rows()
        self.pieces.append(fb)
        self.n += len(fb)

    def _close_rows(self) -> None:
        if self.rows is not None and self.rows.n:
            self.pieces.append(self.rows.batch(SOURCE))
        self.rows = None

    def batch(self, source: str) -> FlowBatch:
        self._close_rows()
        return FlowBatch.concat(self.pieces)


class _Reader:
    """State of one ``read_lines`` call: header, pending lines, batch under construction."""

    def __init__(self, stats: ReadStats, where: str, batch_size: int) -> None:
        self.stats = stats
        self.where = where
        self.batch_size = batch_size
        self.hdr = _Header()
        self.buf: _Buf | None = None
        self.lineno = 0
        # column-checked data lines (bytes ending in exactly one b"\n"), not yet converted
        self.pend: list[bytes] = []
        self.pend_no: list[int] = []

    # -- conversion of pending lines -------------------------------------------------
    def flush(self) -> Iterator[FlowBatch]:
        if not self.pend:
            return
        hdr, stats = self.hdr, self.stats
        labelled = hdr.label_i is not None
        if self.buf is None:
            self.buf = _Buf(labelled)
        elif (self.buf.labels is not None) != labelled:
            yield self.buf.batch(SOURCE)
            self.buf = _Buf(labelled)
        fb = _fast_batch(self.pend, hdr)
        if fb is not None:
            self.buf.add_batch(fb)
            stats.emitted += len(fb)
            if self.buf.n >= self.batch_size:
                yield self.buf.batch(SOURCE)
                self.buf = None
        else:
            for raw, ln in zip(self.pend, self.pend_no, strict=True):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                got = self._convert_row(line, ln)
                if got is None:
                    continue
                if self.buf is None:
                    self.buf = _Buf(labelled)
                self.buf.add(*got)
                stats.emitted += 1
                if self.buf.n >= self.batch_size:
                    yield self.buf.batch(SOURCE)
                    self.buf = None
        self.pend.clear()
        self.pend_no.clear()

    def _convert_row(self, line: str, ln: int) -> tuple[dict[str, Any], str | None] | None:
        """Reference conversion of one column-checked line; None (counted) if bad."""
        hdr, stats = self.hdr, self.stats
        unset, empty = hdr.unset, hdr.empty
        parts = line.split(hdr.sep)
        if hdr.combined is not None:
            ci = hdr.combined
            sub = parts[ci].split()
            if len(sub) != hdr.combined_n:
                stats.skip("column-count", where=f"{self.where}:{ln}", detail="combined column")
                return None
            parts[ci : ci + 1] = sub
        rawrec: dict[str, str | None] = {}
        for c, i in hdr.index.items():
            s = parts[i]
            rawrec[c] = None if s in (unset, empty, "") else s
        try:
            rec = convert(rawrec)
        except BadValue as e:
            stats.skip(str(e), where=f"{self.where}:{ln}", detail=line)
            return None
        label = None
        if hdr.label_i is not None:
            lv = parts[hdr.label_i]
            lab = None if lv in (unset, empty, "") else lv
            det = None
            if hdr.detail_i is not None:
                dv = parts[hdr.detail_i]
                det = None if dv in (unset, empty, "") else dv
            label = combine_label(lab, det)
        return rec, label

    def _add(self, lines: list[bytes], nos: Iterable[int]) -> Iterator[FlowBatch]:
        """Queue column-checked lines, flushing exactly where the row-by-row reader would."""
        nos = list(nos)
        pos, k = 0, len(lines)
        while pos < k:
            room = self.batch_size - len(self.pend) - (self.buf.n if self.buf is not None else 0)
            room = max(room, 1)
            self.pend.extend(lines[pos : pos + room])
            self.pend_no.extend(nos[pos : pos + room])
            pos += room
            if len(self.pend) + (self.buf.n if self.buf is not None else 0) >= self.batch_size:
                yield from self.flush()

    # -- one line, the reference classification -----------------------------------
    def line(self, raw_line: bytes) -> Iterator[FlowBatch]:
        stats, hdr, where = self.stats, self.hdr, self.where
        self.lineno += 1
        lineno = self.lineno
        if len(raw_line) > MAX_LINE:
            stats.read += 1
            stats.skip("line-too-long", where=f"{where}:{lineno}")
            return
        line = raw_line.decode("utf-8", errors="replace").rstrip("\r\n")
        if line and line[0] != "#" and not line[0].isspace():
            pass  # plain data line
        elif not line.strip():
            stats.ignored["blank"] += 1
            return
        elif line.lstrip().startswith("#"):
            yield from self.flush()
            self._header_line(line)
            if self.buf is not None and self.buf.n and self._fields_pending:
                yield self.buf.batch(SOURCE)
                self.buf = None
            if self._fields_pending:
                hdr.set_fields(self._fields_pending)
                self._fields_pending = None
            return
        stats.read += 1
        if hdr.fields is None:
            stats.skip("no-header", where=f"{where}:{lineno}", detail=line)
            return
        if not hdr.is_conn:
            stats.skip("not-conn-log", where=f"{where}:{lineno}")
            return
        sep = hdr.sep
        nparts = line.count(sep) + 1 if len(sep) == 1 else len(line.split(sep))
        if nparts != hdr.ncols:
            stats.skip("column-count", where=f"{where}:{lineno}", detail=f"{nparts} != {hdr.ncols}")
            return
        yield from self._add([raw_line.rstrip(b"\r\n") + b"\n"], [lineno])

    _fields_pending: list[str] | None = None

    def _header_line(self, line: str) -> None:
        hdr, stats = self.hdr, self.stats
        stripped = line.lstrip()
        if stripped.startswith("#separator"):
            rest = stripped[len("#separator") :].strip()
            hdr.sep = _unescape_sep(rest) if rest else "\t"
            stats.ignored["header"] += 1
            return
        key, _, val = stripped.partition(hdr.sep)
        if " " in key and not _:
            key, _, val = stripped.partition(" ")
        key = key.strip()
        stats.ignored["header"] += 1
        if key == "#unset_field":
            hdr.unset = val
        elif key == "#empty_field":
            hdr.empty = val
        elif key == "#path":
            hdr.path = val.strip()
            hdr.is_conn = "orig_h" in hdr.index and hdr.path == "conn"
        elif key == "#fields":
            self._fields_pending = val.split(hdr.sep)

    # -- a chunk of lines ------------------------------------------------------------
    def chunk(self, chunk: list[bytes]) -> Iterator[FlowBatch]:
        n = len(chunk)
        raw_lens = np.fromiter(map(len, chunk), dtype=np.int64, count=n)
        lines, lens = chunk, raw_lens
        blob = b"".join(lines)
        arr = np.frombuffer(blob, dtype=np.uint8)
        ends = np.cumsum(lens) - 1
        if blob.count(b"\n") != n or not (arr[ends] == 10).all() or (arr[ends - 1] == 13).any():
            lines = [ln.rstrip(b"\r\n") + b"\n" for ln in chunk]
            blob = b"".join(lines)
            if blob.count(b"\n") != n:  # embedded newlines: all row by row
                for raw in chunk:
                    yield from self.line(raw)
                return
            lens = np.fromiter(map(len, lines), dtype=np.int64, count=n)
            arr = np.frombuffer(blob, dtype=np.uint8)
            ends = np.cumsum(lens) - 1
        plain = _PLAIN_FIRST[arr[ends - lens + 1]] & (raw_lens <= MAX_LINE)
        prev = 0
        for i in [*np.flatnonzero(~plain).tolist(), n]:
            if i > prev:
                yield from self._bulk(lines[prev:i])
            if i < n:
                yield from self.line(chunk[i])
            prev = i + 1

    def _bulk(self, seg: list[bytes]) -> Iterator[FlowBatch]:
        """Plain data lines (each ending in one b"\\n", no other line end)."""
        stats, hdr, k = self.stats, self.hdr, len(seg)
        first = self.lineno + 1
        self.lineno += k
        stats.read += k
        sepb = fast_sep(hdr.sep)
        if hdr.fields is None or not hdr.is_conn or sepb is None:
            self.lineno -= k
            stats.read -= k
            for raw in seg:
                yield from self.line(raw)
            return
        counts = np.fromiter(map(bytes.count, seg, repeat(sepb)), dtype=np.int64, count=k)
        bad = counts != hdr.ncols - 1
        if not bad.any():
            yield from self._add(seg, range(first, first + k))
            return
        for i in np.flatnonzero(bad).tolist():
            stats.skip(
                "column-count",
                where=f"{self.where}:{first + i}",
                detail=f"{int(counts[i]) + 1} != {hdr.ncols}",
            )
        good = np.flatnonzero(~bad).tolist()
        yield from self._add([seg[i] for i in good], [first + i for i in good])

    def finish(self) -> Iterator[FlowBatch]:
        yield from self.flush()
        if self.buf is not None and self.buf.n:
            yield self.buf.batch(SOURCE)
            self.buf = None


def read_lines(
    lines: Iterable[bytes], stats: ReadStats, where: str = "", batch_size: int = 4096
) -> Iterator[FlowBatch]:
    """Parse Zeek TSV lines (bytes, with or without line ends) into batches."""
    rd = _Reader(stats, where, max(1, batch_size))
    it = iter(lines)
    while True:
        chunk = list(islice(it, CHUNK))
        if not chunk:
            break
        yield from rd.chunk(chunk)
    yield from rd.finish()


def open_path(path: str | Path) -> IO[bytes]:
    """Open a plain or gzip file (by magic bytes) for binary reading, after one leading UTF-8 BOM."""
    return open_records(path)


def _safe_lines(f: IO[bytes], stats: ReadStats, where: str) -> Iterator[bytes]:
    try:
        yield from f
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        stats.skip("truncated-input", where=where, detail=str(e))


def read_path(path: str | Path, stats: ReadStats, batch_size: int = 4096) -> Iterator[FlowBatch]:
    with open_path(path) as f:
        yield from read_lines(_safe_lines(f, stats, str(path)), stats, str(path), batch_size)
