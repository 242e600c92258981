"""Verdicts to Zeek as ``BNN::verdict`` events over its WebSocket API.

Each verdict becomes one event, typed exactly as ``zeek-scripts/scripts/main.zeek``
declares it (:data:`VERDICT_SIGNATURE`; a test checks the two agree)::

    global verdict: event(uid: string, id: conn_id, score: double, cls: string,
                          stage: count, model: string);

``conn_id`` is sent with six fields ``[orig_h, orig_p, resp_h, resp_p, proto, ctx]``:
Zeek's Broker-data-to-record conversion (``src/broker/Data.cc``) needs at least
``NumFields`` elements, takes them in order, ignores the rest and leaves ``none`` fields
unset, so Zeek 6.0/7.0 (4 fields), 7.1 (+ ``proto`` count) and 8.x/9.x (+ ``ctx`` record,
sent as ``none`` so its default applies) should all accept the same message (read from
Zeek's source; not run against a real Zeek here).

A background thread owns the connection (publish-only handshake ``[]``, ack checked),
sends queued events and reconnects with capped exponential backoff and jitter.
``write()`` never blocks on the network: it appends to a bounded queue
(``max_pending``; on overflow the oldest events are dropped, counted and logged).
Delivery is at-least-once: the protocol has no acknowledgements, so events sent in the
last ``replay_s`` seconds before a lost connection are sent again after the reconnect
(duplicates are harmless on the Zeek side: notices are suppressed per identifier).
A connection that dies silently (no FIN/RST) is only noticed by the WebSocket ping
timeout (``websockets`` default 20 s + 20 s); events sent before the replay window of
such a connection can be lost.
Protocol ``error`` messages from the server (e.g. ``failed to create Zeek event``) are
counted in ``errors`` and logged.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import numpy as np
import orjson

from sidecar.errors import ProtocolError, TransportError
from sidecar.sources.broker_codec import Error, decode_message
from sidecar.transports.ws_client import Backoff, BrokerClient, ConnectionLost, Rejected
from sidecar.verdict import VerdictBatch

log = logging.getLogger(__name__)

VERDICT_EVENT = "BNN::verdict"
#: (argument name, Zeek type) of ``BNN::verdict`` as main.zeek declares it.
VERDICT_SIGNATURE: tuple[tuple[str, str], ...] = (
    ("uid", "string"),
    ("id", "conn_id"),
    ("score", "double"),
    ("cls", "string"),
    ("stage", "count"),
    ("model", "string"),
)
_PORT_PROTO = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmp6": "icmp", "ipv6-icmp": "icmp"}
_IP_PROTO = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58, "ipv6-icmp": 58}


def _v(tag: str, data: Any) -> dict[str, Any]:
    return {"@data-type": tag, "data": data}


_NONE = _v("none", {})


@lru_cache(maxsize=1 << 16)
def _address(s: str) -> str:
    return str(ipaddress.ip_address(s))


def verdict_events(verdicts: VerdictBatch, topic: str, only_malicious: bool = True) -> Iterator[str | None]:
    """One JSON data-message per (selected) verdict, byte-identical to what
    ``broker_codec.encode_event`` builds (a test checks); None for a verdict that cannot be
    sent (no valid address)."""
    f = verdicts.flows
    idx = np.flatnonzero(verdicts.malicious) if only_malicious else np.arange(len(verdicts))
    uid, proto = f["uid"][idx].tolist(), f["proto"][idx].tolist()
    oh, rh = f["orig_h"][idx].tolist(), f["resp_h"][idx].tolist()
    op, rp = f["orig_p"][idx].tolist(), f["resp_p"][idx].tolist()
    score, cls = verdicts.score[idx].tolist(), verdicts.cls[idx].tolist()
    stage = verdicts.stage[idx].tolist()
    model = _v("string", str(verdicts.model or ""))
    head = [_v("count", 1), _v("count", 1)]
    name = _v("string", VERDICT_EVENT)
    for i in range(len(idx)):
        p = str(proto[i] or "").lower()
        pp = _PORT_PROTO.get(p, "?")
        try:
            orig, resp = _address(oh[i]), _address(rh[i])
        except (ValueError, TypeError):
            yield None
            continue
        conn_id = _v("vector", [
            _v("address", orig), _v("port", f"{max(op[i], 0)}/{pp}"),
            _v("address", resp), _v("port", f"{max(rp[i], 0)}/{pp}"),
            _v("count", _IP_PROTO[p]) if p in _IP_PROTO else _NONE, _NONE,
        ])
        sc = float(score[i])
        args = [_v("string", str(uid[i] or "")), conn_id, _v("real", sc if sc == sc else -1.0),
                _v("string", str(cls[i])), _v("count", max(int(stage[i]), 0)), model]
        # str, not bytes: websockets sends bytes as a binary frame, and Zeek takes only text frames
        yield orjson.dumps({"type": "data-message", "topic": topic, "@data-type": "vector",
                            "data": [*head, _v("vector", [name, _v("vector", args)])]}).decode()


class BrokerWsSink:
    """Publish verdicts as ``BNN::verdict`` events; see the module docstring."""

    name = "broker_ws"

    def __init__(
        self,
        url: str,
        topic: str = "zeek/bnn/verdicts",
        ca_file: str | None = None,
        reconnect_max_s: float = 30.0,
        max_pending: int = 100_000,
        only_malicious: bool = True,
        ack_timeout_s: float = 5.0,
        reconnect_min_s: float = 0.1,
        replay_s: float = 2.0,
        flush_timeout_s: float = 2.0,
        app_name: str = "bnn-sidecar",
    ) -> None:
        self.topic = topic
        self.only_malicious = only_malicious
        self.client = BrokerClient(url, [], ca_file, ack_timeout_s, app_name=app_name)
        self.url = self.client.endpoint.url
        self.max_pending = max(1, int(max_pending))
        self.replay_s = replay_s
        self.flush_timeout_s = flush_timeout_s
        self.backoff = Backoff(reconnect_min_s, reconnect_max_s)
        #: counters: events queued / sent (incl. re-sends) / re-sent / dropped on overflow /
        #: not sendable (bad address); server error codes
        self.queued = self.sent = self.replayed = self.dropped = self.unsendable = 0
        self.connects = self.connect_failures = 0
        self.errors: Counter[str] = Counter()
        self._pending: deque[str] = deque()
        self._inflight: deque[tuple[float, str]] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._busy = False
        self._since = 0.0
        self._thread = threading.Thread(target=self._run, name="bnn-broker-ws-sink", daemon=True)
        self._thread.start()

    # -- Sink protocol -----------------------------------------------------------------
    def write(self, verdicts: VerdictBatch) -> None:
        msgs = list(verdict_events(verdicts, self.topic, self.only_malicious))
        bad = sum(1 for m in msgs if m is None)
        if bad:
            self.unsendable += bad
            log.warning("%d verdict(s) have no valid address and cannot be sent to Zeek", bad)
        with self._cond:
            for m in msgs:
                if m is not None:
                    self._pending.append(m)
                    self.queued += 1
            over = len(self._pending) - self.max_pending
            if over > 0:
                for _ in range(over):
                    self._pending.popleft()
                if self.dropped == 0 or (self.dropped + over) // 10_000 != self.dropped // 10_000:
                    log.warning("Broker WebSocket sink %s: queue full (%d), dropped %d oldest verdicts "
                                "(%d so far)", self.url, self.max_pending, over, self.dropped + over)
                self.dropped += over
            self._cond.notify_all()

    def flush(self) -> None:
        """Wait (at most ``flush_timeout_s``) until the queue is sent, if connected."""
        deadline = time.monotonic() + self.flush_timeout_s
        with self._cond:
            while (self._pending or self._busy) and self.client.connected and not self._stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))

    def reopen(self) -> None:
        """Nothing to reopen (no files)."""

    def close(self) -> None:
        self.flush()
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self.client.abort()
        self._thread.join(timeout=3.0)
        self.client.close()
        if self._pending:
            log.warning("Broker WebSocket sink %s closed with %d unsent verdicts", self.url, len(self._pending))

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -- sender thread -----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.client.connected and not self._connect():
                self._stop.wait(self.backoff.next())
                continue
            try:
                self._drain_incoming()
                with self._cond:
                    if not self._pending:
                        self._cond.wait(0.1)
                    batch = [self._pending[i] for i in range(min(256, len(self._pending)))]
                    self._busy = bool(batch)
                self._send(batch)
            except ConnectionLost as exc:
                self._lost(exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _connect(self) -> bool:
        try:
            self.client.connect(self._stop)
        except Rejected as exc:
            self.connect_failures += 1
            self.errors[exc.error.code] += 1
            log.warning("Broker WebSocket sink %s: %s", self.url, exc)
            return False
        except TransportError as exc:
            self.connect_failures += 1
            if not self._stop.is_set():
                log.warning("Broker WebSocket sink %s: %s", self.url, exc)
            return False
        self.connects += 1
        self._since = time.monotonic()
        log.info("Broker WebSocket sink connected to %s", self.url)
        return True

    def _send(self, batch: list[str]) -> None:
        for msg in batch:
            self.client.send(msg)
            now = time.monotonic()
            with self._cond:
                if self._pending and self._pending[0] is msg:
                    self._pending.popleft()
                self._inflight.append((now, msg))
                while self._inflight and self._inflight[0][0] < now - self.replay_s:
                    self._inflight.popleft()
                self.sent += 1

    def _drain_incoming(self) -> None:
        """Read what the server sent us (errors for bad events); never blocks."""
        while True:
            raw = self.client.recv(0)
            if raw is None:
                return
            try:
                msg = decode_message(raw)
            except ProtocolError as exc:
                log.warning("Broker WebSocket sink %s: unreadable message from server: %s", self.url, exc)
                continue
            if isinstance(msg, Error):
                self.errors[msg.code] += 1
                if sum(self.errors.values()) <= 50:
                    log.warning("Broker WebSocket sink %s: server error %s: %s", self.url, msg.code, msg.context)

    def _lost(self, exc: ConnectionLost) -> None:
        self.client.close()
        now = time.monotonic()
        self.backoff.session_ended(now - self._since)
        with self._cond:
            again = [m for t, m in self._inflight if t >= now - self.replay_s]
            self._inflight.clear()
            self._pending.extendleft(reversed(again))
            self.replayed += len(again)
            over = len(self._pending) - self.max_pending
            for _ in range(max(0, over)):
                self._pending.pop()
            self.dropped += max(0, over)
        if not self._stop.is_set():
            log.warning("Broker WebSocket sink %s: %s; %d verdict(s) queued for re-send", self.url, exc, len(again))
            self._stop.wait(self.backoff.next())
