"""Value parsing and the columnar fast path of the eve reader (:mod:`sidecar.sources.eve`).

Constants and per-value parsers shared by the reference row path (``eve._record``) and the
columnar path: flow lines are decoded straight into typed structs (msgspec, when installed)
or orjson dicts, pulled into per-column tuples and converted to numpy once per batch.
:func:`compute_columns` computes exactly what ``eve._record`` computes, or raises so that the
caller falls back to the reference path for that batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from sidecar.flow import IP_HDR, ip_header_bytes
from sidecar.memo import memo_map
from sidecar.sources.eve_time import _ts_column

try:  # optional: decodes flow lines straight into typed structs, faster than orjson dicts
    import msgspec as _msgspec
except ImportError:  # pragma: no cover - exercised where msgspec is absent
    _msgspec = None  # type: ignore[assignment]


SOURCE = "eve"
ETH_HDR = 14
TRANSPORT_HDR = {"tcp": 20, "udp": 8, "icmp": 8, "icmp6": 8}
_PROTO = {"ipv6-icmp": "icmp6", "icmpv6": "icmp6"}


def _num(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"not a number: {v!r}")
    return float(v)


def _port(v: Any) -> int:
    if v is None:
        return -1
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > 65535:
        raise TypeError(f"bad port: {v!r}")
    return v


def _flags(tcp: Any, key: str) -> int:
    if not isinstance(tcp, dict):
        return -1
    v = tcp.get(key)
    if v is None:
        return -1
    if not isinstance(v, str):
        raise TypeError(f"bad tcp flags: {v!r}")
    return int(v, 16) & 0xFF


def _ip_bytes(total: float, pkts: float, ip_hdr: int = IP_HDR) -> float:
    return max(total - ETH_HDR * pkts, ip_hdr * pkts)


def _mapped(vals: Sequence[Any], fn: Any, memo: dict[Any, Any] | None = None) -> list[Any]:
    """:func:`sidecar.memo.memo_map` with this module's bound :data:`_MEMO_MAX`."""
    return memo_map(vals, fn, memo, _MEMO_MAX)


_MEMO_MAX = 4096
#: :func:`_mapped` memos: typed proto, transport header bytes per proto, service, tcp flags
_SERVICE_MEMO: dict[Any, str | None] = {}
_FLAGS_MEMO: dict[Any, int] = {}
_PROTO_MEMO: dict[Any, str] = {}
_HDR_MEMO: dict[Any, int] = {}


def _hdr(p: str) -> int:
    return TRANSPORT_HDR.get(p, 0)


def _proto(v: Any) -> str:
    if not isinstance(v, (str, int)) or isinstance(v, bool):
        raise TypeError(f"bad proto: {v!r}")
    p = str(v).lower()
    return _PROTO.get(p, p)


def _ports(vals: Sequence[Any], typed: bool = False) -> np.ndarray:
    nones = vals.count(None)
    if typed:
        return np.array(list(map({None: -1}.get, vals, vals)) if nones else vals, dtype=np.int32)
    if not set(map(type, vals)) <= {int, type(None)}:
        raise TypeError("bad port type")
    arr = np.array(list(map({None: -1}.get, vals, vals)) if nones else vals, dtype=np.int64)
    if (arr < -1).any() or (arr > 65535).any() or int((arr == -1).sum()) != nones:
        raise TypeError("bad port")
    return arr.astype(np.int32)


def _nums(vals: Sequence[Any], typed: bool = False) -> np.ndarray:
    if not typed and not set(map(type, vals)) <= {int, float}:
        raise TypeError("not a number")
    return np.array(vals, dtype=np.float64)


