"""Reader for Suricata EVE JSON ``flow`` events -> canonical :class:`FlowBatch`.

Only ``event_type: "flow"`` lines become records. Every other event type is counted
in ``stats.ignored`` as ``"event:<type>"``. ``netflow`` events are ignored on purpose:
they are one-directional (Suricata writes two per flow, one per direction), so a
single one is not a bidirectional flow record.

Byte conversion: eve ``bytes_toserver``/``bytes_toclient`` count WHOLE packets,
including the link-layer header. We assume Ethernet (14 bytes per packet):

* ``orig_ip_bytes = bytes_toserver - 14 * pkts_toserver``, clamped at
  ``>= H * pkts_toserver`` (a minimal IP header per packet: H = 20 for IPv4, 40 for IPv6,
  told apart by a colon in ``src_ip``); same for resp.
* ``orig_bytes`` (transport payload) is an ESTIMATE:
  ``ip_bytes - pkts * (H + transport header)`` with 20 for TCP (options, e.g. the
  usual 12-byte timestamp option, are unknown and not subtracted, so TCP payload is
  over-estimated by up to 12-40 bytes per packet), 8 for UDP, 8 for ICMP, 0 for other
  protocols; clamped at 0.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import orjson

from sidecar.flow import FlowBatch, ip_header_bytes
from sidecar.sources.amounts import check_amounts
from sidecar.sources.base import ReadStats
from sidecar.sources.bom import is_gzip, open_records
from sidecar.sources.eve_chunks import PAT, PAT_FLOW, coalesce, nonflow_key, read_chunked, value_columns
from sidecar.sources.eve_columns import (
    _DECODER,
    _EV_FIELDS,
    _FLOW_FIELDS,
    _MS_ERRORS,
    _PROTO,
    SOURCE,
    TRANSPORT_HDR,
    _flags,
    _ip_bytes,
    _num,
    _port,
    compute_columns,
)
from sidecar.sources.eve_time import _parse_ts_full, _ts_column, parse_ts  # noqa: F401 - re-exported

# --- rows of the line-by-line reader -------------------------------------------------
_EMPTY: dict[str, Any] = {}


def _dict_row(ev: dict[str, Any]) -> tuple[Any, ...] | None:
    """The row tuple of an orjson-parsed flow event; None when only _record can judge it."""
    flow = ev.get("flow")
    tcp = ev.get("tcp", _EMPTY)
    if type(flow) is not dict or type(tcp) is not dict:
        return None
    return (
        flow,
        *map(ev.get, _EV_FIELDS[1:-1]),
        tcp,
        *map(flow.get, _FLOW_FIELDS),
        tcp.get("tcp_flags_ts"),
        tcp.get("tcp_flags_tc"),
    )


try:
    from msgspec.structs import astuple as _astuple
except ImportError:  # pragma: no cover - then there are no structs to convert
    _astuple = None  # type: ignore[assignment]


def _struct_row(ev: Any) -> tuple[Any, ...]:
    """A msgspec struct's row tuple (``_dict_row`` order)."""
    return _astuple(ev) + _astuple(ev.flow) + _astuple(ev.tcp)


def _fast_columns(items: list[Any], raws: list[bytes], typed: bool) -> dict[str, Any]:
    """Columns of flow rows exactly as _record computes them; raises on anything unusual.

    ``items`` holds msgspec structs and/or :func:`_dict_row` tuples; ``typed``: all
    are structs, whose value types msgspec has already checked.
    """
    if typed:  # msgspec flow structs: the chunked reader's column pull (one C loop per struct)
        cols = value_columns(items)
        if cols is None:  # pragma: no cover - the line reader keeps only event_type "flow"
            raise TypeError("not a flow event")
        return compute_columns(cols, raws, typed)
    tuples = [x if type(x) is tuple else _struct_row(x) for x in items]
    (_, proto_raw, src, dst, _, fids, sport, dport, app, _,
     start, op_, rp_, ob_, rb_, end, state, reason, fts, ftc) = zip(*tuples, strict=True)  # fmt: skip
    return compute_columns(
        (proto_raw, src, dst, fids, sport, dport, app, start, op_, rp_, ob_, rb_, end, state, reason, fts, ftc),
        raws,
        typed,
    )


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
    src, dst = ev.get("src_ip"), ev.get("dest_ip")
    if not isinstance(src, str) or not isinstance(dst, str):
        raise TypeError("missing src_ip/dest_ip")
    ip_hdr = ip_header_bytes(src)
    oip = _ip_bytes(_num(flow.get("bytes_toserver")), op, ip_hdr)
    rip = _ip_bytes(_num(flow.get("bytes_toclient")), rp, ip_hdr)
    hdr = ip_hdr + TRANSPORT_HDR.get(proto, 0)
    app = ev.get("app_proto")
    service = app if isinstance(app, str) and app and app != "failed" else None
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


