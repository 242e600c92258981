"""The orjson column path for ``BNN::Flow`` records: :func:`decode_flows`.

Takes a whole event's records, parsed by orjson, transposes them into columns with C-level
``map``/``itemgetter``, checks each column at once (tag sets, value types, ranges) and converts
through small caches. Gives exactly what :func:`sidecar.sources.broker_flow_ref.decode_flow`
gives per record, or None when anything is unexpected (the caller then decodes record by record).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import chain, compress
from operator import itemgetter
from typing import Any

import numpy as np

from sidecar.sources.broker_flow_ref import (
    _ADDRS,
    _PORTS,
    COLUMNS,
    CONN_ID,
    FLOW_LAYOUT,
    BadRecord,
    _address,
    _port,
    _timestamp,
)
from sidecar.sources.zeek_tsv import MAX_COUNT, MAX_DURATION, flags_from_history

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

