"""Decoding ``BNN::Flow`` records (Zeek's WebSocket JSON) into canonical flow columns.

Three decoders, one result:

* :func:`decode_flow` is the reference: one record at a time, field by field from
  :data:`FLOW_LAYOUT`, every value checked; a bad record raises :class:`BadRecord`
  whose ``reason`` is the skip reason the source counts.
* :func:`decode_flows` takes a whole event's records, parsed by orjson: it transposes
  them into columns with C-level ``map``/``itemgetter``, checks each column at once (tag
  sets, value types, ranges) and converts through small caches.
* :func:`decode_message` (msgspec installed) parses a whole message straight into typed
  structs that mirror the layout, so tags, types, arities and count ranges are checked in
  C, then reads the columns off the structs.

The fast two either give exactly what :func:`decode_flow` gives for every record, column
for column, or None when anything is unexpected; the caller then takes the next slower
path, so bad input gets the same counted skips. ``tests/test_broker_flow.py`` checks the
equivalence on every real message shape and on generated records and faults.

A Zeek record travels as a vector of its fields by position; :data:`FLOW_LAYOUT` mirrors
``type Flow: record`` in ``zeek-scripts/scripts/main.zeek``. ``conn_id`` has 4 fields up
to Zeek 7.0, ``proto`` (count) from 7.1 and ``ctx`` (a record) from 8.0; only the first
four are used. Unset ``&optional`` fields arrive as ``none`` and stay missing (None).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import datetime
from itertools import chain, compress
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np

from sidecar.errors import ProtocolError
from sidecar.sources.broker_codec import TYPES, Timespan, Timestamp
from sidecar.sources.zeek_tsv import MAX_COUNT, MAX_DURATION, flags_from_history

CONN_ID = "conn_id"

#: ``BNN::Flow`` fields in wire order: (name, ``@data-type``, required). ``conn_id`` is a
#: nested record (a vector). Keep in step with ``type Flow: record`` in main.zeek.
FLOW_LAYOUT: tuple[tuple[str, str, bool], ...] = (
    ("ts", "timestamp", True),
    ("uid", "string", True),
    ("id", CONN_ID, True),
    ("proto", "enum-value", True),
    ("service", "string", False),
    ("duration", "timespan", False),
    ("orig_bytes", "count", False),
    ("resp_bytes", "count", False),
    ("conn_state", "string", False),
    ("history", "string", False),
    ("orig_pkts", "count", False),
    ("orig_ip_bytes", "count", False),
    ("resp_pkts", "count", False),
    ("resp_ip_bytes", "count", False),
)
#: the canonical columns a Flow fills (the rest of :data:`sidecar.flow.FIELDS` stays missing)
COLUMNS = ("ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "proto", "service", "duration",
           "orig_bytes", "resp_bytes", "conn_state", "history", "orig_pkts", "orig_ip_bytes",
           "resp_pkts", "resp_ip_bytes", "orig_flags", "resp_flags")
AMOUNTS = ("orig_bytes", "resp_bytes", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes")
_EPOCH = datetime(1970, 1, 1)
_PORT_PROTOS = frozenset(("tcp", "udp", "icmp", "unknown", "?"))
#: Broker's own timestamp text (milliseconds; hours 00-23 so that every Python's fromisoformat
#: agrees with the codec); anything else goes through the codec
_BROKER_TS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T(?:[01][0-9]|2[0-3]):[0-9]{2}:[0-9]{2}(?:\.[0-9]{3})?")
_CACHE_MAX = 1 << 16


class BadRecord(ProtocolError):
    """A ``BNN::Flow`` value that does not have the shipped layout (``reason`` = skip reason)."""

    def __init__(self, msg: str, reason: str = "bad_record") -> None:
        super().__init__(msg)
        self.reason = reason


def _type_reason(tag: Any) -> str:
    return "bad_record" if type(tag) is str and tag in TYPES else "unknown_data_type"


def _tagged(v: Any, what: str) -> tuple[Any, Any]:
    if type(v) is not dict or "@data-type" not in v or "data" not in v:
        raise BadRecord(f"{what}: not a Broker value: {v!r:.100}")
    return v["@data-type"], v["data"]


def _vector(v: Any, what: str) -> list[Any]:
    tag, data = _tagged(v, what)
    if tag != "vector" or type(data) is not list:
        raise BadRecord(f"{what} must be a vector, got {tag!r:.40}", _type_reason(tag))
    return data


_ADDRS: dict[str, str] = {}
_PORTS: dict[str, int] = {}


def _address(s: Any) -> str:
    """Textual address -> canonical text (cached). Raises :class:`BadRecord`."""
    hit = _ADDRS.get(s) if type(s) is str else None
    if hit is not None:
        return hit
    try:
        out = str(ipaddress.ip_address(s if type(s) is str else ""))
    except ValueError as exc:
        raise BadRecord(f"id: bad address: {exc}") from exc
    if len(_ADDRS) >= _CACHE_MAX:
        _ADDRS.clear()
    _ADDRS[s] = out
    return out


def _port(s: Any) -> int:
    """``"80/tcp"`` -> 80, ``"?/unknown"`` -> -1 (cached). Raises :class:`BadRecord`."""
    hit = _PORTS.get(s) if type(s) is str else None
    if hit is not None:
        return hit
    num, _, proto = s.partition("/") if type(s) is str else ("", "", "")
    if proto not in _PORT_PROTOS or not (num == "?" or (num.isascii() and num.isdigit() and int(num) <= 65535)):
        raise BadRecord(f"conn_id port must be a port, got {s!r:.80}")
    out = -1 if num == "?" else int(num)
    if len(_PORTS) >= _CACHE_MAX:
        _PORTS.clear()
    _PORTS[s] = out
    return out


def _addr_item(v: Any) -> str:
    tag, data = _tagged(v, "addr")
    if tag != "address":
        raise BadRecord(f"conn_id address must be an address, got {tag!r:.40}", _type_reason(tag))
    return _address(data)


def _port_item(v: Any) -> int:
    tag, data = _tagged(v, "port")
    if tag != "port":
        raise BadRecord(f"conn_id port must be a port, got {tag!r:.40}", _type_reason(tag))
    return _port(data)


def _timestamp(data: Any) -> float:
    """Broker timestamp text -> UNIX seconds; the same value as the codec's ``Timestamp``."""
    if type(data) is str and _BROKER_TS.fullmatch(data):
        try:
            return (datetime.fromisoformat(data) - _EPOCH).total_seconds()
        except ValueError:
            pass
    try:
        return Timestamp.from_data(data).seconds
    except ProtocolError as exc:
        raise BadRecord(f"Flow field 'ts': {exc}") from exc


