"""The flood rule beside the BNN: how many records one key produced in the last second or two.

A flow model sees one flow. An HTTP flood is thousands of ordinary GETs, slowloris is many idle
clients, and the IoT-23 Mirai "DDoS" records are content-gap records with no packet counted:
each flow alone looks benign or empty, the attack is their number. :class:`RateCounter` counts,
for every record, the records of the same key — ``(orig_h, resp_h, resp_p, proto)``, one client
hammering one service — whose end time (``ts + duration``) falls in the record's time bucket or
the one before it (buckets of ``window_s`` seconds; so the count covers between one and two
windows). A record counts the records that arrived before it and itself, so the counts do not
depend on how the stream is cut into batches (exact for records in time order; tested against a
per-record reference on a real log). The scorer flags a record the model calls benign whose count
reaches the rule's threshold (``STAGE_RATE``, class ``dos``), and re-classes a model ``scan`` verdict
at that count as ``dos`` (a scan spreads over ports and hosts; a flood hits one service).

Memory is fixed: a hash table of :data:`SLOTS` slots (one count-min row), each slot holding its
latest bucket, the count of that bucket and of the one before. A collision can only add to a
count, never hide a flood (a key shares its slot with a given flooding key with probability
1/SLOTS). There is no global clock: a record with a bogus future time moves only its own slot.
A record one bucket older than its slot's state joins the slot's previous bucket; an older one
counts only itself. Records without a time (``ts`` missing) are not counted (count 0, never
flagged by the rule) and are tallied in :attr:`RateCounter.untimed`.

The key hash is computed from the address text with numpy, so it is the same in every process
(Python's ``hash`` of a str is salted per process and would make verdicts differ between runs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Any, ClassVar

import numpy as np

from sidecar.flow import FlowBatch
from sidecar.memo import look_up_packed

#: slots of the hash table (an int64 stamp and two int32 counts each: 4 MB)
SLOTS = 1 << 18
_CAP = np.iinfo(np.int32).max
_PROTO = {"tcp": 1, "udp": 2, "icmp": 3, "icmp6": 4}
_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class CountRule:
    """A count rule beside the model: its threshold (0 = off) and time bucket, checked. ``NAME`` is
    the prefix of its config keys (``<NAME>_threshold``, ``<NAME>_window_s``) in error messages."""

    threshold: int
    window_s: float
    NAME: ClassVar[str] = "count"
    MAX_WINDOW_S: ClassVar[float] = 3600.0

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise ValueError(f"{self.NAME}_threshold must be >= 0 (0 = off), got {self.threshold}")
        if not 0 < self.window_s <= self.MAX_WINDOW_S:
            raise ValueError(f"{self.NAME}_window_s must be in (0, {self.MAX_WINDOW_S:g}], got {self.window_s}")

    @property
    def enabled(self) -> bool:
        return self.threshold > 0


@dataclass(frozen=True)
class RateRule(CountRule):
    """Flag a record when its key had at least ``threshold`` records in its window (0 = off).

    ``ignore``: client networks (CIDR text) the rule never flags — the site's proxies, NAT
    gateways, load balancers and monitoring hosts, which open many connections to one service
    by design. Their records are still counted (and the model still scores them)."""

    threshold: int = 50
    window_s: float = 1.0
    ignore: tuple[str, ...] = ()
    NAME: ClassVar[str] = "rate"


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (wrapping uint64 arithmetic)."""
    h = (h ^ (h >> np.uint64(30))) * _M2
    h = (h ^ (h >> np.uint64(27))) * _M3
    out: np.ndarray = h ^ (h >> np.uint64(31))
    return out


#: one fixed odd multiplier per character position (splitmix64 of 1..64; texts longer than 64 are cut)
_WEIGHTS = _mix(np.arange(1, 65, dtype=np.uint64) * _M1) | np.uint64(1)


