"""Zeek conn.log reader, JSON lines format (``LogAscii::use_json=T``).

Keys are flat (``id.orig_h``; ``id_orig_h`` with scope_sep); absent keys are
missing. ``ts`` may be an epoch number or an ISO-8601 string. Bad lines are
counted in :class:`ReadStats` and never raise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.sources.zeek_tsv import (
    DETAIL_NAMES,
    FLOAT_COLS,
    LABEL_NAMES,
    MAX_COUNT,
    MAX_DURATION,
    MAX_LINE,
    NAME_MAP,
    PORT_COLS,
    BadValue,
    Columns,
    _safe_lines,
    check_amount,
    combine_label,
    flags_from_history,
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


# --- msgspec fast path ----------------------------------------------------------------
# A conn record whose values msgspec can check in C (numbers where numbers belong, in
# range; strings where strings belong; dotted ``id.*`` keys only) becomes one row
# tuple, and rows become columns once per run of such lines. Any other line takes the
# orjson path above (convert_obj), unchanged; the output is the same either way
# (tests/bench/test_fastpaths.py), except that msgspec does not evaluate numbers in
# keys the reader ignores: a line whose ignored key holds a number beyond float range
# (1e400) is read, where orjson rejects the whole line. Non-ASCII lines always take
# the orjson path (it validates UTF-8 everywhere; msgspec only where it decodes).

#: The conn-record struct fields, in the order of the row tuples both msgspec paths index:
#: (struct field, JSON key, kind). The line struct (``_ConnS``, here) and the chunk struct
#: (``_ConnC``, zeek_json_chunks) are both made from this one table by :func:`conn_struct`;
#: they differ only in the type and default each kind gets (:data:`LINE_KINDS` here, lenient:
#: a line that does not fit goes to the orjson path; ``zeek_json_chunks.CHUNK_KINDS``, strict:
#: a line that would go to the orjson path here makes the whole chunk fail in C).
CONN_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("ts", "ts", "ts"), ("uid", "uid", "str"),
    ("orig_h", "id.orig_h", "orig_h"), ("orig_p", "id.orig_p", "port"),
    ("resp_h", "id.resp_h", "str"), ("resp_p", "id.resp_p", "port"),
    ("proto", "proto", "str"), ("service", "service", "str"), ("duration", "duration", "dur"),
    ("orig_bytes", "orig_bytes", "count"), ("resp_bytes", "resp_bytes", "count"),
    ("orig_pkts", "orig_pkts", "count"), ("resp_pkts", "resp_pkts", "count"),
    ("orig_ip_bytes", "orig_ip_bytes", "count"), ("resp_ip_bytes", "resp_ip_bytes", "count"),
    ("conn_state", "conn_state", "str"), ("history", "history", "str"),
    # not record values: the log path, the label keys, and keys that send a line elsewhere
    ("path", "_path", "path"), ("label", "label", "label"),
    ("d1", "detailed-label", "other"), ("d2", "detailedlabel", "other"), ("d3", "detailed_label", "other"),
    ("a1", "id_orig_h", "other"), ("a2", "id_orig_p", "other"),
    ("a3", "id_resp_h", "other"), ("a4", "id_resp_p", "other"),
)  # fmt: skip
_NAMES = tuple(f for f, _, _ in CONN_FIELDS)
#: the record-value fields (the row tuple starts with them), named as the canonical columns
_FIELDS = _NAMES[: _NAMES.index("path")]
#: struct field -> JSON key, where they differ
RENAME = {f: key for f, key, _ in CONN_FIELDS if f != key}
#: row-tuple positions
_I_ORIG_H, _I_PATH, _I_LABEL = _NAMES.index("orig_h"), _NAMES.index("path"), _NAMES.index("label")
_I_DETAIL = slice(_NAMES.index("d1"), _NAMES.index("d3") + 1)
_I_ALT = slice(_NAMES.index("a1"), len(_NAMES))
#: a kind's default meaning "none: the key must be present"
REQUIRED: Any = object()
_DECODER: Any = None
_MS_ERRORS: tuple[type[BaseException], ...] = ()
_UNSET: Any = object()
LINE_KINDS: dict[str, tuple[Any, Any]] = {}

try:
    import msgspec as _ms
except ImportError:  # pragma: no cover - exercised where msgspec is absent
    _ms = None  # type: ignore[assignment]


def conn_struct(name: str, kinds: dict[str, tuple[Any, Any]], module: str, **config: Any) -> Any:
    """A msgspec Struct class of ``module``: the :data:`CONN_FIELDS`, ``kinds[kind] = (type, default)``."""
    fields = []
    for f, _, kind in CONN_FIELDS:
        typ, default = kinds[kind]
        fields.append((f, typ) if default is REQUIRED else (f, typ, default))
    return _ms.defstruct(name, fields, rename=RENAME, gc=False, module=module, **config)


if _ms is not None:
    from typing import Annotated

    _UNSET = _ms.UNSET
    LINE_KINDS = {
        "ts": (float | None, None),
        "str": (str | None, None),
        "orig_h": (str | _ms.UnsetType | None, _UNSET),  # absent: the orjson path judges the line
        "port": (Annotated[int, _ms.Meta(ge=0, le=65535)] | None, None),
        "count": (Annotated[float, _ms.Meta(ge=0, le=MAX_COUNT)] | None, None),
        "dur": (Annotated[float, _ms.Meta(ge=0, le=MAX_DURATION)] | None, None),
        "path": (Any, None),
        "label": (Any, _UNSET),
        "other": (Any, _UNSET),
    }
    _ConnS = conn_struct("_ConnS", LINE_KINDS, __name__)
    _DECODER = _ms.json.Decoder(_ConnS).decode
    _MS_ERRORS = (_ms.DecodeError, _ms.ValidationError, RecursionError)
    _astuple = _ms.structs.astuple


def _label_of(t: tuple[Any, ...]) -> str | None:
    """convert_obj's label from a row tuple (its label and detailed-label fields)."""
    lv = t[_I_LABEL]
    lab = None if lv in (None, "", "-", "(empty)") else str(lv)
    det = None
    for dv in t[_I_DETAIL]:
        if dv is not _UNSET:
            det = None if dv in (None, "", "-", "(empty)") else str(dv)
    return combine_label(lab, det)


