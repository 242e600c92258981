"""Live flows from Zeek over its WebSocket API (``ws://HOST:PORT/v1/messages/json``).

The zkg package in ``zeek-scripts/`` publishes ``BNN::flow(f: BNN::Flow)`` and
``BNN::flows(fs: vector of BNN::Flow)`` events; :mod:`sidecar.sources.broker_flow` decodes
the records (:data:`FLOW_LAYOUT` mirrors ``type Flow: record`` in main.zeek; a test checks
the two agree). Unset ``&optional`` fields arrive as ``none`` and stay missing (NaN / -1 /
None). A message is first parsed into typed structs and decoded column by column in one
go (msgspec, when installed); anything that path does not take is parsed with orjson and
its records decoded column by column, and if any record is not the plain shape, record by
record with the reference decoder, so every bad record is a counted skip.

Bad input never ends iteration: a frame that is not a Broker message, an unknown
``@data-type``, a ``BNN::flow(s)`` event with the wrong arity or a record of the wrong
shape, a protocol ``error`` message: each is counted in ``stats.skipped`` (by reason)
and logged. A message over ``max_message_bytes`` makes ``websockets`` close the
connection (1009); that is counted as ``message_too_large`` and the source reconnects.
Reconnects use capped exponential backoff with jitter. ``close()`` from another thread
ends iteration within about 0.25 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from sidecar.errors import ProtocolError, TransportError
from sidecar.flow import FIELD_BY_NAME, FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.sources.broker_codec import (
    Ack,
    DataMessage,
    Error,
    UnknownDataType,
    encode,
    message_from_json,
)
from sidecar.sources.broker_flow import (
    COLUMNS,
    CONN_ID,
    FLOW_LAYOUT,
    BadRecord,
    decode_flow,
    decode_flows,
    decode_message,
)
from sidecar.transports.ws_client import Backoff, BrokerClient, ConnectionLost, Rejected

__all__ = ["CONN_ID", "FLOWS_EVENT", "FLOW_EVENT", "FLOW_LAYOUT", "BadRecord", "BrokerWsSource", "decode_flow",
           "flow_event"]

log = logging.getLogger(__name__)

FLOW_EVENT = "BNN::flow"
FLOWS_EVENT = "BNN::flows"
_COLS = COLUMNS
#: numpy dtype of each column (FlowBatch's); float columns turn None into NaN
_DTYPES = {c: FIELD_BY_NAME[c].dtype for c in _COLS}


_ONE = {"@data-type": "count", "data": 1}


def flow_event(obj: Any) -> tuple[str, str, list[Any]] | None:
    """(topic, name, raw args) when ``obj`` is a data message framing a ``BNN::flow(s)`` event
    (metadata, if any, is ignored); None for anything else."""
    if type(obj) is not dict or obj.get("type") != "data-message" or obj.get("@data-type") != "vector":
        return None
    d = obj.get("data")
    if type(d) is not list or len(d) != 3 or d[0] != _ONE or d[1] != _ONE or type(d[2]) is not dict:
        return None
    body = d[2].get("data") if d[2].get("@data-type") == "vector" else None
    if type(body) is not list or len(body) not in (2, 3) or type(body[0]) is not dict or type(body[1]) is not dict:
        return None
    name, args = body[0].get("data"), body[1]
    if body[0].get("@data-type") != "string" or name not in (FLOW_EVENT, FLOWS_EVENT):
        return None
    topic = obj.get("topic")
    if args.get("@data-type") != "vector" or type(args.get("data")) is not list or type(topic) is not str:
        return None
    return topic, name, args["data"]


class BrokerWsSource:
    """Subscribe to flow topics on Zeek's WebSocket API and yield :class:`FlowBatch` es."""

    def __init__(
        self,
        url: str,
        topics: list[str] | None = None,
        ca_file: str | None = None,
        reconnect_max_s: float = 30.0,
        batch_size: int = 1024,
        idle_flush_ms: int = 100,
        max_message_bytes: int = 1 << 22,
        ack_timeout_s: float = 5.0,
        reconnect_min_s: float = 0.1,
        app_name: str = "bnn-sidecar",
    ) -> None:
        self.topics = list(topics) if topics is not None else ["zeek/bnn/flows"]
        self.client = BrokerClient(url, self.topics, ca_file, ack_timeout_s,
                                   max_message_bytes=max_message_bytes, app_name=app_name)
        self.url = self.client.endpoint.url
        self.batch_size = max(1, int(batch_size))
        self.idle_flush_s = max(0.0, idle_flush_ms / 1000.0)
        self.backoff = Backoff(reconnect_min_s, reconnect_max_s)
        self.stats = ReadStats()
        #: connects that got an ack / attempts that failed / Broker error codes seen
        self.connects = 0
        self.connect_failures = 0
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._pending: dict[str, list[Any]] = {c: [] for c in _COLS}
        self._first_at = 0.0

    # -- public ------------------------------------------------------------------------
    @property
    def reconnects(self) -> int:
        """Successful connects after the first (read by the service's /metrics)."""
        return max(0, self.connects - 1)

    def close(self) -> None:
        """Thread-safe; iteration ends within about 0.25 s."""
        self._stop.set()
        self.client.abort()

    def __iter__(self) -> Iterator[FlowBatch]:
        try:
            while not self._stop.is_set():
                if not self._connect():
                    self._stop.wait(self.backoff.next())
                    continue
                since = time.monotonic()
                yield from self._pump()
                self.backoff.session_ended(time.monotonic() - since)
                while self._n_pending():
                    yield self._take()
                if not self._stop.is_set():
                    self._stop.wait(self.backoff.next())
            while self._n_pending():
                yield self._take()
        finally:
            self.client.close()

    # -- connection ----------------------------------------------------------------------
    def _connect(self) -> bool:
        try:
            ack = self.client.connect(self._stop)
        except Rejected as exc:
            self.connect_failures += 1
            self._count_error(exc.error, "handshake")
            return False
        except TransportError as exc:
            self.connect_failures += 1
            if not self._stop.is_set():
                log.warning("Broker WebSocket %s: %s", self.url, exc)
            return False
        self.connects += 1
        log.info("subscribed to %s on %s (endpoint %s, version %s)", self.topics, self.url,
                 ack.endpoint, ack.version)
        return True

    def _pump(self) -> Iterator[FlowBatch]:
        try:
            while not self._stop.is_set():
                wait = 0.25
                if self._n_pending():
                    wait = max(0.0, min(wait, self._first_at + self.idle_flush_s - time.monotonic()))
                raw = self.client.recv(wait)
                if raw is not None:
                    self._handle(raw)
                while self._n_pending() >= self.batch_size:
                    yield self._take()
                if self._n_pending() and time.monotonic() >= self._first_at + self.idle_flush_s:
                    yield self._take()
        except ConnectionLost as exc:
            if exc.too_large:
                self.stats.read += 1
                self.stats.skip("message_too_large", self.url,
                                f"message over max_message_bytes={self.client.max_message_bytes}; reconnecting")
            elif not self._stop.is_set():
                log.warning("Broker WebSocket %s: %s; reconnecting", self.url, exc)
        finally:
            self.client.close()

    # -- messages --------------------------------------------------------------------------
    def _count_error(self, err: Error, where: str) -> None:
        self.errors[err.code] += 1
        self.stats.read += 1
        self.stats.skip("broker_error", f"{self.url} ({where})", f"{err.code}: {err.context}")

    def _handle(self, raw: str | bytes) -> None:
        whole = decode_message(raw)  # the common case in one go (msgspec); else orjson below
        if whole is not None:
            self.stats.read += whole[1]
            self._append(whole[2])
            return
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self.stats.read += 1
            self.stats.skip("malformed_message", self.url, f"not JSON: {exc}")
            return
        fast = flow_event(obj)
        if fast is not None:
            self._handle_flows(*fast)
            return
        try:
            msg = message_from_json(obj)
        except UnknownDataType as exc:
            self.stats.read += 1
            self.stats.skip("unknown_data_type", self.url, str(exc))
            return
        except ProtocolError as exc:
            self.stats.read += 1
            self.stats.skip("malformed_message", self.url, str(exc))
            return
        if isinstance(msg, Error):
            self._count_error(msg, "stream")
        elif isinstance(msg, Ack):
            self.stats.ignored["ack"] += 1
        elif isinstance(msg, DataMessage):
            self.stats.ignored["data_message"] += 1
        elif msg.name in (FLOW_EVENT, FLOWS_EVENT):  # framing the fast path did not take
            self._handle_flows(msg.topic, msg.name, [encode(a) for a in msg.args])
        else:
            self.stats.ignored["other_event"] += 1

    def _handle_flows(self, topic: str, name: str, args: list[Any]) -> None:
        where = f"{self.url} topic {topic}"
        if len(args) != 1:
            self.stats.read += 1
            self.stats.skip("bad_event", where, f"{name} takes 1 argument, got {len(args)}")
            return
        records = [args[0]]
        if name == FLOWS_EVENT:
            arg = args[0]
            if type(arg) is not dict or arg.get("@data-type") != "vector" or type(arg.get("data")) is not list:
                self.stats.read += 1
                self.stats.skip("bad_event", where, f"{name} takes a vector of Flow, got {arg!r:.80}")
                return
            records = arg["data"]
        cols = decode_flows(records)
        if cols is not None:
            n = len(cols["ts"])
            self.stats.read += n
            if n:
                self._append(cols)
            return
        good: dict[str, list[Any]] = {c: [] for c in _COLS}
        for rec in records:  # something is off: record by record, each bad one a counted skip
            self.stats.read += 1
            try:
                row = decode_flow(rec)
            except BadRecord as exc:
                self.stats.skip(exc.reason, where, str(exc))
                continue
            for c in _COLS:
                good[c].append(row[c])
        if good["ts"]:
            self._append(good)

    # -- batching ------------------------------------------------------------------------
    def _append(self, cols: dict[str, list[Any]]) -> None:
        pending = self._pending
        if not pending["ts"]:
            self._first_at = time.monotonic()
        for c in _COLS:
            pending[c] += cols[c]

    def _n_pending(self) -> int:
        return len(self._pending["ts"])

    def _take(self) -> FlowBatch:
        """Up to ``batch_size`` of the oldest pending rows as one batch."""
        k = self.batch_size
        if self._n_pending() <= k:
            cols, self._pending = self._pending, {c: [] for c in _COLS}
        else:
            cols = {c: v[:k] for c, v in self._pending.items()}
            self._pending = {c: v[k:] for c, v in self._pending.items()}
        arrays = {c: _array(v, _DTYPES[c]) for c, v in cols.items()}
        batch = FlowBatch.from_columns(arrays, "broker")
        self.stats.emitted += len(batch)
        return batch


def _array(values: list[Any], dtype: np.dtype[Any]) -> np.ndarray:
    """A column list -> its FlowBatch array (None -> NaN in float columns; the integer
    columns a Flow fills, ports and flags, are never None)."""
    if dtype.kind == "O":
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr
    return np.array(values, dtype=dtype)
