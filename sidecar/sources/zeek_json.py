"""Zeek conn.log reader, JSON lines format (``LogAscii::use_json=T``).

Keys are flat (``id.orig_h``; ``id_orig_h`` with scope_sep); absent keys are
missing. ``ts`` may be an epoch number or an ISO-8601 string. Bad lines are
counted in :class:`ReadStats` and never raise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.sources.zeek_tsv import (
    DETAIL_NAMES,
    FLOAT_COLS,
    LABEL_NAMES,
    MAX_LINE,
    NAME_MAP,
    PORT_COLS,
    BadValue,
    Columns,
    _safe_lines,
    check_amount,
    combine_label,
    open_path,
    parse_float,
    parse_port,
)

SOURCE = "zeek-json"


def parse_ts(v: Any) -> float:
    """Epoch seconds from a number or an ISO-8601 string; raises BadValue."""
    if isinstance(v, bool):
        raise BadValue("bad-number:ts")
    if isinstance(v, (int, float)):
        f = float(v)
        if f != f or f in (math.inf, -math.inf):
            raise BadValue("bad-number:ts")
        return f
    if isinstance(v, str):
        s = v.strip()
        try:
            return parse_float(s, "ts")
        except BadValue:
            pass
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            raise BadValue("bad-timestamp") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()
    raise BadValue("bad-timestamp")


def _num(v: Any, col: str) -> Any:
    t = type(v)
    if t is int and col in PORT_COLS:
        if 0 <= v <= 65535:
            return v
        raise BadValue(f"bad-port:{col}")
    if (t is int or t is float) and col != "ts" and col not in PORT_COLS:
        # same as parse_float(repr(float(v)), col): repr round-trips exactly
        return check_amount(float(v), col)
    if isinstance(v, bool):
        raise BadValue(f"bad-number:{col}")
    if isinstance(v, (int, float)):
        if col in PORT_COLS:
            return parse_port(repr(v) if isinstance(v, float) else str(v), col)
        return parse_float(repr(float(v)), col)
    if isinstance(v, str):
        return parse_port(v, col) if col in PORT_COLS else parse_float(v, col)
    raise BadValue(f"bad-number:{col}")


def convert_obj(obj: dict[str, Any]) -> tuple[dict[str, Any], str | None, bool]:
    """(canonical record, label, has_label_key); raises BadValue."""
    rec: dict[str, Any] = {}
    for key, v in obj.items():
        c = NAME_MAP.get(key)
        if c is None or v is None or c in rec:
            continue
        if c == "ts":
            rec[c] = parse_ts(v)
        elif c in PORT_COLS or c in FLOAT_COLS:
            rec[c] = _num(v, c)
        else:
            s = v if isinstance(v, str) else str(v)
            rec[c] = s.lower() if c == "proto" else s
    has_label = False
    lab = det = None
    for k in LABEL_NAMES:
        if k in obj:
            has_label = True
            lv = obj[k]
            lab = None if lv in (None, "", "-", "(empty)") else str(lv)
    for k in DETAIL_NAMES:
        if k in obj:
            dv = obj[k]
            det = None if dv in (None, "", "-", "(empty)") else str(dv)
    return rec, combine_label(lab, det), has_label


def read_lines(
    lines: Iterable[bytes], stats: ReadStats, where: str = "", batch_size: int = 4096
) -> Iterator[FlowBatch]:
    """Parse Zeek JSON lines (bytes, with or without line ends) into batches."""
    buf: Columns | None = None
    lineno = 0
    for line in lines:
        lineno += 1
        if not line.strip():
            stats.ignored["blank"] += 1
            continue
        stats.read += 1
        loc = f"{where}:{lineno}"
        if len(line) > MAX_LINE:
            stats.skip("line-too-long", where=loc)
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            stats.skip("bad-json", where=loc, detail=line[:200].decode("utf-8", "replace"))
            continue
        if not isinstance(obj, dict):
            stats.skip("not-object", where=loc)
            continue
        path = obj.get("_path")
        if (path is not None and path != "conn") or not ("id.orig_h" in obj or "id_orig_h" in obj):
            stats.skip("not-conn-log", where=loc)
            continue
        try:
            rec, label, has_label = convert_obj(obj)
        except BadValue as e:
            stats.skip(str(e), where=loc)
            continue
        if buf is None:
            buf = Columns(has_label)
        elif (buf.labels is not None) != has_label:
            yield buf.batch(SOURCE)
            buf = Columns(has_label)
        buf.add(rec, label)
        stats.emitted += 1
        if buf.n >= batch_size:
            yield buf.batch(SOURCE)
            buf = None
    if buf is not None and buf.n:
        yield buf.batch(SOURCE)


def read_path(path: str | Path, stats: ReadStats, batch_size: int = 4096) -> Iterator[FlowBatch]:
    with open_path(path) as f:
        yield from read_lines(_safe_lines(f, stats, str(path)), stats, str(path), batch_size)