def _columnar(rows: list[tuple[Any, ...]], labelled: bool) -> FlowBatch:
    """Row tuples (already type- and range-checked by msgspec) → one FlowBatch."""
    return columns_batch(list(zip(*rows, strict=True)), [_label_of(t) for t in rows] if labelled else None)


def columns_batch(cols_t: Sequence[Sequence[Any]], labels: list[str | None] | None) -> FlowBatch:
    """Value columns in :data:`_FIELDS` order (types checked by msgspec) → one FlowBatch.

    Ranges are checked here, as the msgspec ``_ConnS`` constraints do per value:
    ports 0..65535, counts 0..MAX_COUNT, duration 0..MAX_DURATION (None is missing).
    ValueError/OverflowError if one is out of range.
    """
    cols: dict[str, Any] = {}
    n = len(cols_t[0])
    with np.errstate(invalid="ignore"):
        for j, c in enumerate(_FIELDS):
            v = cols_t[j]
            if c in PORT_COLS:
                nones = v.count(None)
                arr = np.array(list(map({None: -1}.get, v, v)) if nones else v, dtype=np.int64)
                if (arr < -1).any() or (arr > 65535).any() or int((arr == -1).sum()) != nones:
                    raise ValueError(f"bad-port:{c}")
                cols[c] = arr.astype(np.int32)
            elif c in FLOAT_COLS:
                arr = np.array(v, dtype=np.float64)  # None -> NaN
                if c != "ts" and ((arr < 0).any() or (arr > (MAX_DURATION if c == "duration" else MAX_COUNT)).any()):
                    raise ValueError(f"bad-number:{c}")
                cols[c] = arr
            elif c == "proto":
                cols[c] = list(map({p: (p.lower() if p is not None else None) for p in set(v)}.__getitem__, v))
            else:
                cols[c] = v
    # flags_from_history: the history letters for tcp, -1 for everything else
    hist = cols["history"]
    fl = {h: flags_from_history(h, "tcp") for h in set(hist)}
    oflags = np.fromiter(map({h: f[0] for h, f in fl.items()}.__getitem__, hist), dtype=np.int16, count=n)
    rflags = np.fromiter(map({h: f[1] for h, f in fl.items()}.__getitem__, hist), dtype=np.int16, count=n)
    not_tcp = np.array(cols["proto"], dtype=object) != "tcp"
    if not_tcp.any():
        oflags[not_tcp] = -1
        rflags[not_tcp] = -1
    cols["orig_flags"], cols["resp_flags"] = oflags, rflags
    return FlowBatch.from_columns(cols, SOURCE, n=n, label=labels)


