"""A small client for Zeek's WebSocket API (``/v1/messages/json``), shared by the
Broker WebSocket source and sink.

Framing, TLS and pings are left to the ``websockets`` library (its threaded sync
client, which answers the server's pings in its own background thread). This module
adds what the Broker protocol needs on top: the subscription handshake and its ack
(with a timeout), a TCP connect that another thread can abort, and a capped
exponential backoff with jitter for reconnects. Third-party exceptions are wrapped
into :class:`sidecar.errors.TransportError` / :class:`~sidecar.errors.ProtocolError`
here.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import logging
import random
import re
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import CloseCode
from websockets.sync.client import ClientConnection, connect

from sidecar.errors import ConfigError, ProtocolError, TransportError
from sidecar.sources.broker_codec import Ack, Error, decode_message, handshake

log = logging.getLogger(__name__)

#: websockets >= 17 warns unless a directly returned connection is asked for explicitly
_DIRECT: dict[str, bool] = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}

#: The one path Zeek's and Broker's WebSocket servers serve.
API_PATH = "/v1/messages/json"
#: X-Application-Name values Zeek 8 accepts
_APP_NAME = re.compile(r"[-/_.=:*@a-zA-Z0-9]+")


class ConnectionLost(TransportError):
    """The WebSocket connection ended; ``too_large`` when we closed it (1009) because a
    message exceeded ``max_message_bytes``."""

    def __init__(self, msg: str, too_large: bool = False) -> None:
        super().__init__(msg)
        self.too_large = too_large


class Rejected(ProtocolError):
    """The server answered the subscription handshake with an error message."""

    def __init__(self, error: Error) -> None:
        super().__init__(f"handshake rejected: {error.code}: {error.context}")
        self.error = error


@dataclass(frozen=True)
class Endpoint:
    url: str
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ConfigError(f"WebSocket url must be ws://HOST:PORT{API_PATH} or wss://..., got {url!r}")
        try:
            port = parts.port or (443 if parts.scheme == "wss" else 80)
        except ValueError as exc:
            raise ConfigError(f"bad port in WebSocket url {url!r}") from exc
        path = parts.path or API_PATH
        if path != API_PATH:
            log.warning("WebSocket url %s: Zeek only serves %s (got %s)", url, API_PATH, path)
        full = f"{parts.scheme}://{parts.netloc}{path}"
        return cls(full, parts.hostname, port, parts.scheme == "wss")


def tls_context(endpoint: Endpoint, ca_file: str | None) -> ssl.SSLContext | None:
    """Verifying TLS context for ``wss://`` (system CAs, or only ``ca_file`` when given)."""
    if not endpoint.tls:
        if ca_file:
            log.warning("ca_file is ignored for plain ws:// url %s", endpoint.url)
        return None
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load CA file {ca_file!r}: {exc}") from exc


@dataclass
class Backoff:
    """Capped exponential backoff with jitter: ``min_s * 2**n`` capped at ``max_s``, each
    delay drawn uniformly from [d/2, d]."""

    min_s: float = 0.1
    max_s: float = 30.0
    attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next(self) -> float:
        d = min(self.max_s, self.min_s * (2 ** min(self.attempts, 32)))
        self.attempts += 1
        return self.rng.uniform(d / 2, d)

    def reset(self) -> None:
        self.attempts = 0

    def session_ended(self, lasted_s: float, stable_s: float = 10.0) -> None:
        """Forget earlier failures only after a connection that stayed up ``stable_s``: a
        server that accepts and then drops at once still gets an increasing backoff."""
        if lasted_s >= stable_s:
            self.reset()


_IN_PROGRESS = (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK)


