"""Reader for Suricata EVE JSON ``flow`` events -> canonical :class:`FlowBatch`.

Only ``event_type: "flow"`` lines become records. Every other event type is counted
in ``stats.ignored`` as ``"event:<type>"``. ``netflow`` events are ignored on purpose:
they are one-directional (Suricata writes two per flow, one per direction), so a
single one is not a bidirectional flow record.

Byte conversion: eve ``bytes_toserver``/``bytes_toclient`` count WHOLE packets,
including the link-layer header. We assume Ethernet (14 bytes per packet):

* ``orig_ip_bytes = bytes_toserver - 14 * pkts_toserver``, clamped at
  ``>= 20 * pkts_toserver`` (a minimal IPv4 header per packet); same for resp.
* ``orig_bytes`` (transport payload) is an ESTIMATE:
  ``ip_bytes - pkts * (20 + transport header)`` with 20 for TCP (options, e.g. the
  usual 12-byte timestamp option, are unknown and not subtracted, so TCP payload is
  over-estimated by up to 12-40 bytes per packet), 8 for UDP, 8 for ICMP, 0 for other
  protocols; clamped at 0.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import numpy as np
import orjson

from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats

SOURCE = "eve"
ETH_HDR = 14
IP_HDR = 20
TRANSPORT_HDR = {"tcp": 20, "udp": 8, "icmp": 8, "icmp6": 8}
_PROTO = {"ipv6-icmp": "icmp6", "icmpv6": "icmp6"}


def _parse_ts_full(s: str) -> float:
    d = datetime.fromisoformat(s)  # Python >= 3.11 accepts "+0200"
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


@lru_cache(maxsize=4096)
def _whole_seconds(base: str, tz: str) -> float:
    return _parse_ts_full(base + tz)


def parse_ts(s: str) -> float:
    """Suricata time ``2021-06-06T15:57:01.123456+0200`` -> UNIX epoch seconds.

    Fast path: the whole-second part (and offset) is parsed once and cached, the
    fraction added as a float; anything else goes through ``fromisoformat``.
    """
    if len(s) > 20 and s[19] == "." and s[10] == "T":
        frac_end = 20
        n = len(s)
        while frac_end < n and s[frac_end].isdigit():
            frac_end += 1
        if frac_end > 20:
            return _whole_seconds(s[:19], s[frac_end:]) + float(s[19:frac_end])
    return _parse_ts_full(s)


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


def _ip_bytes(total: float, pkts: float) -> float:
    return max(total - ETH_HDR * pkts, IP_HDR * pkts)


def _record(ev: dict[str, Any]) -> dict[str, Any]:
    flow = ev.get("flow")
    if not isinstance(flow, dict):
        raise KeyError("missing flow object")
    start = flow.get("start")
    end = flow.get("end")
    if not isinstance(start, str):
        raise KeyError("missing flow.start")
    ts = parse_ts(start)
    duration = parse_ts(end) - ts if isinstance(end, str) else np.nan
    proto_raw = ev.get("proto")
    if not isinstance(proto_raw, (str, int)) or isinstance(proto_raw, bool):
        raise TypeError(f"bad proto: {proto_raw!r}")
    proto = str(proto_raw).lower()
    proto = _PROTO.get(proto, proto)
    orig_p = _port(ev.get("src_port"))
    resp_p = _port(ev.get("dest_port"))
    if proto in ("icmp", "icmp6"):
        if orig_p < 0 and "icmp_type" in ev:
            orig_p = _port(ev["icmp_type"])
        if resp_p < 0 and "icmp_code" in ev:
            resp_p = _port(ev["icmp_code"])
    op = _num(flow.get("pkts_toserver"))
    rp = _num(flow.get("pkts_toclient"))
    oip = _ip_bytes(_num(flow.get("bytes_toserver")), op)
    rip = _ip_bytes(_num(flow.get("bytes_toclient")), rp)
    hdr = IP_HDR + TRANSPORT_HDR.get(proto, 0)
    app = ev.get("app_proto")
    service = app if isinstance(app, str) and app and app != "failed" else None
    src, dst = ev.get("src_ip"), ev.get("dest_ip")
    if not isinstance(src, str) or not isinstance(dst, str):
        raise TypeError("missing src_ip/dest_ip")
    tcp = ev.get("tcp") if proto == "tcp" else None
    fid = ev.get("flow_id")
    state, reason = flow.get("state"), flow.get("reason")
    return {
        "ts": ts,
        "uid": None if fid is None else str(fid),
        "orig_h": src,
        "orig_p": orig_p,
        "resp_h": dst,
        "resp_p": resp_p,
        "proto": proto,
        "service": service,
        "duration": duration,
        "orig_pkts": op,
        "resp_pkts": rp,
        "orig_bytes": max(oip - op * hdr, 0.0),
        "resp_bytes": max(rip - rp * hdr, 0.0),
        "orig_ip_bytes": oip,
        "resp_ip_bytes": rip,
        "flow_state": state if isinstance(state, str) else None,
        "flow_reason": reason if isinstance(reason, str) else None,
        "orig_flags": _flags(tcp, "tcp_flags_ts"),
        "resp_flags": _flags(tcp, "tcp_flags_tc"),
    }


def _batch(rows: list[dict[str, Any]], origin: list[str]) -> FlowBatch:
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    return FlowBatch.from_columns(cols, SOURCE, n=len(rows), origin=origin)


def read_lines(
    lines: Iterable[bytes], stats: ReadStats, where: str = "", batch_size: int = 4096
) -> Iterator[FlowBatch]:
    """Parse eve JSON lines; yield batches of flow records. Never raises on bad input."""
    rows: list[dict[str, Any]] = []
    origin: list[str] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        loc = f"{where}:{lineno}"
        try:
            ev = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            stats.read += 1
            stats.skip("bad-json", where=loc, detail=str(e))
            continue
        if not isinstance(ev, dict):
            stats.read += 1
            stats.skip("not-object", where=loc)
            continue
        et = ev.get("event_type")
        if et != "flow":
            stats.ignored[f"event:{et}"] += 1
            continue
        stats.read += 1
        try:
            rec = _record(ev)
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            stats.skip("bad-flow", where=loc, detail=str(e))
            continue
        rows.append(rec)
        origin.append(loc)
        if len(rows) >= batch_size:
            stats.emitted += len(rows)
            yield _batch(rows, origin)
            rows, origin = [], []
    if rows:
        stats.emitted += len(rows)
        yield _batch(rows, origin)


def read_path(path: str | os.PathLike[str], stats: ReadStats, batch_size: int = 4096) -> Iterator[FlowBatch]:
    """Read a plain or gzip (detected by magic bytes) eve.json file."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    opener: Any = gzip.open if magic == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        yield from read_lines(f, stats, where=str(path), batch_size=batch_size)