def _timespan(data: Any) -> float:
    try:
        return Timespan.from_data(data).seconds
    except ProtocolError as exc:
        raise BadRecord(f"Flow field 'duration': {exc}") from exc


def _count(data: Any) -> int:
    if type(data) is not int or not 0 <= data < 2**64:
        raise BadRecord(f"invalid count {data!r:.40}")
    return data


def _string(data: Any) -> str:
    if type(data) is not str:
        raise BadRecord(f"invalid string {data!r:.40}")
    return data


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "timestamp": _timestamp,
    "timespan": _timespan,
    "count": _count,
    "string": _string,
    "enum-value": _string,
}


def decode_flow(rec: Any) -> dict[str, Any]:
    """One ``BNN::Flow`` record, as parsed JSON (a Broker vector), -> canonical column values
    (None = missing). The reference decoder. Raises :class:`BadRecord`."""
    items = _vector(rec, "a Flow")
    if len(items) != len(FLOW_LAYOUT):
        raise BadRecord(f"a Flow has {len(FLOW_LAYOUT)} fields, got {len(items)}")
    row: dict[str, Any] = {}
    for (name, want, required), v in zip(FLOW_LAYOUT, items, strict=True):
        tag, data = _tagged(v, name)
        if tag == "none":
            if required or data != {}:
                raise BadRecord(f"required Flow field {name!r} is unset" if required else f"bad none {data!r:.40}")
            row[name] = None
        elif want == CONN_ID:
            cid = _vector(v, "id")
            if len(cid) < 4:
                raise BadRecord(f"id must be a conn_id (>= 4 fields), got {len(cid)}")
            row["orig_h"], row["resp_h"] = _addr_item(cid[0]), _addr_item(cid[2])
            row["orig_p"], row["resp_p"] = _port_item(cid[1]), _port_item(cid[3])
        elif tag != want:
            raise BadRecord(f"Flow field {name!r} must be {want}, got {tag!r:.40}", _type_reason(tag))
        else:
            row[name] = _CONVERT[tag](data)
    row["proto"] = row["proto"].lower()
    dur = row["duration"]
    if dur is not None and not 0 <= dur <= MAX_DURATION:
        raise BadRecord(f"duration {dur} out of range")
    for c in AMOUNTS:
        if row[c] is not None and row[c] > MAX_COUNT:
            raise BadRecord(f"{c} {row[c]} is absurd")
    row["orig_flags"], row["resp_flags"] = flags_from_history(row["history"], row["proto"])
    return row


