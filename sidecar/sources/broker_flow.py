"""Decoding ``BNN::Flow`` records (Zeek's WebSocket JSON) into canonical flow columns.

Two decoders, one result:

* :func:`decode_flow` is the reference: one record at a time, field by field from
  :data:`FLOW_LAYOUT`, every value checked; a bad record raises :class:`BadRecord`
  whose ``reason`` is the skip reason the source counts.
* :func:`decode_flows` is the fast path for a whole event's records: it transposes the
  records into columns with C-level ``zip``/``map``/``itemgetter``, checks each column at
  once (tag sets, value types, ranges) and converts through small caches. It either
  returns exactly what :func:`decode_flow` would return for every record, column for
  column, or ``None`` when anything is unexpected; the caller then runs
  :func:`decode_flow` record by record, so bad input gets the same counted skips.
  ``tests/test_broker_flow.py`` checks the equivalence on real and generated records.

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
from operator import itemgetter
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
                out[col] = list(map(fn, qd[i::4]))
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
