"""Live Suricata eve input: a unix stream socket that Suricata's eve output connects to.

Suricata's ``eve-log`` with ``filetype: unix_stream`` is a *client*: it connects to
``filename`` and writes one JSON event per line. :class:`EveSocketSource` is the
server side. It binds ``path`` (a stale socket file left by a crashed run is removed;
a path that exists and is not a socket is refused, as is a socket another process is
still listening on), accepts Suricata's connection and every later reconnection,
splits the byte stream into lines and hands complete lines to the eve reader
(:func:`sidecar.sources.eve.read_lines`). Only ``flow`` events become records; other
event types are counted in ``stats.ignored`` (``event:<type>``); bad JSON and lines
longer than ``max_line_bytes`` are counted in ``stats.skipped`` and logged (capped).

Batches hold at most ``batch_size`` records; a partial batch is yielded once its
oldest record has waited ``idle_flush_ms``. Iteration blocks while nothing arrives;
:meth:`close` (from any thread) makes it finish within ~0.2 s, after yielding what
was already parsed. The socket file is removed when iteration ends.

What Suricata does while nobody listens (Suricata 7 ``util-logopenfile.c``, measured
in ``tests/test_suricata_eve_socket.py``): an event whose write fails is dropped and
counted in Suricata's ``dropped`` counter, never queued; a reconnect is attempted on
the next event write, at most once per 500 ms. So events produced while the sidecar
is down are lost, and the first event after the sidecar is back is delivered (or, if
it comes within 500 ms of the last failed attempt, also dropped). In live capture
modes Suricata writes with ``MSG_DONTWAIT``: when the sidecar falls behind and the
socket buffer is full, events are dropped too (a partially written line then reaches
us glued to the next one and is counted as ``bad-json``). Offline (``-r``) writes block.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sidecar.errors import TransportError
from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.sources.eve import read_lines

log = logging.getLogger(__name__)

#: Longest blocking wait of the loop; bounds how long :meth:`close` takes to act.
POLL_S = 0.1
RECV_BYTES = 1 << 16
#: concurrent writers accepted (one per Suricata eve output; more is a misconfiguration)
MAX_CONNECTIONS = 16


class _Conn:
    __slots__ = ("buf", "discarding", "id", "lines", "sock")

    def __init__(self, sock: socket.socket, cid: int) -> None:
        self.sock = sock
        self.id = cid
        self.buf = bytearray()
        self.discarding = False  # inside an oversize line: drop bytes up to the next newline
        self.lines = 0


class EveSocketSource:
    """Listen on the unix stream socket ``path`` for Suricata eve JSON (see module doc)."""

    def __init__(
        self,
        path: str,
        batch_size: int = 1024,
        max_line_bytes: int = 1 << 20,
        idle_flush_ms: int = 100,
        mode: int = 0o660,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if max_line_bytes < 64:
            raise ValueError("max_line_bytes must be >= 64")
        self.path = str(path)
        self.batch_size = int(batch_size)
        self.max_line_bytes = int(max_line_bytes)
        self.idle_flush_s = max(0, int(idle_flush_ms)) / 1000.0
        self.stats = ReadStats()
        #: connections accepted so far (Suricata reconnects count here)
        self.connections = 0
        self._closed = threading.Event()
        self._listener = self._bind(mode)
        self._conns: dict[int, _Conn] = {}
        self._lock = threading.Lock()
        self._started = False
        self._done = False

    # -- socket setup --------------------------------------------------------

    def _bind(self, mode: int) -> socket.socket:
        p = Path(self.path)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise TransportError(f"{self.path} exists and is not a socket; refusing to replace it")
            if _is_live(self.path):
                raise TransportError(f"{self.path}: another process is listening on this socket")
            log.info("removing stale socket %s", self.path)
            p.unlink()
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as exc:
            raise TransportError(f"cannot create socket {self.path}: {exc}") from exc
        try:
            sock.bind(self.path)
            os.chmod(self.path, mode)
            sock.listen(8)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise TransportError(f"cannot listen on {self.path}: {exc}") from exc
        log.info("eve socket listening on %s", self.path)
        return sock

    # -- iteration -----------------------------------------------------------

    def __iter__(self) -> Iterator[FlowBatch]:
        with self._lock:
            if self._done or self._started or self._closed.is_set():
                return
            self._started = True
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, None)
        pending: list[FlowBatch] = []
        npending = 0
        first_at = 0.0
        try:
            while not self._closed.is_set():
                timeout = POLL_S
                if npending:
                    timeout = min(timeout, max(0.0, first_at + self.idle_flush_s - time.monotonic()))
                for key, _ in sel.select(timeout):
                    if key.data is None:
                        self._accept(sel)
                        continue
                    for b in self._read(sel, key.data):
                        if not npending:
                            first_at = time.monotonic()
                        pending.append(b)
                        npending += len(b)
                while npending >= self.batch_size:
                    out, pending = _split(pending, self.batch_size)
                    npending -= len(out)
                    if npending:
                        first_at = time.monotonic()
                    yield out
                if npending and time.monotonic() - first_at >= self.idle_flush_s:
                    yield FlowBatch.concat(pending)
                    pending, npending = [], 0
            if npending:
                yield FlowBatch.concat(pending)
        finally:
            sel.close()
            self._shutdown()

    def _accept(self, sel: selectors.BaseSelector) -> None:
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("accept on %s failed: %s", self.path, exc)
            return
        if len(self._conns) >= MAX_CONNECTIONS:
            log.warning("%s: already %d writers connected; refusing another", self.path, len(self._conns))
            sock.close()
            return
        sock.setblocking(False)
        self.connections += 1
        conn = _Conn(sock, self.connections)
        self._conns[conn.id] = conn
        sel.register(sock, selectors.EVENT_READ, conn)
        log.info("eve writer connected to %s (connection %d)", self.path, conn.id)

    def _read(self, sel: selectors.BaseSelector, conn: _Conn) -> list[FlowBatch]:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as exc:
            log.warning("eve connection %d on %s failed: %s", conn.id, self.path, exc)
            data = b""
        if not data:
            self._drop_conn(sel, conn)
            if conn.buf and not conn.discarding:  # last line without newline
                self.stats.read += 1
                self.stats.skip("truncated", where=self._where(conn), detail=f"{len(conn.buf)} bytes at EOF")
            return []
        return self._feed(conn, data)

    def _feed(self, conn: _Conn, data: bytes) -> list[FlowBatch]:
        lines: list[bytes] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            if conn.discarding:
                conn.discarding = False
            else:
                conn.buf += data[start:nl]
                if len(conn.buf) > self.max_line_bytes:
                    self._oversize(conn)
                else:
                    lines.append(bytes(conn.buf))
            conn.buf.clear()
            conn.lines += 1
            start = nl + 1
        if not conn.discarding:
            conn.buf += data[start:]
            if len(conn.buf) > self.max_line_bytes:
                self._oversize(conn)
                conn.buf.clear()
                conn.discarding = True
        if not lines:
            return []
        return list(read_lines(lines, self.stats, where=self._where(conn), batch_size=self.batch_size))

    def _oversize(self, conn: _Conn) -> None:
        self.stats.read += 1
        self.stats.skip("oversize", where=self._where(conn), detail=f"line longer than {self.max_line_bytes} bytes")

    def _where(self, conn: _Conn) -> str:
        return f"{self.path}#{conn.id}@{conn.lines}"

    def _drop_conn(self, sel: selectors.BaseSelector, conn: _Conn) -> None:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(conn.sock)
        conn.sock.close()
        self._conns.pop(conn.id, None)
        log.info("eve writer on %s disconnected (connection %d)", self.path, conn.id)

    # -- shutdown ------------------------------------------------------------

    def close(self) -> None:
        """Stop: a running iteration finishes within ~``POLL_S``; safe from any thread."""
        self._closed.set()
        with self._lock:
            owned = self._started  # once iterating, the loop cleans up in its ``finally``
        if not owned:
            self._shutdown()

    def _shutdown(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
        for conn in list(self._conns.values()):
            conn.sock.close()
        self._conns.clear()
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> EveSocketSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_live(path: str) -> bool:
    """True if something accepts connections on the unix socket ``path``."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(path)
    except OSError:
        return False
    else:
        return True
    finally:
        s.close()


def _split(batches: list[FlowBatch], n: int) -> tuple[FlowBatch, list[FlowBatch]]:
    """First ``n`` records of ``batches`` as one batch, and the rest."""
    allb = FlowBatch.concat(batches)
    if len(allb) == n:
        return allb, []
    return allb.take(np.arange(n)), [allb.take(np.arange(n, len(allb)))]