def _tcp_connect(host: str, port: int, timeout: float, stop: threading.Event) -> socket.socket:
    """Non-blocking connect that gives up at ``timeout`` or as soon as ``stop`` is set."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TransportError(f"cannot resolve {host}: {exc}") from exc
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            err = sock.connect_ex(addr)
            while err in _IN_PROGRESS:
                if stop.is_set():
                    raise TransportError("connect aborted")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TransportError(f"connect to {host}:{port} timed out")
                _, ready, _ = select.select([], [sock], [], min(0.1, left))
                if ready:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    break
            if err != 0:
                raise TransportError(f"connect to {host}:{port} failed: {errno.errorcode.get(err, err)}")
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except (OSError, TransportError) as exc:
            sock.close()
            last = exc
            if stop.is_set():
                break
    raise TransportError(str(last) if last else f"no address for {host}")


class BrokerClient:
    """One connection attempt at a time to a Broker/Zeek WebSocket server.

    ``connect(stop)`` opens TCP (+TLS), upgrades to WebSocket, sends the subscription
    array and waits for the ack; ``abort()`` may be called from any thread and makes a
    blocked ``connect``/``recv`` return promptly.
    """

    def __init__(
        self,
        url: str,
        topics: list[str],
        ca_file: str | None = None,
        ack_timeout_s: float = 5.0,
        open_timeout_s: float = 10.0,
        max_message_bytes: int | None = 1 << 22,
        app_name: str = "bnn-sidecar",
    ) -> None:
        if not _APP_NAME.fullmatch(app_name):
            raise ConfigError(f"app_name {app_name!r} must match {_APP_NAME.pattern} (Zeek 8 rejects others)")
        self.endpoint = Endpoint.parse(url)
        self.topics = list(topics)
        self._hello = handshake(self.topics).decode()
        self._ssl = tls_context(self.endpoint, ca_file)
        self.ack_timeout_s = ack_timeout_s
        self.open_timeout_s = open_timeout_s
        self.max_message_bytes = max_message_bytes
        self.app_name = app_name
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._ws: ClientConnection | None = None
        self.ack: Ack | None = None

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def connect(self, stop: threading.Event) -> Ack:
        self.close()
        ep = self.endpoint
        sock = _tcp_connect(ep.host, ep.port, self.open_timeout_s, stop)
        with self._lock:
            self._sock = sock
        if stop.is_set():
            self.close()
            raise TransportError("connect aborted")
        try:
            opts: dict[str, Any] = {
                "sock": sock,
                "ssl": self._ssl,
                "server_hostname": ep.host if self._ssl else None,
                "compression": None,
                "open_timeout": self.open_timeout_s,
                "close_timeout": 1.0,
                "max_size": self.max_message_bytes,
                "additional_headers": {"X-Application-Name": self.app_name},
                **_DIRECT,
            }
            ws: ClientConnection = connect(ep.url, **opts)
        except (OSError, InvalidHandshake, InvalidURI, ssl.SSLError, TimeoutError, ConnectionClosed) as exc:
            self.close()
            raise TransportError(f"WebSocket upgrade to {ep.url} failed: {exc}") from exc
        with self._lock:
            self._ws = ws
        try:
            # the server may have answered and closed already (e.g. invalid_uri): still read it
            with contextlib.suppress(ConnectionClosed):
                ws.send(self._hello)
            raw = self._recv_raw(self.ack_timeout_s)
            if raw is None:
                raise TransportError(f"{ep.url}: no ack within {self.ack_timeout_s:g} s")
            msg = decode_message(raw)
            if isinstance(msg, Error):
                raise Rejected(msg)
            if not isinstance(msg, Ack):
                raise ProtocolError(f"{ep.url}: expected an ack, got {type(msg).__name__}")
        except BaseException:
            self.close()
            raise
        self.ack = msg
        return msg

    def _recv_raw(self, timeout: float | None) -> str | bytes | None:
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected")
        try:
            return ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        except ConnectionClosed as exc:
            too_large = exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG
            raise ConnectionLost(f"connection to {self.endpoint.url} closed: {exc}", too_large) from exc
        except (OSError, RuntimeError) as exc:  # RuntimeError: recv after abort from another thread
            raise ConnectionLost(f"connection to {self.endpoint.url} failed: {exc}") from exc

    def recv(self, timeout: float | None) -> str | bytes | None:
        """One message, or None when ``timeout`` passed; :class:`ConnectionLost` when gone."""
        return self._recv_raw(timeout)

    def send(self, text: str) -> None:
        ws = self._ws
        if ws is None:
            raise ConnectionLost("not connected")
        try:
            ws.send(text)
        except ConnectionClosed as exc:
            raise ConnectionLost(f"connection to {self.endpoint.url} closed: {exc}") from exc
        except (OSError, RuntimeError) as exc:
            raise ConnectionLost(f"send to {self.endpoint.url} failed: {exc}") from exc

    def abort(self) -> None:
        """Thread-safe: shut the socket down so any blocked call returns."""
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            ws, sock = self._ws, self._sock
            self._ws = self._sock = None
        if ws is not None:
            with contextlib.suppress(OSError, RuntimeError, ConnectionClosed):
                ws.close()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