# --- the fast path ------------------------------------------------------------------------

_TAG = itemgetter("@data-type")
_DATA = itemgetter("data")
_QUAD = itemgetter(0, 1, 2, 3)
_N = len(FLOW_LAYOUT)
_STR = frozenset((str,))
_INT = frozenset((int,))
#: Broker's millisecond timestamp text with every digit mapped to 0
_TS_SHAPE = "0000-00-00T00:00:00.000"
_TO_ZERO = str.maketrans("123456789", "000000000")
_MS_MIN, _MS_MAX = -62_135_596_800_000, 253_402_300_799_999  # years 1 ... 9999, as datetime allows
#: the codec's timespan grammar and units (tests check the two agree)
_SPAN = re.compile(r"(-?\d+)(ns|us|ms|s|min|h|d)")
_UNIT_NS = {"d": 86_400 * 10**9, "h": 3_600 * 10**9, "min": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3,
            "ns": 1}


class _Unexpected(Exception):
    """Internal: the fast path declines; the reference decoder decides."""


def _only(tags: list[Any], want: str) -> None:
    if tags.count(want) != len(tags):
        raise _Unexpected


def _of_types(values: list[Any], kinds: frozenset[type]) -> list[Any]:
    if values and not set(map(type, values)) <= kinds:
        raise _Unexpected
    return values


def _optional(tags: list[Any], data: list[Any], want: str, kinds: frozenset[type]) -> tuple[list[Any], list[Any]]:
    """An ``&optional`` column -> (values with None for ``none``, the set values)."""
    k = tags.count(want)
    if k == len(tags):
        return data, _of_types(data, kinds)
    if k + tags.count("none") != len(tags):
        raise _Unexpected
    nones = list(compress(data, map("none".__eq__, tags)))
    if nones.count({}) != len(nones):
        raise _Unexpected
    vals = _of_types(list(compress(data, map(want.__eq__, tags))), kinds)
    return [d if t == want else None for t, d in zip(tags, data, strict=True)], vals


def _timestamps(data: list[Any]) -> list[float]:
    """Timestamp texts -> seconds: Broker's own form parsed by numpy in one go (the same
    values as :func:`_timestamp`), anything else one by one."""
    data = _of_types(data, _STR)
    n = len(data)
    if "\x00".join(data).translate(_TO_ZERO) == "\x00".join([_TS_SHAPE] * n):
        try:
            ms = np.array(data, dtype="datetime64[ms]").astype(np.int64)
        except ValueError:
            ms = None
        if ms is not None and ms.min() >= _MS_MIN and ms.max() <= _MS_MAX:
            out: list[float] = (ms / 1e3).tolist()
            return out
    return list(map(_timestamp, data))


def _span(s: str) -> float:
    m = _SPAN.fullmatch(s)
    if m is None:
        raise _Unexpected
    return int(m[1]) * _UNIT_NS[m[2]] / 10**9


def _via(cache: dict[str, Any], fn: Callable[[Any], Any], values: list[Any]) -> list[Any]:
    """``fn`` over ``values``, cache hits looked up in C (``fn`` fills the cache)."""
    out = list(map(cache.get, values))
    if None in out:
        out = [fn(v) if o is None else o for v, o in zip(values, out, strict=True)]
    return out