# --- columnar fast path -------------------------------------------------------------
# A batch of parsed flow events is converted column by column; any value the fast
# path does not handle exactly like _record (wrong types, odd timestamps, bad ports)
# makes it return None, and the batch is then converted row by row by _record, so
# output and skip accounting are the same either way.

#: ``YYYY-MM-DDTHH:MM:SS.ffffff+HHMM``: digit positions and separators
def _convert(
    items: list[Any],
    raws: list[bytes],
    nos: list[int],
    where: str,
    stats: ReadStats,
    typed: bool = False,
) -> FlowBatch | None:
    """One batch of flow lines → FlowBatch (None if every row was skipped).

    Columnar when every row has a tuple and every value is ordinary; otherwise the
    batch is re-parsed row by row with orjson and :func:`_record` (the reference).
    """
    return _convert_with(lambda: _fast_columns(items, raws, typed), raws, nos, where, stats, typed or None not in items)


def _convert_columns(
    raw_cols: list[list[Any]], raws: list[bytes], nos: list[int], where: str, stats: ReadStats
) -> FlowBatch | None:
    """Like :func:`_convert` for value columns already pulled off msgspec structs."""
    return _convert_with(lambda: compute_columns(raw_cols, raws, True), raws, nos, where, stats, True)


def _convert_with(
    columns: Callable[[], dict[str, Any]], raws: list[bytes], nos: list[int], where: str, stats: ReadStats, ok: bool
) -> FlowBatch | None:
    prefix = f"{where}:"
    n = len(raws)
    try:
        if not ok:
            raise TypeError("row needs the reference path")
        with np.errstate(invalid="ignore", over="ignore"):
            cols = columns()
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
        rows: list[dict[str, Any]] = []
        origin: list[str] = []
        for raw, no in zip(raws, nos, strict=True):
            try:
                rows.append(_record(orjson.loads(raw)))
            except (KeyError, TypeError, ValueError, OverflowError) as e:
                stats.skip("bad-flow", where=f"{prefix}{no}", detail=str(e))
                continue
            origin.append(f"{prefix}{no}")
        if not rows:
            return None
        b = check_amounts(_batch(rows, origin), stats, where)
    else:
        org = [f"{prefix}{no}" for no in nos]  # one allocation per row (measured faster than map)
        b = check_amounts(FlowBatch.from_columns(cols, SOURCE, n=n, origin=org), stats, where)
    stats.emitted += len(b)
    return b if len(b) else None


_PAT, _PAT_FLOW = PAT, PAT_FLOW  # shared with the chunked path