def _text_hash(col: np.ndarray) -> np.ndarray:
    """A uint64 hash of each string of an object column, the same in every process (None hashes
    as the text ``"None"``; texts are compared on their first 64 characters)."""
    n = len(col)
    if n == 0:
        return np.zeros(0, np.uint64)
    try:
        u = np.asarray(col, dtype=np.str_)
    except (TypeError, ValueError):  # not text: fall back to the repr
        u = np.asarray([str(x) for x in col], dtype=np.str_)
    width = min(u.dtype.itemsize // 4, len(_WEIGHTS))
    if width == 0:
        return np.zeros(n, np.uint64)
    codes = u.view(np.uint32).reshape(n, -1)[:, :width].astype(np.uint64)
    h: np.ndarray = (codes * _WEIGHTS[:width]).sum(axis=1, dtype=np.uint64)  # wraps mod 2**64
    return _mix(h)


#: text -> its :func:`_text_hash` as 8 native-order bytes, for the addresses seen lately (a network has
#: far fewer addresses than flows); cleared when full, so memory stays bounded
_CACHE: dict[object, bytes] = {}
_CACHE_MAX = 1 << 14
#: :data:`_PROTO` as 8 native-order bytes (a uint64 each)
_PROTO_BYTES = {k: np.uint64(v).tobytes() for k, v in _PROTO.items()}


def _look_up(vals: list[Any], table: Mapping[Any, bytes]) -> np.ndarray:
    """uint64 values of ``vals`` from ``table`` (:func:`sidecar.memo.look_up_packed`; the per-record
    look-ups are most of what the key hash costs)."""
    return look_up_packed(vals, table, np.uint64)


def _cached_text_hash(*cols: np.ndarray) -> np.ndarray:
    """:func:`_text_hash` through :data:`_CACHE`, of the columns one after the other: one dict lookup per
    record once an address is known."""
    vals = cols[0].tolist()
    for col in cols[1:]:
        vals += col.tolist()
    try:
        return _look_up(vals, _CACHE)
    except KeyError:
        pass
    except TypeError:  # an unhashable value (not a reader's output): no cache for this batch
        return np.concatenate([_text_hash(col) for col in cols])
    new = [v for v in dict.fromkeys(vals) if v not in _CACHE]
    if len(_CACHE) + len(new) > _CACHE_MAX:
        _CACHE.clear()
    if new:
        raw = _text_hash(np.asarray(new, dtype=object)).tobytes()
        _CACHE.update(zip(new, (raw[i : i + 8] for i in range(0, len(raw), 8)), strict=True))
    try:
        return _look_up(vals, _CACHE)
    except (KeyError, TypeError):  # more distinct texts than the cache holds, or unhashable values
        return np.concatenate([_text_hash(col) for col in cols])


def key_hash(batch: FlowBatch) -> np.ndarray:
    """uint64 hash of ``(orig_h, resp_h, resp_p, proto)`` for every record."""
    n = len(batch)
    if n == 0:
        return np.zeros(0, np.uint64)
    protos = batch["proto"].tolist()
    try:
        proto = _look_up(protos, _PROTO_BYTES)
    except (KeyError, TypeError):  # a protocol without a code (0), or not a reader's output
        proto = np.fromiter(map(_PROTO.get, protos, repeat(0, n)), dtype=np.uint64, count=n)
    port = batch["resp_p"].astype(np.int64).astype(np.uint64)
    both = _cached_text_hash(batch["orig_h"], batch["resp_h"])
    h = _mix(both[:n] * _M1 ^ both[n:])
    return _mix(h ^ (port << np.uint64(8)) ^ proto)


def end_times(batch: FlowBatch) -> np.ndarray:
    """Each record's end time ``ts + duration`` (duration missing or negative: ``ts``); NaN if untimed."""
    dur = np.asarray(batch["duration"], dtype=np.float64)
    out: np.ndarray = np.asarray(batch["ts"], dtype=np.float64) + np.where(np.isfinite(dur) & (dur > 0), dur, 0.0)
    return out


class RateCounter:
    """Per-key record counts over a sliding pair of time buckets (see the module docstring)."""

    def __init__(self, window_s: float = 1.0, slots: int = SLOTS) -> None:
        if not window_s > 0:
            raise ValueError(f"rate window must be > 0 s, got {window_s}")
        if slots < 2 or slots & (slots - 1):
            raise ValueError(f"slots must be a power of two >= 2, got {slots}")
        self.window_s = float(window_s)
        self._shift = np.uint64(64 - slots.bit_length() + 1)
        self._stamp = np.full(slots, np.iinfo(np.int64).min // 2, dtype=np.int64)
        self._cur = np.zeros(slots, dtype=np.int32)
        self._prev = np.zeros(slots, dtype=np.int32)
        self.untimed = 0

    def update(self, batch: FlowBatch) -> np.ndarray:
        """Add the batch's records; return each record's key count (int32, 0 where untimed)."""
        return self.count(end_times(batch), key_hash(batch))

    def count(self, t: np.ndarray, h: np.ndarray) -> np.ndarray:
        """Add records given by their end time ``t`` (:func:`end_times`; NaN = untimed, not counted)
        and key hash ``h`` (:func:`key_hash`), in arrival order; each record's key count (int32)."""
        n = len(t)
        if n == 0:
            return np.zeros(0, dtype=np.int32)
        ok = np.flatnonzero(np.isfinite(t))
        self.untimed += n - len(ok)
        if len(ok) == n:  # every record timed (the usual case)
            return self._timed(t, h)
        out = np.zeros(n, dtype=np.int32)
        if len(ok):
            out[ok] = self._timed(t[ok], h[ok])
        return out

    def _timed(self, t: np.ndarray, h: np.ndarray) -> np.ndarray:
        """:meth:`count` of records that all have a time."""
        # t is finite: min(max()) is np.clip's answer without its Python-level wrapper
        b = np.floor(np.minimum(np.maximum(t / self.window_s, -(2.0**50)), 2.0**50)).astype(np.int64)
        return self._add((h >> self._shift).astype(np.intp), b)

    def _add(self, idx: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Count records (slot ``idx``, bucket ``b``) into the table; each record's count.

        Vectorised over (slot, bucket) pairs: a pair's count is its records in bucket ``B`` and
        ``B - 1``, from this batch and from the slot's state (the slot's latest bucket and the one
        before it; anything older is forgotten)."""
        stamp, cur, prev = self._stamp, self._cur, self._prev
        b0 = int(b.min())
        span = b - b0
        if int(span.max()) >= 1 << 40:  # absurd time spread inside one batch: clamp (counts stay >= 1)
            span = np.minimum(span, (1 << 40) - 1)
        comp = (idx.astype(np.int64) << 40) | span
        order = np.argsort(comp, kind="stable")  # stable: arrival order within a (slot, bucket) pair
        sc = comp[order]
        brk = np.empty(len(sc), dtype=bool)
        brk[0] = True
        np.not_equal(sc[1:], sc[:-1], out=brk[1:])
        starts = np.flatnonzero(brk)
        pair = np.cumsum(brk) - 1  # pair of each sorted record
        rank = np.arange(1, len(sc) + 1) - starts[pair]  # 1 for a pair's first record in this batch
        u = sc[starts]
        p_slot, p_b = (u >> 40).astype(np.intp), (u & ((1 << 40) - 1)) + b0
        p_c = np.empty(len(starts), dtype=np.int64)  # records per pair (np.diff(append=) is slower)
        p_c[:-1] = starts[1:] - starts[:-1]
        p_c[-1] = len(sc) - starts[-1]
        slot_change = p_slot[1:] != p_slot[:-1]
        bc_prev = np.zeros_like(p_c)
        adj = np.flatnonzero(~slot_change & (p_b[:-1] == p_b[1:] - 1)) + 1  # the pair before is bucket B - 1
        bc_prev[adj] = p_c[adj - 1]
        st, scur, sprev = stamp[p_slot], cur[p_slot].astype(np.int64), prev[p_slot].astype(np.int64)

        def state_count(x: np.ndarray) -> np.ndarray:
            got: np.ndarray = np.where(x == st, scur, np.where(x == st - 1, sprev, 0))
            return got

        cin_b = p_c + state_count(p_b)
        cin_bm1 = bc_prev + state_count(p_b - 1)
        # each record: what came before it (state, earlier records of its pair, bucket B - 1) and itself
        res = np.empty(len(sc), dtype=np.int64)
        res[order] = (cin_b - p_c + cin_bm1)[pair] + rank
        # new state from the latest pair of each slot
        is_last = np.empty(len(p_slot), dtype=bool)  # the last pair of each slot
        is_last[:-1] = slot_change
        is_last[-1] = True
        last = np.flatnonzero(is_last)
        ls, lb = p_slot[last], p_b[last]
        ahead = lb >= st[last]
        stamp[ls[ahead]] = lb[ahead]
        cur[ls[ahead]] = np.minimum(cin_b[last][ahead], _CAP)
        prev[ls[ahead]] = np.minimum(cin_bm1[last][ahead], _CAP)
        late1 = lb == st[last] - 1
        prev[ls[late1]] = np.minimum(sprev[last][late1] + p_c[last][late1], _CAP)
        out: np.ndarray = np.minimum(res, _CAP).astype(np.int32)
        return out