def _fast(records: list[Any]) -> dict[str, list[Any]]:
    if set(map(_TAG, records)) != {"vector"}:
        raise _Unexpected
    rows = list(map(_DATA, records))
    if set(map(type, rows)) != {list} or set(map(len, rows)) != {_N}:
        raise _Unexpected
    flat = list(chain.from_iterable(rows))
    tags, data = list(map(_TAG, flat)), list(map(_DATA, flat))
    out: dict[str, list[Any]] = {}
    for j, (name, want, required) in enumerate(FLOW_LAYOUT):
        t, d = tags[j::_N], data[j::_N]
        if want == CONN_ID:
            _only(t, "vector")
            if set(map(type, d)) != {list} or min(map(len, d)) < 4:
                raise _Unexpected
            quad = list(chain.from_iterable(map(_QUAD, d)))
            qt, qd = list(map(_TAG, quad)), list(map(_DATA, quad))
            for i, (col, fn, kind) in enumerate((("orig_h", _address, "address"), ("orig_p", _port, "port"),
                                                 ("resp_h", _address, "address"), ("resp_p", _port, "port"))):
                _only(qt[i::4], kind)
                out[col] = _via(_ADDRS if fn is _address else _PORTS, fn, qd[i::4])
        elif required:
            _only(t, want)
            out[name] = _of_types(d, _STR) if want != "timestamp" else _timestamps(d)
        elif want == "count":
            counts, vals = _optional(t, d, want, _INT)
            if vals and not 0 <= min(vals) <= max(vals) <= MAX_COUNT:
                raise _Unexpected
            out[name] = counts
        elif want == "timespan":
            spans, vals = _optional(t, d, want, _STR)
            if vals:
                secs = list(map(_span, vals))
                if not 0 <= min(secs) <= max(secs) <= MAX_DURATION:
                    raise _Unexpected
                it = iter(secs)
                spans = [None if s is None else next(it) for s in spans]
            out[name] = spans
        else:
            out[name] = _optional(t, d, want, _STR)[0]
    protos = out["proto"] = list(map(str.lower, out["proto"]))
    flags = list(map(flags_from_history, out["history"], protos))
    out["orig_flags"], out["resp_flags"] = (list(c) for c in zip(*flags, strict=True))
    return out


def decode_flows(records: list[Any]) -> dict[str, list[Any]] | None:
    """All records of one event -> {column: values} (see :data:`COLUMNS`), exactly as
    :func:`decode_flow` per record would give them; None if any record is not the plain
    shape (the caller then decodes record by record). Never raises for bad input."""
    if not records:
        return {c: [] for c in COLUMNS}
    try:
        return _fast(records)
    except (_Unexpected, BadRecord, KeyError, TypeError, ValueError, AttributeError, OverflowError):
        return None


# --- the msgspec path: typed parse of a whole BNN::flow(s) message --------------------------
# Slotted, untracked structs parse ~3x faster than orjson builds dicts. A message this path
# does not take goes the orjson way, so results never depend on msgspec being installed.

try:
    import msgspec as _msgspec
except ImportError:  # pragma: no cover - exercised where msgspec is absent
    _msgspec = None  # type: ignore[assignment]

_FLOW_DECODER: Any = None
_FLOWS_DECODER: Any = None
_UNSET: Any = None
if _msgspec is not None:
    from typing import Annotated, Literal

    _UNSET = _msgspec.UNSET
    _Count = Annotated[int, _msgspec.Meta(ge=0, le=int(MAX_COUNT))]
    _Empty = Annotated[dict[str, Any], _msgspec.Meta(max_length=0)]

    def _tagged_struct(tag: str, data: Any = None) -> Any:
        """The struct of a Broker value with this ``@data-type`` (``data`` None: no data field)."""
        fields = [] if data is None else [("data", data)]
        return _msgspec.defstruct("_B", fields, tag_field="@data-type", tag=tag, gc=False)

    _Never = _tagged_struct("\x00never")  # a one-type union still demands the tag
    _Str, _Enum = _tagged_struct("string", str), _tagged_struct("enum-value", str)
    _Ts, _Span = _tagged_struct("timestamp", str), _tagged_struct("timespan", str)
    _Addr, _Port = _tagged_struct("address", str), _tagged_struct("port", str)
    _Cnt, _NoneV = _tagged_struct("count", _Count), _tagged_struct("none", _Empty)
    _One = _tagged_struct("count", Literal[1])
    _Name = _tagged_struct("string", Literal["BNN::flow", "BNN::flows"])
    # array_like structs ignore trailing items: a last ``more`` field catches one (-> decline)
    _Cid = _msgspec.defstruct("_Cid", [("oh", _Addr | _Never), ("op", _Port | _Never), ("rh", _Addr | _Never),
                                       ("rp", _Port | _Never)], array_like=True, gc=False)
    _FlowRec = _msgspec.defstruct("_FlowRec", [
        ("ts", _Ts | _Never), ("uid", _Str | _Never), ("id", _tagged_struct("vector", _Cid) | _Never),
        ("proto", _Enum | _Never), ("service", _Str | _NoneV), ("duration", _Span | _NoneV),
        *((c, _Cnt | _NoneV) for c in ("orig_bytes", "resp_bytes")), ("conn_state", _Str | _NoneV),
        ("history", _Str | _NoneV), *((c, _Cnt | _NoneV) for c in ("orig_pkts", "orig_ip_bytes", "resp_pkts",
                                                                   "resp_ip_bytes")),
        ("more", Any, _UNSET)], array_like=True, gc=False)
    _FlowV = _tagged_struct("vector", _FlowRec)

    def _message(args: Any) -> Any:
        body = _msgspec.defstruct("_Body", [("name", _Name | _Never), ("args", args), ("meta", Any, _UNSET),
                                            ("more", Any, _UNSET)], array_like=True, gc=False)
        frame = _msgspec.defstruct("_Frame", [("fmt", _One | _Never), ("kind", _One | _Never),
                                              ("body", _tagged_struct("vector", body) | _Never),
                                              ("more", Any, _UNSET)], array_like=True, gc=False)
        return _msgspec.defstruct("_FlowMsg", [("type", Literal["data-message"]), ("topic", str),
                                               ("t", Literal["vector"], _msgspec.field(name="@data-type")),
                                               ("data", frame)], gc=False)

    def _one(item: Any) -> Any:
        return _tagged_struct("vector", _msgspec.defstruct("_Args", [("arg", item), ("more", Any, _UNSET)],
                                                           array_like=True, gc=False)) | _Never

    _FLOW_DECODER = _msgspec.json.Decoder(_message(_one(_FlowV | _Never)))
    _FLOWS_DECODER = _msgspec.json.Decoder(_message(_one(_tagged_struct("vector", list[_FlowV | _Never]) | _Never)))  # type: ignore[valid-type]