def _pymax(a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
    """Python's ``max(a, b)`` elementwise (first argument wins ties and NaN)."""
    return np.where(b > a, b, a)


def _as_str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _service(a: Any) -> str | None:
    return a if isinstance(a, str) and a and a != "failed" else None


def _flag_value(v: Any) -> int:
    return -1 if v is None else _flags({"v": v}, "v")


#: one row tuple per flow line: top-level values, then ``flow.*``, then ``tcp.*``
#: (``dict.get`` semantics; the same order as the msgspec struct fields below)
_EV_FIELDS = ("flow", "proto", "src_ip", "dest_ip", "event_type", "flow_id", "src_port", "dest_port", "app_proto", "tcp")
_FLOW_FIELDS = ("start", "pkts_toserver", "pkts_toclient", "bytes_toserver", "bytes_toclient", "end", "state", "reason")


_DECODER: Any = None
_MS_ERRORS: tuple[type[BaseException], ...] = ()

if _msgspec is not None:
    # Typed fields: msgspec checks in C exactly what _record would reject (bools are
    # not ints, ports 0..65535, strings where strings are needed), so a struct row
    # needs no per-value type checks. Any line msgspec rejects (bad JSON, an unusual
    # type, a missing src_ip/flow) takes the orjson path, where _dict_row, the
    # checked columns and finally _record decide exactly as before.
    from typing import Annotated

    _PortT = Annotated[int, _msgspec.Meta(ge=0, le=65535)] | None

    class _TcpS(_msgspec.Struct, gc=False):
        tcp_flags_ts: str | None = None
        tcp_flags_tc: str | None = None

    class _FlowS(_msgspec.Struct, gc=False):
        start: str
        pkts_toserver: int | float
        pkts_toclient: int | float
        bytes_toserver: int | float
        bytes_toclient: int | float
        end: str | None = None
        state: str | None = None
        reason: str | None = None

    class _EvS(_msgspec.Struct, gc=False):
        flow: _FlowS
        proto: str | int
        src_ip: str
        dest_ip: str
        event_type: Any = None
        flow_id: int | None = None
        src_port: _PortT = None
        dest_port: _PortT = None
        app_proto: str | None = None
        tcp: _TcpS = _msgspec.field(default_factory=_TcpS)

    assert _EvS.__struct_fields__ == _EV_FIELDS and _FlowS.__struct_fields__ == _FLOW_FIELDS
    _DECODER = _msgspec.json.Decoder(_EvS).decode
    _MS_ERRORS = (_msgspec.DecodeError, _msgspec.ValidationError, RecursionError)


#: the value columns :func:`compute_columns` takes, in order
RAW_COLUMNS = (
    "proto", "src_ip", "dest_ip", "flow_id", "src_port", "dest_port", "app_proto",
    "start", "pkts_toserver", "pkts_toclient", "bytes_toserver", "bytes_toclient", "end", "state", "reason",
    "tcp_flags_ts", "tcp_flags_tc",
)  # fmt: skip


def compute_columns(raw: Sequence[Sequence[Any]], raws: Sequence[bytes], typed: bool) -> dict[str, Any]:
    """Canonical columns from per-field value sequences (:data:`RAW_COLUMNS` order).

    ``typed``: the values are known to have the types msgspec checks (str/None, int
    ports in range, int/float/None numbers); a None where ``_record`` needs a value
    (address, number, timestamp) still raises, so the caller takes the reference path.
    """
    (proto_raw, src, dst, fids, sport, dport, app, start, op_, rp_, ob_, rb_, end, state, reason, fts, ftc) = raw
    n = len(src)
    both = _ts_column((*start, *end), typed)
    ts = both[:n]
    duration = both[n:] - ts
    proto = _mapped(proto_raw, _proto, _PROTO_MEMO if typed else None)  # 1 == 1.0: typed only
    parr = np.array(proto, dtype=object)
    orig_p, resp_p = _ports(sport, typed), _ports(dport, typed)
    for i in np.flatnonzero((parr == "icmp") | (parr == "icmp6")).tolist():
        ev = orjson.loads(raws[i])
        if orig_p[i] < 0 and "icmp_type" in ev:
            orig_p[i] = _port(ev["icmp_type"])
        if resp_p[i] < 0 and "icmp_code" in ev:
            resp_p[i] = _port(ev["icmp_code"])
    op, rp = _nums(op_, typed), _nums(rp_, typed)
    ob, rb = _nums(ob_, typed), _nums(rb_, typed)
    if typed and np.isnan(op + rp + ob + rb).any():  # a None (JSON has no NaN)
        raise TypeError("not a number: None")
    if (None in src or None in dst) if typed else (set(map(type, src)) != {str} or set(map(type, dst)) != {str}):
        raise TypeError("missing src_ip/dest_ip")
    ip_hdr = np.fromiter(map(ip_header_bytes, src), dtype=np.float64, count=n)  # 20, or 40 for IPv6
    hdr = ip_hdr + np.array(_mapped(proto, _hdr, _HDR_MEMO), dtype=np.float64)  # + transport header
    oip = _pymax(ob - ETH_HDR * op, ip_hdr * op)
    rip = _pymax(rb - ETH_HDR * rp, ip_hdr * rp)
    if None in fids:
        uid = [None if f is None else str(f) for f in fids]
    else:  # typed: ints, whose repr is their str (and skips str's type dispatch)
        uid = list(map(int.__repr__ if typed else str, fids))
    is_tcp = parr == "tcp"
    oflags = np.full(n, -1, dtype=np.int16)
    rflags = np.full(n, -1, dtype=np.int16)
    if is_tcp.any():
        rows = np.flatnonzero(is_tcp)
        if len(rows) == n:
            oflags[:] = _mapped(fts, _flag_value, _FLAGS_MEMO)  # raises for every non-str but None
            rflags[:] = _mapped(ftc, _flag_value, _FLAGS_MEMO)
        else:
            sel = rows.tolist()
            oflags[rows] = _mapped([fts[i] for i in sel], _flag_value, _FLAGS_MEMO)
            rflags[rows] = _mapped([ftc[i] for i in sel], _flag_value, _FLAGS_MEMO)
    return {
        "ts": ts,
        "uid": uid,
        "orig_h": src,
        "orig_p": orig_p,
        "resp_h": dst,
        "resp_p": resp_p,
        "proto": parr,
        "service": _mapped(app, _service, _SERVICE_MEMO),  # None for every non-str
        "duration": duration,
        "orig_pkts": op,
        "resp_pkts": rp,
        "orig_bytes": _pymax(oip - op * hdr, 0.0),
        "resp_bytes": _pymax(rip - rp * hdr, 0.0),
        "orig_ip_bytes": oip,
        "resp_ip_bytes": rip,
        "flow_state": state if typed else _mapped(state, _as_str),
        "flow_reason": reason if typed else _mapped(reason, _as_str),
        "orig_flags": oflags,
        "resp_flags": rflags,
    }