def read_lines(
    lines: Iterable[bytes],
    stats: ReadStats,
    where: str = "",
    batch_size: int = 4096,
    use_msgspec: bool = True,
) -> Iterator[FlowBatch]:
    """Parse eve JSON lines; yield batches of flow records. Never raises on bad input.

    With msgspec, lines are decoded many at a time (:mod:`sidecar.sources.eve_chunks`);
    a chunk that does not decode cleanly as one JSON object per line is read line by
    line by :func:`read_lines_one_by_one`, so every bad line is counted with its
    file and line number exactly as before. Output equals the orjson reference
    (tests/test_e2_chunks.py), with the exception noted under
    :func:`read_lines_one_by_one`.
    """
    if use_msgspec and _DECODER is not None:
        chunked = read_chunked(lines, stats, where, batch_size, read_lines_one_by_one, _convert_columns)
        yield from coalesce(chunked, batch_size)
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
    """The line-by-line reader (the reference when ``use_msgspec`` is False).

    Non-flow events are counted from their ``event_type`` without a full parse
    (see :func:`sidecar.sources.eve_chunks.nonflow_key`). Flow lines are decoded by msgspec into typed structs
    when it is installed (``use_msgspec``), else by orjson into dicts; a batch of
    them becomes columns at once (:func:`_fast_columns`), or row by row through
    :func:`_record` when anything is unusual. Both decoders give the same records
    (tests/bench/test_fastpaths.py checks it), with one known exception: msgspec
    does not evaluate numbers in fields the reader does not use, so a line whose
    unused field holds a number beyond float range (``1e400``) is read, where orjson
    rejects the whole line as ``bad-json``.
    """
    items: list[Any] = []  # msgspec structs, _dict_row tuples, or None (reference path)
    raws: list[bytes] = []
    nos: list[int] = []
    n_dict = 0  # rows from the orjson path in this batch (their values need type checks)
    ignored = stats.ignored
    keys: dict[bytes, str] = {}  # event type bytes -> "event:<type>"
    quick: Counter[str] = Counter()  # ignored events not yet added to stats.ignored
    loads = orjson.loads
    dec = _DECODER if use_msgspec else None
    pat, pat_flow, plen = _PAT, _PAT_FLOW, len(_PAT)
    for lineno, line in enumerate(lines, first_line):
        i = line.find(pat)
        if i >= 0:
            i += plen
            if line[i : i + 5] != pat_flow:
                key = nonflow_key(line, i, keys)
                if key is not None:
                    quick[key] += 1
                    continue
            elif dec is not None and line.isascii():  # non-ASCII: orjson checks the UTF-8
                try:
                    t = dec(line)
                except _MS_ERRORS:
                    pass  # not a flow event msgspec can map: the orjson path decides
                else:
                    if t.event_type == "flow":
                        items.append(t)
                        raws.append(line)
                        nos.append(lineno)
                        if len(items) >= batch_size:
                            stats.read += len(items)
                            ignored.update(quick)
                            quick.clear()
                            fb = _convert(items, raws, nos, where, stats, n_dict == 0)
                            items, raws, nos, n_dict = [], [], [], 0
                            if fb is not None:
                                yield fb
                        continue
        elif not line.strip():
            ignored["blank"] += 1  # not a record, counted like the Zeek readers do
            continue
        try:
            ev = loads(line)
        except orjson.JSONDecodeError as e:
            stats.read += 1
            stats.skip("bad-json", where=f"{where}:{lineno}", detail=str(e))
            continue
        if type(ev) is not dict:
            stats.read += 1
            stats.skip("not-object", where=f"{where}:{lineno}")
            continue
        et_full = ev.get("event_type")
        if et_full != "flow":
            ignored[f"event:{et_full}"] += 1
            continue
        items.append(_dict_row(ev))
        raws.append(line)
        nos.append(lineno)
        n_dict += 1
        if len(items) >= batch_size:
            stats.read += len(items)
            ignored.update(quick)
            quick.clear()
            fb = _convert(items, raws, nos, where, stats, False)
            items, raws, nos, n_dict = [], [], [], 0
            if fb is not None:
                yield fb
    ignored.update(quick)
    if items:
        stats.read += len(items)
        fb = _convert(items, raws, nos, where, stats, n_dict == 0)
        if fb is not None:
            yield fb


def read_path(path: str | os.PathLike[str], stats: ReadStats, batch_size: int = 4096) -> Iterator[FlowBatch]:
    """Read a plain or gzip (detected by magic bytes) eve.json file (after one leading UTF-8 BOM)."""
    with open_records(path) as f:
        if not is_gzip(f):
            yield from read_lines(f, stats, where=str(path), batch_size=batch_size)
        else:  # a gzip cut mid-stream raises at its end: count it, keep the lines before
            yield from read_lines(_gz_lines(f, stats, str(path)), stats, where=str(path), batch_size=batch_size)


def _gz_lines(f: Any, stats: ReadStats, where: str) -> Iterator[bytes]:
    """The lines of a gzip file; a damaged end is one counted ``truncated-input`` skip."""
    try:
        yield from f
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        stats.skip("truncated-input", where=where, detail=str(e))
