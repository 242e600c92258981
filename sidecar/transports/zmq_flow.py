"""ZeroMQ endpoints of the pipeline: worker source, worker→collector sink (collector: zmq_collect).

``ship`` (PUSH) → :class:`ZmqFlowSource` (PULL, in each worker) → scorer →
:class:`ZmqVerdictSink` (PUSH) → :class:`ZmqVerdictSource` (PULL, in the collector,
yields ``VerdictBatch``) → sinks; the collector acks ``(stream, seq)`` back to ship
over PUB/SUB. The delivery guarantee is described in ``docs/ZMQ.md``.

All three follow the live-source contract: iteration blocks, but ``close()`` from
another thread ends it within ~``POLL_MS``; bad messages are counted and logged, never raised.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator

import numpy as np
import zmq

from sidecar.errors import ProtocolError, SinkError
from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.transports import zmq_wire as wire
from sidecar.transports.zmq_common import POLL_MS, Curve, ZSock
from sidecar.verdict import VerdictBatch

log = logging.getLogger(__name__)

#: per-record extras a worker source adds so the verdict sink can name the batch
X_STREAM, X_SEQ, X_ROW, X_TOTAL = "_zmq_stream", "_zmq_seq", "_zmq_row", "_zmq_total"


class ZmqFlowSource:
    """Worker side: PULL ``flows`` batches (connects to ship's PUSH by default).

    Each yielded batch carries ``_zmq_*`` extras (stream, seq, row, total) that
    :class:`ZmqVerdictSink` uses. A message whose header is valid but whose body is not
    is rejected with its reason to ``rejects`` (the collector's endpoint) so ship
    counts it instead of resending it forever. ``curve_server`` is ship's public key,
    ``curve_rejects_server`` the collector's (CURVE is per link).
    """

    def __init__(self, endpoint: str, bind: bool = False, hwm: int = 4, rejects: str = "",
                 curve_secret: str = "", curve_server: str = "", curve_clients: str = "",
                 curve_rejects_server: str = "") -> None:
        self.stats = ReadStats()
        self.batches = 0
        self._stop = threading.Event()
        self._iterating = False
        self._pull = ZSock(zmq.PULL, endpoint, bind=bind, hwm=hwm,
                           curve=Curve(curve_secret, curve_server, curve_clients), linger_ms=0)
        self._rej: ZSock | None = None
        self._rej_lock = threading.Lock()
        if rejects:
            try:
                self._rej = ZSock(zmq.PUSH, rejects, bind=False, hwm=64,
                                  curve=Curve(curve_secret, curve_rejects_server, ""))
            except Exception:
                self._pull.close(0)
                raise

    def __iter__(self) -> Iterator[FlowBatch]:
        self._iterating = True
        try:
            while not self._stop.is_set():
                if not self._pull.sock.poll(POLL_MS, zmq.POLLIN):
                    continue
                data = self._pull.sock.recv(copy=True)
                batch = self._decode(data)
                if batch is not None:
                    yield batch
        finally:
            self._iterating = False
            self._close_sockets()

    def _decode(self, data: bytes) -> FlowBatch | None:
        try:
            h, obj = wire.unpack(data)
        except ProtocolError as exc:
            self.stats.skip("bad-message", where=self._pull.endpoint, detail=str(exc))
            return None
        try:
            batch = wire.decode_flows(h, obj)
        except ProtocolError as exc:
            self.stats.read += h.n
            self.stats.skip("protocol", where=f"{h.stream}#{h.seq}", detail=str(exc))
            self.stats.skipped["protocol"] += max(h.n - 1, 0)
            self.reject(h.stream, h.seq, h.n, "protocol", str(exc))
            return None
        n = len(batch)
        batch.extra[X_STREAM] = np.full(n, h.stream, dtype=object)
        batch.extra[X_SEQ] = np.full(n, h.seq, dtype=np.int64)
        batch.extra[X_ROW] = np.arange(n, dtype=np.int32)
        batch.extra[X_TOTAL] = np.full(n, n, dtype=np.int32)
        self.stats.read += n
        self.stats.emitted += n
        self.batches += 1
        return batch

    def reject(self, stream: str, seq: int, n: int, reason: str, detail: str = "") -> None:
        """Tell the collector batch ``(stream, seq)`` will not be scored (no-op without ``rejects``)."""
        with self._rej_lock:
            if self._rej is None:
                log.warning("batch %s#%d rejected (%s) but no rejects endpoint is set; ship will resend it",
                            stream, seq, reason)
                return
            try:
                self._rej.sock.send(wire.encode_reject(stream, seq, n, reason, detail), zmq.NOBLOCK)
            except zmq.Again:
                log.warning("reject of %s#%d not sent: collector queue full (ship will resend it)", stream, seq)

    def reject_batch(self, flows: FlowBatch, reason: str, detail: str = "") -> None:
        """For the service: a batch this source yielded could not be scored; reject each ship batch in it."""
        ex = flows.extra
        if X_STREAM not in ex or len(flows) == 0:
            return
        for stream, seq in sorted(set(zip(ex[X_STREAM].tolist(), ex[X_SEQ].tolist(), strict=True))):
            total = int(ex[X_TOTAL][(ex[X_SEQ] == seq) & (ex[X_STREAM] == stream)][0])
            self.reject(stream, seq, total, reason, detail)

    def _close_sockets(self) -> None:
        self._pull.close()
        with self._rej_lock:
            if self._rej is not None:
                self._rej.close()
                self._rej = None

    def close(self) -> None:
        self._stop.set()
        if not self._iterating:
            self._close_sockets()


class ZmqVerdictSink:
    """Worker side: PUSH verdicts to the collector (connects by default). Implements the Sink protocol.

    Verdicts of records that came from a :class:`ZmqFlowSource` are sent under their
    original ``(stream, seq)`` (split per batch, with row indices, so any re-batching
    by the service is harmless). Other verdicts get this sink's own stream id and are
    not acked to anyone (at-most-once). A send blocks (back-pressure) up to
    ``send_timeout`` seconds, then raises :class:`SinkError`.
    """

    name = "zmq"

    def __init__(self, endpoint: str, bind: bool = False, hwm: int = 8, send_timeout: float = 30.0,
                 curve_secret: str = "", curve_server: str = "", curve_clients: str = "") -> None:
        self._push = ZSock(zmq.PUSH, endpoint, bind=bind, hwm=hwm,
                           curve=Curve(curve_secret, curve_server, curve_clients), linger_ms=2000)
        self.send_timeout = float(send_timeout)
        self.stream = f"sink-{uuid.uuid4().hex[:12]}"
        self._seq = 0
        self.sent_batches = 0
        self.sent_records = 0
        self._lock = threading.Lock()

    def _send(self, data: bytes) -> None:
        sock = self._push.sock
        waited = 0.0
        while True:
            try:
                sock.send(data, zmq.NOBLOCK)
                return
            except zmq.Again:
                if waited >= self.send_timeout:
                    raise SinkError(f"zmq sink {self._push.endpoint}: collector not taking data for "
                                    f"{self.send_timeout:.0f} s") from None
                sock.poll(POLL_MS, zmq.POLLOUT)
                waited += POLL_MS / 1000

    def write(self, verdicts: VerdictBatch) -> None:
        with self._lock:
            ex = verdicts.flows.extra
            if len(verdicts) == 0:
                return
            if X_STREAM not in ex:
                rows = np.arange(len(verdicts), dtype=np.int32)
                self._send(wire.encode_verdicts(verdicts, self.stream, self._seq, rows, len(verdicts)))
                self._seq += 1
                self.sent_batches += 1
                self.sent_records += len(verdicts)
                return
            streams, seqs = ex[X_STREAM], ex[X_SEQ]
            keys = sorted(set(zip(streams.tolist(), seqs.tolist(), strict=True)))
            for stream, seq in keys:
                part = verdicts.take((seqs == seq) & (streams == stream)) if len(keys) > 1 else verdicts
                pex = part.flows.extra
                self._send(wire.encode_verdicts(part, stream, seq, pex[X_ROW], int(pex[X_TOTAL][0])))
                self.sent_batches += 1
                self.sent_records += len(part)

    def reject(self, flows: FlowBatch, reason: str, detail: str = "") -> None:
        """The service could not score ``flows``: reject each ship batch in it to the collector."""
        ex = flows.extra
        if X_STREAM not in ex or len(flows) == 0:
            return
        with self._lock:
            for stream, seq in sorted(set(zip(ex[X_STREAM].tolist(), ex[X_SEQ].tolist(), strict=True))):
                total = int(ex[X_TOTAL][(ex[X_SEQ] == seq) & (ex[X_STREAM] == stream)][0])
                self._send(wire.encode_reject(stream, seq, total, reason, detail))

    def flush(self) -> None:
        pass

    def reopen(self) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            self._push.close()


# the collector lives in its own module; the config registry names it here
from sidecar.transports.zmq_collect import ZmqVerdictSource  # noqa: E402

__all__ = ["ZmqFlowSource", "ZmqVerdictSink", "ZmqVerdictSource"]
