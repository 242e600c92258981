"""The reference ``BNN::Flow`` decoder: one record at a time, every value checked.

:func:`decode_flow` walks :data:`FLOW_LAYOUT` field by field; a bad record raises
:class:`BadRecord` whose ``reason`` is the skip reason the source counts. The fast paths
(:mod:`sidecar.sources.broker_flow_fast`, :mod:`sidecar.sources.broker_flow_ms`) must give
exactly what this gives; :mod:`sidecar.sources.broker_flow` re-exports all three.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

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