def _row_rec(t: tuple[Any, ...]) -> dict[str, Any]:
    """convert_obj's record for a checked row tuple (used when rows and slow lines mix)."""
    rec: dict[str, Any] = {}
    for c, v in zip(_FIELDS, t, strict=False):
        if v is None:
            continue
        rec[c] = v.lower() if c == "proto" else v
    return rec


def read_lines(
    lines: Iterable[bytes], stats: ReadStats, where: str = "", batch_size: int = 4096, use_msgspec: bool = True
) -> Iterator[FlowBatch]:
    """Parse Zeek JSON lines (bytes, with or without line ends) into batches.

    With msgspec, many lines are decoded per call (:mod:`sidecar.sources.zeek_json_chunks`);
    a chunk that is not plain conn records, one JSON object per line, is read by
    :func:`read_lines_one_by_one`, which counts every bad line with file and line.
    """
    if use_msgspec and _DECODER is not None:
        from sidecar.sources.eve_chunks import coalesce
        from sidecar.sources.zeek_json_chunks import read_chunked

        yield from coalesce(read_chunked(lines, stats, where, batch_size, read_lines_one_by_one), batch_size)
    else:
        yield from read_lines_one_by_one(lines, stats, where, batch_size, use_msgspec)


def read_lines_one_by_one(
    lines: Iterable[bytes],
    stats: ReadStats,
    where: str = "",
    batch_size: int = 4096,
    use_msgspec: bool = True,
    first_line: int = 1,
) -> Iterator[FlowBatch]:
    """The line-by-line reader (the reference when ``use_msgspec`` is False)."""
    dec = _DECODER if use_msgspec else None
    rows: list[tuple[Any, ...]] = []  # msgspec rows not yet converted
    buf: Columns | None = None  # slow-path rows not yet converted
    pieces: list[FlowBatch] = []
    count = 0
    labelled: bool | None = None
    lineno = first_line - 1
    nfast = 0  # msgspec rows not yet counted in stats (added when a batch closes)

    def close() -> FlowBatch:
        nonlocal buf, count, nfast
        stats.read += nfast
        stats.emitted += nfast
        nfast = 0
        if rows:
            pieces.append(_columnar(rows, bool(labelled)))
            rows.clear()
        if buf is not None and buf.n:
            pieces.append(buf.batch(SOURCE))
        buf = None
        out = FlowBatch.concat(pieces)
        pieces.clear()
        count = 0
        return out

    noalt = (_UNSET,) * (_I_ALT.stop - _I_ALT.start)
    for line in lines:
        lineno += 1
        if dec is not None and line[:1] == b"{" and len(line) <= MAX_LINE and line.isascii():
            try:
                t = _astuple(dec(line))
            except _MS_ERRORS:
                t = None
            if (
                t is not None
                and t[_I_ORIG_H] is not _UNSET
                and t[_I_ALT] == noalt
                and (t[_I_PATH] is None or t[_I_PATH] == "conn")
            ):
                has_label = t[_I_LABEL] is not _UNSET
                if has_label is not labelled:
                    if count:
                        yield close()
                    labelled = has_label
                if buf is not None and buf.n:
                    pieces.append(buf.batch(SOURCE))
                    buf = None
                rows.append(t)
                count += 1
                nfast += 1
                if count >= batch_size:
                    yield close()
                continue
        if not line.strip():
            stats.ignored["blank"] += 1
            continue
        stats.read += 1
        if len(line) > MAX_LINE:
            stats.skip("line-too-long", where=f"{where}:{lineno}")
            continue
        loc = f"{where}:{lineno}"
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
        if has_label is not labelled:
            if count:
                yield close()
            labelled = has_label
        if rows:
            pieces.append(_columnar(rows, has_label))
            rows.clear()
        if buf is None:
            buf = Columns(has_label)
        buf.add(rec, label)
        count += 1
        stats.emitted += 1
        if count >= batch_size:
            yield close()
    if count:
        yield close()


def read_path(path: str | Path, stats: ReadStats, batch_size: int = 4096) -> Iterator[FlowBatch]:
    with open_path(path) as f:
        yield from read_lines(_safe_lines(f, stats, str(path)), stats, str(path), batch_size)
