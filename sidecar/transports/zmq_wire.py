"""The msgpack wire schema of the ZeroMQ transport (schema version 1).

Every ZeroMQ message is one msgpack map. The header keys are common to all kinds:

======== ======= ==========================================================
key      type    meaning
======== ======= ==========================================================
``v``    int     schema version, :data:`SCHEMA_VERSION` (anything else is rejected)
``kind`` str     ``flows`` | ``verdicts`` | ``reject`` | ``ack``
``stream`` str   sender's stream id (1..200 chars, no NUL); ``(stream, seq)`` names a batch
``seq``  int     batch sequence number within the stream (0 .. 2**63-1)
``n``    int     records in this message (0 .. :data:`MAX_ROWS`)
======== ======= ==========================================================

Bodies are columnar, one entry per column, driven by the tables :data:`FLOW_COLUMNS`
and :data:`VERDICT_COLUMNS`: a numeric column is ``[dtype, raw bytes]`` (little-endian
numpy dtype string such as ``"<f8"``, exactly ``n * itemsize`` bytes); a string column
is a list of ``n`` items, each a str or nil. Missing stays missing: NaN and -1 travel
as raw bytes, None as nil. See ``docs/ZMQ.md`` (the table there is :func:`schema_markdown`).

Decoding never trusts the peer: wrong version, unknown kind, truncated or trailing
bytes, wrong dtype, wrong length and non-string items all raise :class:`ProtocolError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from sidecar.errors import ProtocolError, SchemaError
from sidecar.flow import FIELDS, OBJ, FlowBatch
from sidecar.verdict import VerdictBatch

SCHEMA_VERSION = 1
KINDS = ("flows", "verdicts", "reject", "ack")
MAX_ROWS = 1 << 20
MAX_STREAM = 200
STR = "str"
#: numeric dtypes allowed on the wire (``extra`` columns may use any of them)
WIRE_DTYPES = ("<f8", "<f4", "<i8", "<i4", "<i2", "|i1", "|u1", "|b1")
ACK_STATUSES = ("ok", "rejected")
_STR_TYPES = {str, type(None)}


@dataclass(frozen=True)
class Col:
    """One wire column: name, wire type (a :data:`WIRE_DTYPES` entry or ``str``) and meaning."""

    name: str
    wire: str
    doc: str


def _wire_of(dt: np.dtype[Any]) -> str:
    return STR if dt == OBJ else dt.newbyteorder("<").str


#: body ``cols`` of ``flows`` and ``verdicts`` messages: the canonical record (sidecar/flow.py)
FLOW_COLUMNS: tuple[Col, ...] = tuple(Col(f.name, _wire_of(f.dtype), f.doc) for f in FIELDS)
#: body ``verdict`` of ``verdicts`` messages (sidecar/verdict.py)
VERDICT_COLUMNS: tuple[Col, ...] = (
    Col("score", "<f8", "BNN screen malicious probability"),
    Col("score2", "<f8", "stage-2 probability (agrees at the model's `bnn.threshold2`), NaN where stage 2 did not run"),
    Col("malicious", "|b1", "final decision"),
    Col("cls", STR, "family name"),
    Col("stage", "|i1", "deciding stage (0 forced, 1 screen, 2 cascade, 3 flood rule, 4 guessing rule)"),
)
#: other body keys per kind: key -> (type, meaning)
BODY_KEYS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "flows": (
        ("source", "str", "reader tag of the records (zeek-tsv, eve, ...)"),
        ("cols", "map", "FLOW_COLUMNS, one column per canonical field"),
        ("label", "str column | nil", "ground-truth labels when the input has them"),
        ("origin", "str column | nil", "file:line of each record when the reader keeps it"),
        ("extra", "map name -> column", "reader extras (e.g. CIC flag counts used by the features)"),
    ),
    "verdicts": (
        ("source, cols, label, origin", "as flows", "the scored records (no extras)"),
        ("verdict", "map", "VERDICT_COLUMNS"),
        ("model", "str", "short sha256 of the model that decided"),
        ("rows", "<i4 column", "row index of each record in the original flows batch"),
        ("total", "int", "records in the original flows batch (a batch may come in parts)"),
    ),
    "reject": (
        ("reason", "str", "why the batch was not scored (counted per reason)"),
        ("detail", "str", "human-readable detail"),
    ),
    "ack": (("acks", "list of [seq, status, reason|nil]", "status ok | rejected; n = len(acks)"),),
}


@dataclass(frozen=True)
class Header:
    kind: str
    stream: str
    seq: int
    n: int


# ----------------------------------------------------------------------------- encode


def _enc_col(arr: np.ndarray, wire: str) -> Any:
    if wire == STR:
        return arr.tolist()
    return [wire, np.ascontiguousarray(arr, dtype=np.dtype(wire)).tobytes()]


def _enc_any(arr: np.ndarray) -> Any:
    if arr.dtype == OBJ:
        return _enc_col(arr, STR)
    wire = arr.dtype.newbyteorder("<").str
    if wire not in WIRE_DTYPES:
        wire = "<f8"  # e.g. unsigned/wide ints in an extra column: widened losslessly enough for features
    return _enc_col(arr, wire)


def _head(kind: str, stream: str, seq: int, n: int) -> dict[str, Any]:
    return {"v": SCHEMA_VERSION, "kind": kind, "stream": stream, "seq": int(seq), "n": int(n)}


def _flows_body(b: FlowBatch, extra: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source": b.source,
        "cols": {c.name: _enc_col(b.cols[c.name], c.wire) for c in FLOW_COLUMNS},
        "label": None if b.label is None else _enc_col(b.label, STR),
        "origin": None if b.origin is None else _enc_col(b.origin, STR),
    }
    body["extra"] = {k: _enc_any(v) for k, v in b.extra.items() if not k.startswith("_")} if extra else {}
    return body


def _pack(obj: dict[str, Any]) -> bytes:
    try:
        out: bytes = msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode {obj.get('kind')} message: {exc}") from exc
    return out


def encode_flows(batch: FlowBatch, stream: str, seq: int) -> bytes:
    """A ``flows`` message: the whole batch (extras whose name starts with ``_`` stay local)."""
    return _pack({**_head("flows", stream, seq, len(batch)), **_flows_body(batch, True)})


def encode_verdicts(v: VerdictBatch, stream: str, seq: int, rows: np.ndarray, total: int) -> bytes:
    """A ``verdicts`` message: verdicts for rows ``rows`` of flows batch ``(stream, seq)``."""
    msg = {**_head("verdicts", stream, seq, len(v)), **_flows_body(v.flows, False)}
    msg["verdict"] = {c.name: _enc_col(getattr(v, c.name), c.wire) for c in VERDICT_COLUMNS}
    msg["model"] = v.model
    msg["rows"] = _enc_col(np.asarray(rows), "<i4")
    msg["total"] = int(total)
    return _pack(msg)


def encode_reject(stream: str, seq: int, n: int, reason: str, detail: str = "") -> bytes:
    return _pack({**_head("reject", stream, seq, n), "reason": reason, "detail": detail[:500]})


def encode_acks(stream: str, acks: Sequence[tuple[int, str, str | None]]) -> bytes:
    return _pack({**_head("ack", stream, 0, len(acks)), "acks": [list(a) for a in acks]})


# ----------------------------------------------------------------------------- decode


def _int(obj: Mapping[str, Any], key: str, lo: int, hi: int) -> int:
    v = obj.get(key)
    if type(v) is not int or not lo <= v <= hi:
        raise ProtocolError(f"header {key!r} must be an int in [{lo}, {hi}], got {v!r}"[:200])
    return v


def _str(obj: Mapping[str, Any], key: str, maxlen: int = 10_000) -> str:
    v = obj.get(key)
    if type(v) is not str or len(v) > maxlen:
        raise ProtocolError(f"{key!r} must be a string of at most {maxlen} chars, got {type(v).__name__}")
    return v


def unpack(data: bytes) -> tuple[Header, dict[str, Any]]:
    """Parse a message and validate its header; the body is checked by the ``decode_*`` functions."""
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises ValueError, TypeError, ExtraData, FormatError, StackError...
        raise ProtocolError(f"not a msgpack message ({type(exc).__name__}: {exc})"[:300]) from exc
    if not isinstance(obj, dict):
        raise ProtocolError(f"message is a {type(obj).__name__}, want a map")
    v = obj.get("v")
    if v != SCHEMA_VERSION or type(v) is not int:
        raise ProtocolError(f"unsupported schema version {v!r} (this side speaks {SCHEMA_VERSION})"[:200])
    kind = obj.get("kind")
    if kind not in KINDS:
        raise ProtocolError(f"unknown message kind {kind!r}"[:200])
    stream = _str(obj, "stream", MAX_STREAM)
    if not stream or "\x00" in stream:
        raise ProtocolError("stream id must be non-empty and contain no NUL")
    return Header(kind, stream, _int(obj, "seq", 0, (1 << 63) - 1), _int(obj, "n", 0, MAX_ROWS)), obj


def _dec_col(val: Any, wire: str | None, n: int, what: str) -> np.ndarray:
    """One column; ``wire=None`` accepts any allowed type (extras)."""
    if isinstance(val, list) and (wire in (None, STR)) and not (
        len(val) == 2 and type(val[0]) is str and type(val[1]) is bytes and wire is None
    ):
        if len(val) != n:
            raise ProtocolError(f"column {what!r} has {len(val)} items, want {n}")
        bad = set(map(type, val)) - _STR_TYPES
        if bad:
            raise ProtocolError(f"column {what!r} holds {sorted(t.__name__ for t in bad)}, want str or nil")
        arr = np.empty(n, dtype=OBJ)
        arr[:] = val
        return arr
    if not (isinstance(val, list) and len(val) == 2 and type(val[0]) is str and type(val[1]) is bytes):
        raise ProtocolError(f"column {what!r} must be [dtype, bytes]" + (" or a string list" if wire != STR else ""))
    dt, raw = val
    if (wire is not None and dt != wire) or dt not in WIRE_DTYPES:
        raise ProtocolError(f"column {what!r} has dtype {dt!r}, want {wire or 'one of ' + ', '.join(WIRE_DTYPES)}"[:200])
    npdt = np.dtype(dt)
    if len(raw) != n * npdt.itemsize:
        raise ProtocolError(f"column {what!r} has {len(raw)} bytes, want {n} x {npdt.itemsize}")
    return np.frombuffer(raw, dtype=npdt).astype(npdt.newbyteorder("="), copy=True)


def _map(obj: Mapping[str, Any], key: str) -> dict[str, Any]:
    v = obj.get(key)
    if not isinstance(v, dict):
        raise ProtocolError(f"{key!r} must be a map")
    return v


def _flows_from(h: Header, obj: Mapping[str, Any], extra: bool) -> FlowBatch:
    cols_in = _map(obj, "cols")
    cols: dict[str, np.ndarray] = {}
    for c, f in zip(FLOW_COLUMNS, FIELDS, strict=True):
        if c.name not in cols_in:
            raise ProtocolError(f"column {c.name!r} is missing")
        arr = _dec_col(cols_in[c.name], c.wire, h.n, c.name)
        cols[c.name] = arr if arr.dtype == f.dtype else arr.astype(f.dtype)
    label = None if obj.get("label") is None else _dec_col(obj["label"], STR, h.n, "label")
    origin = None if obj.get("origin") is None else _dec_col(obj["origin"], STR, h.n, "origin")
    ext: dict[str, np.ndarray] = {}
    if extra and obj.get("extra") is not None:
        for k, val in _map(obj, "extra").items():
            if type(k) is not str or k.startswith("_"):
                raise ProtocolError(f"bad extra column name {k!r}"[:200])
            ext[k] = _dec_col(val, None, h.n, k)
    try:
        return FlowBatch(cols, _str(obj, "source", 100), label, ext, origin)
    except SchemaError as exc:  # cannot happen after the checks above; kept as a guard
        raise ProtocolError(str(exc)) from exc


def decode_flows(h: Header, obj: Mapping[str, Any]) -> FlowBatch:
    if h.kind != "flows":
        raise ProtocolError(f"expected a flows message, got {h.kind!r}")
    return _flows_from(h, obj, True)


@dataclass
class VerdictPart:
    """A decoded ``verdicts`` message: verdicts for ``rows`` of the batch ``(stream, seq)``."""

    header: Header
    verdicts: VerdictBatch
    rows: np.ndarray
    total: int


def decode_verdicts(h: Header, obj: Mapping[str, Any]) -> VerdictPart:
    if h.kind != "verdicts":
        raise ProtocolError(f"expected a verdicts message, got {h.kind!r}")
    flows = _flows_from(h, obj, False)
    vin = _map(obj, "verdict")
    vals: dict[str, np.ndarray] = {}
    for c in VERDICT_COLUMNS:
        if c.name not in vin:
            raise ProtocolError(f"verdict column {c.name!r} is missing")
        vals[c.name] = _dec_col(vin[c.name], c.wire, h.n, c.name)
    total = _int(obj, "total", 0, MAX_ROWS)
    rows = _dec_col(obj.get("rows"), "<i4", h.n, "rows")
    if h.n and (rows.min() < 0 or rows.max() >= total):
        raise ProtocolError(f"row indices out of range [0, {total})")
    if len(np.unique(rows)) != h.n:
        raise ProtocolError("row indices repeat")
    vb = VerdictBatch(flows, vals["score"], vals["score2"], vals["malicious"], vals["cls"], vals["stage"],
                      _str(obj, "model", 100))
    return VerdictPart(h, vb, rows, total)


def decode_reject(h: Header, obj: Mapping[str, Any]) -> tuple[str, str]:
    if h.kind != "reject":
        raise ProtocolError(f"expected a reject message, got {h.kind!r}")
    reason = _str(obj, "reason", 100)
    return (reason or "unspecified"), _str(obj, "detail", 1000)


def decode_acks(h: Header, obj: Mapping[str, Any]) -> list[tuple[int, str, str | None]]:
    if h.kind != "ack":
        raise ProtocolError(f"expected an ack message, got {h.kind!r}")
    acks = obj.get("acks")
    if not isinstance(acks, list) or len(acks) != h.n:
        raise ProtocolError("'acks' must be a list of n entries")
    out: list[tuple[int, str, str | None]] = []
    for a in acks:
        if not (isinstance(a, list) and len(a) == 3 and type(a[0]) is int and a[0] >= 0
                and a[1] in ACK_STATUSES and (a[2] is None or type(a[2]) is str)):
            raise ProtocolError(f"bad ack entry {a!r}"[:200])
        out.append((a[0], a[1], a[2]))
    return out


def schema_markdown() -> str:
    """The wire columns and body keys as Markdown (``docs/ZMQ.md`` embeds this verbatim)."""
    lines = [f"Schema version {SCHEMA_VERSION}.", "", "| body | key / column | wire type | meaning |",
             "|---|---|---|---|"]
    for c in FLOW_COLUMNS:
        lines.append(f"| flows, verdicts: `cols` | `{c.name}` | `{c.wire}` | {c.doc} |")
    for c in VERDICT_COLUMNS:
        lines.append(f"| verdicts: `verdict` | `{c.name}` | `{c.wire}` | {c.doc} |")
    for kind, keys in BODY_KEYS.items():
        for key, typ, doc in keys:
            lines.append(f"| {kind} | `{key}` | {typ} | {doc} |")
    return "\n".join(lines)
