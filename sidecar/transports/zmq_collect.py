"""The collector: PULL verdicts from workers, reassemble, de-duplicate, yield, ack to ship.

A batch ``(stream, seq)`` is yielded once all its rows arrived and at most once
(see ``docs/ZMQ.md``). It is acked to ship on the PUB socket ``acks`` when it is
*handled*:

* with the service's token protocol (``take_token()`` right after each item, then
  ``commit(token)`` once every sink wrote it, from the scoring thread), at ``commit``;
* otherwise when the consumer asks for the next batch (a plain ``for`` loop).

Copies of a batch that is yielded but not yet handled are dropped (not acked: the
handling acks it); copies of a handled batch are acked again and dropped. The PUB
socket is only used by one thread at a time (commits are queued for the iterating
thread; after iteration ended, ``commit`` sends itself, under a lock).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import zmq

from sidecar.errors import ConfigError, ProtocolError
from sidecar.sources.base import ReadStats
from sidecar.transports import zmq_wire as wire
from sidecar.transports.zmq_common import POLL_MS, Curve, ZSock
from sidecar.verdict import VerdictBatch

log = logging.getLogger(__name__)
Key = tuple[str, int]
#: incomplete batches (some rows arrived) kept at once; legitimately about 2 per worker
MAX_PENDING = 256


class _Seen:
    """Completed sequence numbers of one stream: all ``< low`` plus the set ``above``."""

    __slots__ = ("above", "low")

    def __init__(self) -> None:
        self.low = 0
        self.above: set[int] = set()

    def __contains__(self, seq: int) -> bool:
        return seq < self.low or seq in self.above

    def add(self, seq: int, window: int) -> None:
        if seq < self.low:
            return
        self.above.add(seq)
        while self.low in self.above:
            self.above.discard(self.low)
            self.low += 1
        if len(self.above) > window:  # only with a sender window larger than ours: prefer dup over loss
            log.warning("dedup window %d exceeded; forgetting the oldest completed batch", window)
            self.above.discard(min(self.above))


@dataclass
class _Pending:
    total: int
    have: np.ndarray
    parts: list[wire.VerdictPart] = field(default_factory=list)


class ZmqVerdictSource:
    """Collector side: PULL verdicts (binds by default), yield ``VerdictBatch``, ack on ``acks`` (PUB, binds).

    ``dedup_window``: completed batches remembered per stream above the lowest
    incomplete one (keep it >= ship's ``--window``); ``max_streams`` streams (LRU);
    ``inflight_timeout``: a yielded batch not handled within this many seconds is
    forgotten, so a later copy is yielded again (a duplicate rather than a loss).
    """

    def __init__(self, endpoint: str, bind: bool = True, acks: str = "", hwm: int = 64,
                 dedup_window: int = 65536, max_streams: int = 4096, inflight_timeout: float = 300.0,
                 curve_secret: str = "", curve_server: str = "", curve_clients: str = "") -> None:
        if dedup_window < 1 or max_streams < 1 or inflight_timeout <= 0:
            raise ConfigError("dedup_window and max_streams must be >= 1, inflight_timeout > 0")
        curve = Curve(curve_secret, curve_server, curve_clients)
        self.stats = ReadStats()
        self.duplicates = 0
        self.batches = 0
        self.rejected_batches = 0
        self.dedup_window = dedup_window
        self.max_streams = max_streams
        self.inflight_timeout = inflight_timeout
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._pending: dict[Key, _Pending] = {}
        self._inflight: dict[Key, float] = {}  # yielded, not yet handled -> when yielded
        self._commits: deque[Key] = deque()
        self._lock = threading.Lock()
        self._last: Key | None = None
        self._taken = False
        self._finished = False
        self._stop = threading.Event()
        self._iterating = False
        self._pull = ZSock(zmq.PULL, endpoint, bind=bind, hwm=hwm, curve=curve, linger_ms=0)
        self._pub: ZSock | None = None
        if acks:
            try:
                self._pub = ZSock(zmq.PUB, acks, bind=True, hwm=100_000, curve=curve, linger_ms=500)
            except Exception:
                self._pull.close()
                raise

    # -- the service's token protocol
    def take_token(self) -> Key | None:
        """Token of the batch just yielded; pass it to :meth:`commit` once the sinks wrote it."""
        self._taken = True
        return self._last

    def commit(self, token: Key | None) -> None:
        if token is None:
            return
        with self._lock:
            if not self._finished:
                self._commits.append(token)
                return
            self._complete(token)
            if not self._inflight:
                self._close_pub()

    # -- bookkeeping (iterating thread, or any thread once iteration finished; under _lock)
    def _complete(self, key: Key) -> None:
        if self._inflight.pop(key, None) is None:
            return
        self.batches += 1
        self._done(key, "ok", None)

    def _done(self, key: Key, status: str, reason: str | None) -> None:
        stream, seq = key
        s = self._seen.get(stream)
        if s is None:
            s = self._seen[stream] = _Seen()
            if len(self._seen) > self.max_streams:
                old, _ = self._seen.popitem(last=False)
                log.warning("more than %d streams; forgetting stream %s", self.max_streams, old)
        else:
            self._seen.move_to_end(stream)
        s.add(seq, self.dedup_window)
        self._ack(key, status, reason)

    def _is_done(self, key: Key) -> bool:
        s = self._seen.get(key[0])
        return s is not None and key[1] in s

    def _ack(self, key: Key, status: str, reason: str | None) -> None:
        if self._pub is None:
            return
        # PUB never blocks; a dropped ack only causes a resend (deduplicated here)
        with contextlib.suppress(zmq.Again, zmq.ZMQError):
            self._pub.sock.send_multipart(
                [key[0].encode() + b"\0", wire.encode_acks(key[0], [(key[1], status, reason)])], zmq.NOBLOCK)

    def _housekeeping(self) -> None:
        with self._lock:
            while self._commits:
                self._complete(self._commits.popleft())
            if self._inflight:
                now = time.monotonic()
                for key, t in list(self._inflight.items()):
                    if now - t > self.inflight_timeout:
                        log.warning("batch %s#%d was never handled; a copy will be yielded again", *key)
                        del self._inflight[key]

    # -- iteration
    def __iter__(self) -> Iterator[VerdictBatch]:
        self._iterating = True
        try:
            while not self._stop.is_set():
                self._housekeeping()
                if not self._pull.sock.poll(20 if self._inflight else POLL_MS, zmq.POLLIN):
                    continue
                got = self._handle(self._pull.sock.recv(copy=True))
                if got is None:
                    continue
                vb, key = got
                self._inflight[key] = time.monotonic()
                self._last, self._taken = key, False
                self.stats.emitted += len(vb)
                yield vb
                if not self._taken:  # a plain loop: asking for the next batch means this one is handled
                    with self._lock:
                        self._complete(key)
        finally:
            self._iterating = False
            with self._lock:
                while self._commits:
                    self._complete(self._commits.popleft())
                self._finished = True
                self._pull.close()
                if not self._inflight:
                    self._close_pub()

    def _duplicate(self, key: Key, status: str, reason: str | None) -> bool:
        """A batch already in flight or done: count it; re-ack a done one (its ack may have been lost)."""
        if key in self._inflight:
            self.duplicates += 1
            return True
        if self._is_done(key):
            self.duplicates += 1
            with self._lock:
                self._ack(key, status, reason)
            return True
        return False

    def _handle(self, data: bytes) -> tuple[VerdictBatch, Key] | None:
        try:
            h, obj = wire.unpack(data)
            key = (h.stream, h.seq)
            if h.kind == "reject":
                reason, detail = wire.decode_reject(h, obj)
                if self._duplicate(key, "rejected", reason):
                    return None
                self._pending.pop(key, None)
                self.stats.read += h.n
                self.stats.skip(f"rejected:{reason}", where=f"{h.stream}#{h.seq}", detail=detail)
                self.stats.skipped[f"rejected:{reason}"] += max(h.n - 1, 0)
                self.rejected_batches += 1
                with self._lock:
                    self._done(key, "rejected", reason)
                return None
            part = wire.decode_verdicts(h, obj)
        except ProtocolError as exc:
            self.stats.skip("bad-message", where=self._pull.endpoint, detail=str(exc))
            return None
        if self._duplicate(key, "ok", None):
            return None
        pend = self._pending.get(key)
        if pend is None or pend.total != part.total:
            pend = self._pending[key] = _Pending(part.total, np.zeros(part.total, dtype=bool))
        new = ~pend.have[part.rows]
        if not new.all():
            part = wire.VerdictPart(h, part.verdicts.take(new), part.rows[new], part.total)
        pend.have[part.rows] = True
        pend.parts.append(part)
        if len(self._pending) > MAX_PENDING:  # bounded memory even against a hostile peer
            log.warning("more than %d incomplete batches; dropping the oldest (ship will resend it)", MAX_PENDING)
            self._pending.pop(next(iter(self._pending)))
        if not pend.have.all():
            return None
        del self._pending[key]
        self.stats.read += pend.total
        if len(pend.parts) == 1 and np.array_equal(pend.parts[0].rows, np.arange(pend.total)):
            return pend.parts[0].verdicts, key
        vb = VerdictBatch.concat([p.verdicts for p in pend.parts])
        order = np.argsort(np.concatenate([p.rows for p in pend.parts]), kind="stable")
        return vb.take(order), key

    def _close_pub(self) -> None:
        if self._pub is not None:
            self._pub.close()
            self._pub = None

    def close(self) -> None:
        """Stop iteration (from any thread, ends within ~0.2 s). Once iteration has ended, the ack
        socket stays open until the last yielded batch is committed or ``close`` is called again."""
        self._stop.set()
        with self._lock:
            if not self._iterating:
                self._finished = True
                self._pull.close()
                self._close_pub()