_G = {name: attrgetter(f"{name}.data") for name, _, _ in FLOW_LAYOUT if name != "id"}
_CID = attrgetter("id.data")
_G.update({c: attrgetter(f"{f}.data") for c, f in (("orig_h", "oh"), ("orig_p", "op"), ("resp_h", "rh"), ("resp_p", "rp"))})
_MORE = attrgetter("more")


def _nulls(vals: list[Any]) -> list[Any]:
    """An optional column read off the structs: ``none``'s ``{}`` -> None."""
    return [None if type(v) is dict else v for v in vals] if dict in set(map(type, vals)) else vals


def decode_message(raw: str | bytes) -> tuple[str, int, dict[str, list[Any]]] | None:
    """A whole ``BNN::flow`` / ``BNN::flows`` message of plain records -> (topic, number of
    records, columns), the same as the orjson path gives; None for anything else (no
    msgspec, another message, a record off the plain shape...): the caller then parses
    with orjson. Never raises."""
    if _FLOW_DECODER is None:
        return None
    try:
        flows = (b"BNN::flows" in raw) if isinstance(raw, bytes) else ("BNN::flows" in raw)
        msg = (_FLOWS_DECODER if flows else _FLOW_DECODER).decode(raw)
        body = msg.data.body.data
        args = body.args.data
        if msg.data.more is not _UNSET or body.more is not _UNSET or args.more is not _UNSET:
            return None
        if body.name.data != ("BNN::flows" if flows else "BNN::flow"):
            return None
        recs = [r.data for r in args.arg.data] if flows else [args.arg.data]
        if not recs or set(map(_MORE, recs)) != {_UNSET}:
            return None
        return msg.topic, len(recs), _struct_columns(recs)
    except Exception:  # any surprise: the orjson path decides
        return None


def _struct_columns(recs: list[Any]) -> dict[str, list[Any]]:
    g = _G
    out: dict[str, list[Any]] = {"ts": _timestamps(list(map(g["ts"], recs))), "uid": list(map(g["uid"], recs))}
    cids = list(map(_CID, recs))
    for c, fn, cache in (("orig_h", _address, _ADDRS), ("orig_p", _port, _PORTS), ("resp_h", _address, _ADDRS),
                         ("resp_p", _port, _PORTS)):
        out[c] = _via(cache, fn, list(map(g[c], cids)))
    protos = out["proto"] = list(map(str.lower, map(g["proto"], recs)))
    for c in ("service", "conn_state", "history", *AMOUNTS):
        out[c] = _nulls(list(map(g[c], recs)))
    spans = _nulls(list(map(g["duration"], recs)))
    if str in set(map(type, spans)):
        vals = [d for d in spans if d is not None]
        secs = list(map(_span, vals))
        if not 0 <= min(secs) <= max(secs) <= MAX_DURATION:
            raise _Unexpected
        it = iter(secs)
        spans = [None if d is None else next(it) for d in spans]
    out["duration"] = spans
    flags = list(map(flags_from_history, out["history"], protos))
    out["orig_flags"], out["resp_flags"] = (list(c) for c in zip(*flags, strict=True))
    return out
