"""Zeek TSV value semantics: column names, per-value parsers and range checks.

This is the reference meaning of every Zeek conn.log value; the vectorised fast
path (:mod:`sidecar.sources.zeek_tsv_fast`) must agree with it exactly.
"""

from __future__ import annotations

import math
from typing import Any

from sidecar.flow import ACK, FIN, PSH, RST, SYN, FlowBatch

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
