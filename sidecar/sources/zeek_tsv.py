"""Zeek conn.log reader, ASCII/TSV format (header driven).

Handles several header blocks in one stream, extra columns (labels, community_id,
the IoT-23 combined ``tunnel_parents   label   detailed-label`` column), ``scope_sep``
names (``id_orig_h``), CRLF line ends and masked btest timestamps. Bad rows are
counted in :class:`ReadStats` and never raise.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from sidecar.flow import ACK, FIN, PSH, RST, SYN, FlowBatch
from sidecar.sources.base import ReadStats

SOURCE = "zeek-tsv"
MAX_LINE = 1 << 20

#: Zeek field name -> canonical column.
NAME_MAP: dict[str, str] = {
    "ts": "ts",
    "uid": "uid",
    "id.orig_h": "orig_h",
    "id.orig_p": "orig_p",
    "id.resp_h": "resp_h",
    "id.resp_p": "resp_p",
    "proto": "proto",
    "service": "service",
    "duration": "duration",
    "orig_bytes": "orig_bytes",
    "resp_bytes": "resp_bytes",
    "orig_pkts": "orig_pkts",
    "resp_pkts": "resp_pkts",
    "orig_ip_bytes": "orig_ip_bytes",
    "resp_ip_bytes": "resp_ip_bytes",
    "conn_state": "conn_state",
    "history": "history",
}
for _k in list(NAME_MAP):
    if "." in _k:
        NAME_MAP[_k.replace(".", "_")] = NAME_MAP[_k]

STR_COLS = ("uid", "orig_h", "resp_h", "proto", "service", "conn_state", "history")
PORT_COLS = ("orig_p", "resp_p")
FLOAT_COLS = (
    "ts",
    "duration",
    "orig_bytes",
    "resp_bytes",
    "orig_pkts",
    "resp_pkts",
    "orig_ip_bytes",
    "resp_ip_bytes",
)
OUT_COLS = (*STR_COLS, *PORT_COLS, *FLOAT_COLS, "orig_flags", "resp_flags")
LABEL_NAMES = ("label",)
DETAIL_NAMES = ("detailed-label", "detailedlabel", "detailed_label")

#: absurd-value limits (beyond these a row is considered corrupt)
MAX_DURATION = 10 * 365 * 86400.0
MAX_COUNT = 1e15

_HIST_ORIG = {"S": SYN, "A": ACK, "D": PSH | ACK, "F": FIN, "R": RST, "H": SYN | ACK}
_HIST_RESP = {"s": SYN, "h": SYN | ACK, "a": ACK, "d": PSH | ACK, "f": FIN, "r": RST}
_FLAG_CACHE: dict[str, tuple[int, int]] = {}


class BadValue(ValueError):
    pass


def flags_from_history(history: str | None, proto: str | None) -> tuple[int, int]:
    """(orig_flags, resp_flags) from a Zeek history string; (-1, -1) if not derivable."""
    if history is None or proto != "tcp":
        return -1, -1
    hit = _FLAG_CACHE.get(history)
    if hit is not None:
        return hit
    o = r = 0
    for ch in history:
        if ch in _HIST_ORIG:
            o |= _HIST_ORIG[ch]
        elif ch in _HIST_RESP:
            r |= _HIST_RESP[ch]
    res = (o, r)
    if len(_FLAG_CACHE) < 100_000:
        _FLAG_CACHE[history] = res
    return res


def parse_float(s: str, col: str) -> float:
    try:
        v = float(s)
    except ValueError:
        if col == "ts" and s and set(s) <= {"X", "."}:
            return math.nan  # btest-masked timestamp
        raise BadValue(f"bad-number:{col}") from None
    if col == "ts":
        if not math.isfinite(v):
            raise BadValue(f"bad-number:{col}")
        return v
    return check_amount(v, col)


def check_amount(v: float, col: str) -> float:
    """Range-check a duration/count value: finite, not negative, not absurd."""
    if not math.isfinite(v):
        raise BadValue(f"bad-number:{col}")
    if v < 0:
        raise BadValue(f"negative:{col}")
    if col == "duration":
        if v > MAX_DURATION:
            raise BadValue("absurd:duration")
    elif v > MAX_COUNT:
        raise BadValue(f"absurd:{col}")
    return v


def parse_port(s: str, col: str) -> int:
    try:
        v = int(s)
    except ValueError:
        try:
            f = float(s)
        except ValueError:
            raise BadValue(f"bad-number:{col}") from None
        if not math.isfinite(f) or f != int(f):
            raise BadValue(f"bad-number:{col}") from None
        v = int(f)
    if v < 0 or v > 65535:
        raise BadValue(f"bad-port:{col}")
    return v


class Columns:
    """Per-column Python lists for one batch."""

    def __init__(self, labelled: bool) -> None:
        self.cols: dict[str, list[Any]] = {c: [] for c in OUT_COLS}
        self.labels: list[Any] | None = [] if labelled else None
        self.n = 0

    def add(self, rec: dict[str, Any], label: str | None = None) -> None:
        of, rf = flags_from_history(rec.get("history"), rec.get("proto"))
        rec["orig_flags"] = of
        rec["resp_flags"] = rf
        for c in OUT_COLS:
            self.cols[c].append(rec.get(c))
        if self.labels is not None:
            self.labels.append(label)
        self.n += 1

    def batch(self, source: str) -> FlowBatch:
        cols: dict[str, Any] = {}
        for c in STR_COLS:
            cols[c] = self.cols[c]
        for c in FLOAT_COLS:
            cols[c] = [math.nan if v is None else v for v in self.cols[c]]
        for c in (*PORT_COLS, "orig_flags", "resp_flags"):
            cols[c] = [-1 if v is None else v for v in self.cols[c]]
        return FlowBatch.from_columns(cols, source, n=self.n, label=self.labels)


def convert(raw: dict[str, str | None]) -> dict[str, Any]:
    """Canonical-named raw strings (None = missing) -> typed values; raises BadValue."""
    rec: dict[str, Any] = {}
    for c, s in raw.items():
        if s is None:
            continue
        if c in PORT_COLS:
            rec[c] = parse_port(s, c)
        elif c in FLOAT_COLS:
            rec[c] = parse_float(s, c)
        elif c == "proto":
            rec[c] = s.lower()
        else:
            rec[c] = s
    return rec


def combine_label(label: str | None, detail: str | None) -> str | None:
    if label is None:
        return None
    if detail is None:
        return label
    return f"{label}/{detail}"


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


def _decode(line: bytes) -> str:
    return line.decode("utf-8", errors="replace")


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


def _missing_mask(a: np.ndarray, unset: str, empty: str) -> np.ndarray:
    m: np.ndarray = (a == unset) | (a == empty) | (a == "")
    return m


def _split_cols(lines: list[str], hdr: _Header) -> list[Any] | None:
    """Column-major raw strings of column-checked lines (one split for the whole block)."""
    sep, nc, n = hdr.sep, hdr.ncols, len(lines)
    if len(sep) != 1 or not n:
        return None
    allp = sep.join(lines).split(sep)
    if len(allp) != n * nc:
        return None
    base: list[Any] = [allp[i::nc] for i in range(nc)]
    ci = hdr.combined
    if ci is None:
        return base
    subs = [v.split() for v in base[ci]]
    k = hdr.combined_n
    if any(len(x) != k for x in subs):
        return None
    return base[:ci] + list(zip(*subs, strict=True)) + base[ci + 1 :]


def _fast_batch(lines: list[str], hdr: _Header) -> FlowBatch | None:
    """Vectorised conversion of column-checked lines; None if any value is bad."""
    n = len(lines)
    cols_t = _split_cols(lines, hdr)
    if cols_t is None:
        return None
    unset, empty = hdr.unset, hdr.empty
    miss = {unset, empty, ""}
    dnan = dict.fromkeys(miss, "nan")
    dneg = dict.fromkeys(miss, "-1")
    dnone: dict[str, str | None] = dict.fromkeys(miss, None)
    cols: dict[str, Any] = {}
    with np.errstate(invalid="ignore"):
        for c, i in hdr.index.items():
            col = cols_t[i]
            if c in FLOAT_COLS:
                try:
                    v = np.array(list(map(float, map(dnan.get, col, col))), dtype=np.float64)  # type: ignore[arg-type]
                except ValueError:
                    return None
                ok = np.isfinite(v)
                if not ok.all():
                    m = np.fromiter(map(miss.__contains__, col), dtype=bool, count=n)
                    if (~ok & ~m).any():
                        return None
                else:
                    m = None
                if c != "ts":
                    lim = MAX_DURATION if c == "duration" else MAX_COUNT
                    good = (v >= 0) & (v <= lim)
                    if m is not None:
                        good |= m
                    if not good.all():
                        return None
                cols[c] = v
            elif c in PORT_COLS:
                try:
                    iv = np.array(list(map(int, map(dneg.get, col, col))), dtype=np.int64)  # type: ignore[arg-type]
                except (ValueError, OverflowError):
                    return None
                good = iv <= 65535
                neg = iv < 0
                if neg.any():
                    m = np.fromiter(map(miss.__contains__, col), dtype=bool, count=n)
                    good &= ~neg | m
                if not good.all():
                    return None
                cols[c] = iv.astype(np.int32)
            elif c == "proto":
                pl = {x: (None if x in miss else x.lower()) for x in set(col)}
                cols[c] = list(map(pl.__getitem__, col))
            else:
                cols[c] = list(map(dnone.get, col, col))
    hist = cols.get("history")
    proto = cols.get("proto")
    if hist is not None and proto is not None:
        fl = [flags_from_history(h, p) for h, p in zip(hist, proto, strict=True)]
        cols["orig_flags"] = np.array([f[0] for f in fl], dtype=np.int16)
        cols["resp_flags"] = np.array([f[1] for f in fl], dtype=np.int16)
    labels: list[Any] | None = None
    if hdr.label_i is not None:
        lab_c = cols_t[hdr.label_i]
        if hdr.detail_i is not None:
            pairs = list(zip(lab_c, cols_t[hdr.detail_i], strict=True))
            lm = {pr: combine_label(dnone.get(pr[0], pr[0]), dnone.get(pr[1], pr[1])) for pr in set(pairs)}
            labels = list(map(lm.__getitem__, pairs))
        else:
            labels = list(map(dnone.get, lab_c, lab_c))
    return FlowBatch.from_columns(cols, SOURCE, n=n, label=labels)


def read_lines(
    lines: Iterable[bytes], stats: ReadStats, where: str = "", batch_size: int = 4096
) -> Iterator[FlowBatch]:
    """Parse Zeek TSV lines (bytes, with or without line ends) into batches."""
    hdr = _Header()
    buf: _Buf | None = None
    lineno = 0
    # rows passed the column checks, not yet converted: (parts, lineno, line)
    pend: list[str] = []
    pend_no: list[int] = []

    def flush() -> Iterator[FlowBatch]:
        nonlocal buf
        if not pend:
            return
        labelled = hdr.label_i is not None
        if buf is None:
            buf = _Buf(labelled)
        elif (buf.labels is not None) != labelled:
            yield buf.batch(SOURCE)
            buf = _Buf(labelled)
        fb = _fast_batch(pend, hdr)
        if fb is not None:
            buf.add_batch(fb)
            stats.emitted += len(fb)
            if buf.n >= batch_size:
                yield buf.batch(SOURCE)
                buf = None
        else:
            unset, empty = hdr.unset, hdr.empty
            for line, ln in zip(pend, pend_no, strict=True):
                parts = line.split(hdr.sep)
                if hdr.combined is not None:
                    ci = hdr.combined
                    sub = parts[ci].split()
                    if len(sub) != hdr.combined_n:
                        stats.skip("column-count", where=f"{where}:{ln}", detail="combined column")
                        continue
                    parts[ci : ci + 1] = sub
                rawrec: dict[str, str | None] = {}
                for c, i in hdr.index.items():
                    s = parts[i]
                    rawrec[c] = None if s in (unset, empty, "") else s
                try:
                    rec = convert(rawrec)
                except BadValue as e:
                    stats.skip(str(e), where=f"{where}:{ln}", detail=line)
                    continue
                label = None
                if hdr.label_i is not None:
                    lv = parts[hdr.label_i]
                    lab = None if lv in (unset, empty, "") else lv
                    det = None
                    if hdr.detail_i is not None:
                        dv = parts[hdr.detail_i]
                        det = None if dv in (unset, empty, "") else dv
                    label = combine_label(lab, det)
                if buf is None:
                    buf = _Buf(labelled)
                buf.add(rec, label)
                stats.emitted += 1
                if buf.n >= batch_size:
                    yield buf.batch(SOURCE)
                    buf = None
        pend.clear()
        pend_no.clear()

    for raw_line in lines:
        lineno += 1
        if len(raw_line) > MAX_LINE:
            stats.read += 1
            stats.skip("line-too-long", where=f"{where}:{lineno}")
            continue
        line = raw_line.decode("utf-8", errors="replace").rstrip("\r\n")
        if line and line[0] != "#" and not line[0].isspace():
            pass  # plain data line
        elif not line.strip():
            stats.ignored["blank"] += 1
            continue
        elif line.lstrip().startswith("#"):
            yield from flush()
            stripped = line.lstrip()
            if stripped.startswith("#separator"):
                rest = stripped[len("#separator") :].strip()
                hdr.sep = _unescape_sep(rest) if rest else "\t"
                stats.ignored["header"] += 1
                continue
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
                if buf is not None and buf.n:
                    yield buf.batch(SOURCE)
                    buf = None
                hdr.set_fields(val.split(hdr.sep))
            continue
        stats.read += 1
        if hdr.fields is None:
            stats.skip("no-header", where=f"{where}:{lineno}", detail=line)
            continue
        if not hdr.is_conn:
            stats.skip("not-conn-log", where=f"{where}:{lineno}")
            continue
        sep = hdr.sep
        nparts = line.count(sep) + 1 if len(sep) == 1 else len(line.split(sep))
        if nparts != hdr.ncols:
            stats.skip("column-count", where=f"{where}:{lineno}", detail=f"{nparts} != {hdr.ncols}")
            continue
        # the combined-column check is done per block (see _split_cols / flush)
        pend.append(line)
        pend_no.append(lineno)
        if len(pend) + (buf.n if buf is not None else 0) >= batch_size:
            yield from flush()
    yield from flush()
    if buf is not None and buf.n:
        yield buf.batch(SOURCE)


def open_path(path: str | Path) -> IO[bytes]:
    """Open a plain or gzip file (by magic bytes) for binary reading."""
    f: IO[bytes] = open(path, "rb")  # noqa: SIM115
    magic = f.read(2)
    f.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=f)  # type: ignore[return-value]
    return f


def _safe_lines(f: IO[bytes], stats: ReadStats, where: str) -> Iterator[bytes]:
    try:
        yield from f
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        stats.skip("truncated-input", where=where, detail=str(e))


def read_path(path: str | Path, stats: ReadStats, batch_size: int = 4096) -> Iterator[FlowBatch]:
    with open_path(path) as f:
        yield from read_lines(_safe_lines(f, stats, str(path)), stats, str(path), batch_size)
