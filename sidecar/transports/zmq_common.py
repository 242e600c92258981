"""ZeroMQ socket plumbing shared by ship, workers and the collector: endpoints, CURVE, errors.

CURVE (optional, for cross-host links): the *binding* side is the CURVE server. It
needs its secret certificate (``curve_secret``: a ``.key_secret`` file written by
:func:`keygen` / ``zmq.auth.create_certificates``); with ``curve_clients`` (a directory
of client ``.key`` files) only those clients may connect, otherwise any client that
knows the server's public key may. The *connecting* side needs the server's public
certificate (``curve_server``; CURVE is on for a connecting socket iff it is set) and
uses its own ``curve_secret`` if given (required when the server checks clients), else
an ephemeral key pair.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from sidecar.errors import ConfigError, TransportError

log = logging.getLogger(__name__)

SCHEMES = ("tcp://", "ipc://", "inproc://")
#: largest message accepted from a peer (a 1024-record flows batch is ~150 kB)
MAX_MSG = 64 << 20
POLL_MS = 200  # every blocking wait wakes at least this often to check for close()


def check_endpoint(endpoint: str) -> str:
    if not isinstance(endpoint, str) or not endpoint.startswith(SCHEMES):
        raise ConfigError(f"ZeroMQ endpoint {endpoint!r} must start with one of {', '.join(SCHEMES)}")
    return endpoint


@dataclass(frozen=True)
class Curve:
    secret: str = ""  # own secret certificate file
    server: str = ""  # server's public certificate file (connecting side)
    clients: str = ""  # directory of allowed client public certificates (binding side)


def _load(path: str, want_secret: bool) -> tuple[bytes, bytes | None]:
    try:
        pub, sec = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CURVE certificate {path}: {exc}") from exc
    if want_secret and not sec:
        raise ConfigError(f"{path} holds no secret key (use the .key_secret file)")
    return pub, sec


def keygen(directory: str | os.PathLike[str], name: str) -> tuple[str, str]:
    """Write ``<dir>/<name>.key`` (public, give it to peers) and ``<name>.key_secret`` (keep, mode 0600)."""
    if not zmq.has("curve"):
        raise ConfigError("this libzmq has no CURVE support")
    Path(directory).mkdir(parents=True, exist_ok=True)
    pub, sec = zmq.auth.create_certificates(directory, name)
    os.chmod(sec, 0o600)
    return pub, sec


class ZSock:
    """One socket in its own context (so a CURVE authenticator never clashes with another)."""

    def __init__(
        self,
        kind: int,
        endpoint: str,
        *,
        bind: bool,
        hwm: int,
        curve: Curve | None = None,
        subscribe: bytes | None = None,
        linger_ms: int = 1000,
    ) -> None:
        self.endpoint = check_endpoint(endpoint)
        if hwm < 1:
            raise ConfigError(f"hwm must be >= 1, got {hwm}")
        self.ctx = zmq.Context()
        self.closed = False
        self.auth: ThreadAuthenticator | None = None
        self.linger_ms = linger_ms
        try:
            self.sock: zmq.Socket[Any] = self.ctx.socket(kind)
            self.sock.setsockopt(zmq.SNDHWM, hwm)
            self.sock.setsockopt(zmq.RCVHWM, hwm)
            self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_MSG)
            self.sock.setsockopt(zmq.LINGER, linger_ms)
            if curve is not None and (curve.secret or curve.clients if bind else curve.server):
                self._curve(curve, bind)
            if subscribe is not None:
                self.sock.setsockopt(zmq.SUBSCRIBE, subscribe)
            if bind:
                self.sock.bind(endpoint)
            else:
                self.sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close(0)
            raise TransportError(f"cannot {'bind' if bind else 'connect'} {endpoint}: {exc}") from exc

    def _curve(self, c: Curve, bind: bool) -> None:
        if not zmq.has("curve"):
            raise ConfigError("CURVE requested but this libzmq has no CURVE support")
        if bind:
            if not c.secret:
                raise ConfigError(f"CURVE on bound {self.endpoint} needs curve_secret (the server's .key_secret)")
            pub, sec = _load(c.secret, True)
            if c.clients:
                if not Path(c.clients).is_dir():
                    raise ConfigError(f"curve_clients {c.clients} is not a directory")
                self.auth = ThreadAuthenticator(self.ctx)
                self.auth.start()
                self.auth.configure_curve(domain="*", location=c.clients)
            self.sock.curve_server = True
        else:
            if not c.server:
                raise ConfigError(f"CURVE on connecting {self.endpoint} needs curve_server (the server's .key)")
            server_pub, _ = _load(c.server, False)
            if c.secret:
                pub, sec = _load(c.secret, True)
            else:
                pub, sec = zmq.curve_keypair()
            self.sock.curve_serverkey = server_pub
        self.sock.curve_publickey = pub
        self.sock.curve_secretkey = sec

    def close(self, linger_ms: int | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(AttributeError, zmq.ZMQError):
            self.sock.close(self.linger_ms if linger_ms is None else linger_ms)
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        self.ctx.term()
