"""The sending end of the ZeroMQ pipeline: PUSH flow batches, track acks, resend.

:class:`Shipper` numbers batches ``0, 1, 2...`` within a fresh stream id, keeps every
unacked batch (at most ``window`` of them: when the window is full, :meth:`send`
blocks, which back-pressures the reader), resends a batch that was not acked within
``max(resend_after, 4 x smoothed ack round trip)`` seconds (so long worker queues do not
cause spurious resends), and accounts for every batch: ``sent = acked_ok +
rejected (by reason) + unacked``. Marks (e.g. follow checkpoints) are released by
:meth:`safe_mark` only once every batch sent before them is acked.

Without an ``acks`` endpoint it is plain fire-and-forget PUSH (no guarantee).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import zmq

from sidecar.errors import ConfigError, ProtocolError
from sidecar.flow import FlowBatch
from sidecar.transports import zmq_wire as wire
from sidecar.transports.zmq_common import POLL_MS, Curve, ZSock

log = logging.getLogger(__name__)


@dataclass
class ShipStats:
    batches_sent: int = 0
    records_sent: int = 0
    resent: int = 0
    acked_batches: int = 0
    scored_records: int = 0
    rejected_batches: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # reason -> records
    duplicate_acks: int = 0
    bad_acks: int = 0

    def as_dict(self, unacked: int, unacked_records: int) -> dict[str, Any]:
        return {"batches_sent": self.batches_sent, "records_sent": self.records_sent,
                "acked_batches": self.acked_batches, "scored_records": self.scored_records,
                "rejected_batches": self.rejected_batches, "rejected_records": dict(sorted(self.rejected.items())),
                "unacked_batches": unacked, "unacked_records": unacked_records, "resent": self.resent,
                "duplicate_acks": self.duplicate_acks, "bad_acks": self.bad_acks}


@dataclass
class _Inflight:
    data: bytes
    n: int
    sent_at: float
    tries: int = 1


class Shipper:
    def __init__(self, push: str, acks: str = "", bind: bool = True, hwm: int = 8, window: int = 64,
                 resend_after: float = 5.0, stream: str = "",
                 curve_secret: str = "", curve_server: str = "", curve_clients: str = "") -> None:
        if window < 1 or resend_after <= 0:
            raise ConfigError("window must be >= 1 and resend_after > 0")
        self.stream = stream or f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if "\0" in self.stream or len(self.stream) > wire.MAX_STREAM:
            raise ConfigError("stream id must have no NUL and at most 200 chars")
        self.window = window
        self.resend_after = resend_after
        self.stats = ShipStats()
        self._seq = 0
        self._rtt = 0.0  # smoothed send -> ack time of first tries (s)
        self._unacked: OrderedDict[int, _Inflight] = OrderedDict()
        self._marks: deque[tuple[int, Any]] = deque()
        self._stop = threading.Event()
        # the push side is the CURVE server (it binds); the ack side connects to the collector (curve_server)
        if not bind and curve_clients:
            raise ConfigError("CURVE client checks on ship's push socket need it to bind")
        self._push = ZSock(zmq.PUSH, push, bind=bind, hwm=hwm,
                           curve=Curve(curve_secret, "", curve_clients) if bind else None,
                           linger_ms=0 if acks else 5000)
        self._sub: ZSock | None = None
        if acks:
            try:
                self._sub = ZSock(zmq.SUB, acks, bind=False, hwm=100_000,
                                  curve=Curve(curve_secret, curve_server, ""), subscribe=self.stream.encode() + b"\0",
                                  linger_ms=0)
            except Exception:
                self._push.close(0)
                raise

    @property
    def tracking(self) -> bool:
        return self._sub is not None

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    @property
    def unacked_records(self) -> int:
        return sum(f.n for f in self._unacked.values())

    def summary(self) -> dict[str, Any]:
        return {"stream": self.stream, **self.stats.as_dict(self.unacked, self.unacked_records),
                "ack_rtt_s": round(self._rtt, 4)}

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Make a blocked :meth:`send` / :meth:`drain` return soon (thread-safe)."""
        self._stop.set()

    # -- acks and resends
    def pump(self, timeout_ms: int = 0) -> None:
        """Handle acks that arrived (waiting up to ``timeout_ms`` for the first) and resend overdue batches."""
        if self._sub is not None:
            sub = self._sub.sock
            if sub.poll(timeout_ms, zmq.POLLIN):
                while True:
                    try:
                        _topic, payload = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    except ValueError:  # not two frames
                        self.stats.bad_acks += 1
                        continue
                    self._on_ack(payload)
        elif timeout_ms:
            time.sleep(timeout_ms / 1000)
        self._resend()

    def _on_ack(self, payload: bytes) -> None:
        try:
            h, obj = wire.unpack(payload)
            acks = wire.decode_acks(h, obj)
        except ProtocolError as exc:
            self.stats.bad_acks += 1
            log.warning("bad ack message: %s", exc)
            return
        if h.stream != self.stream:
            self.stats.bad_acks += 1
            return
        now = time.monotonic()
        for seq, status, reason in acks:
            f = self._unacked.pop(seq, None)
            if f is None:
                self.stats.duplicate_acks += 1
                continue
            if f.tries == 1:  # unambiguous round trip: track it so queues longer than resend_after are not resent
                self._rtt = 0.8 * self._rtt + 0.2 * (now - f.sent_at) if self._rtt else now - f.sent_at
            if status == "ok":
                self.stats.acked_batches += 1
                self.stats.scored_records += f.n
            else:
                self.stats.rejected_batches += 1
                self.stats.rejected[reason or "unspecified"] += f.n

    def _resend(self) -> None:
        if not self._unacked:
            return
        now = time.monotonic()
        after = max(self.resend_after, 4 * self._rtt)
        for seq, f in self._unacked.items():
            if now - f.sent_at < after:
                continue
            try:
                self._push.sock.send(f.data, zmq.NOBLOCK)
            except zmq.Again:
                return  # every worker busy or none connected: try again later
            f.sent_at, f.tries = now, f.tries + 1
            self.stats.resent += 1
            log.info("resent %s#%d (try %d)", self.stream, seq, f.tries)

    # -- sending
    def send(self, batch: FlowBatch) -> bool:
        """Send one batch; blocks while the window is full or no worker takes it. False if stopped."""
        if len(batch) == 0:
            return True
        while self.tracking and len(self._unacked) >= self.window:
            if self._stop.is_set():
                return False
            self.pump(POLL_MS)
        seq = self._seq
        data = wire.encode_flows(batch, self.stream, seq)
        while True:
            if self._stop.is_set():
                return False
            try:
                self._push.sock.send(data, zmq.NOBLOCK)
                break
            except zmq.Again:  # back-pressure: every worker's queue is full (or none is connected)
                self._push.sock.poll(POLL_MS if self._sub is None else 20, zmq.POLLOUT)
                self.pump(0)
        self._seq += 1
        self.stats.batches_sent += 1
        self.stats.records_sent += len(batch)
        if self.tracking:
            self._unacked[seq] = _Inflight(data, len(batch), time.monotonic())
            self.pump(0)
        return True

    def add_mark(self, mark: Any) -> None:
        """Attach ``mark`` to everything sent so far; see :meth:`safe_mark`."""
        if self._marks and self._marks[-1][0] == self._seq - 1:
            self._marks.pop()  # nothing sent since the previous mark: the newer one supersedes it
        self._marks.append((self._seq - 1, mark))

    def safe_mark(self) -> Any | None:
        """The newest mark all of whose batches are acked (or rejected), popping older ones; else None."""
        low = next(iter(self._unacked), None)  # seqs are inserted increasing, so the first is the lowest
        found = None
        while self._marks and (low is None or self._marks[0][0] < low):
            found = self._marks.popleft()[1]
        return found

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until every batch is acked; True if none is left."""
        deadline = time.monotonic() + timeout
        while self.tracking and self._unacked and not self._stop.is_set() and time.monotonic() < deadline:
            self.pump(POLL_MS)
        return not self._unacked

    def close(self) -> None:
        self._push.close()
        if self._sub is not None:
            self._sub.close()
            self._sub = None
