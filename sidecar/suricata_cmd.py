"""Client for Suricata's unix command socket (``unix-command`` in suricata.yaml).

Protocol (Suricata 7, ``src/unix-manager.c``; the same one ``suricatasc`` speaks):
connect to the stream socket, send ``{"version": "0.2"}``, read the reply
(``{"return": "OK"}``), then send each command as one JSON object followed by a
newline, ``{"command": NAME, "arguments": {...}}``, and read one JSON reply object
``{"return": "OK"|"NOK", "message": ...}`` per command.

Dataset commands (verified against Suricata 7.0.10):
``dataset-add`` / ``dataset-remove`` / ``dataset-lookup`` take ``setname``, ``settype``
and ``datavalue``; for ``settype: "ip"`` the value is the textual IPv4 or IPv6
address (``string`` sets want base64, not used here). Replies seen:
``data added`` / ``data already in set`` (both OK), ``set not found or wrong type``
(NOK), ``failed to add data`` (NOK, bad value), ``data removed`` (OK),
``failed to remove data`` (NOK, not in set), ``item found in set`` (OK) /
``item not found in set`` (NOK).

Every wait is bounded by ``timeout``; socket and protocol failures raise
:class:`~sidecar.errors.TransportError` / :class:`~sidecar.errors.ProtocolError`.
A command that fails on a broken connection is retried once on a new connection
(Suricata closes the connection when it restarts).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any

from sidecar.errors import ProtocolError, TransportError

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "0.2"
MAX_REPLY = 1 << 20


@dataclass(frozen=True)
class Reply:
    ok: bool
    message: Any
    raw: dict[str, Any]


class SuricataCommandClient:
    """One connection to Suricata's command socket at ``path`` (see module doc)."""

    def __init__(self, path: str, timeout: float = 5.0) -> None:
        self.path = str(path)
        self.timeout = float(timeout)
        self._sock: socket.socket | None = None
        self._buf = b""
        self._lock = threading.Lock()

    # -- connection ----------------------------------------------------------

    def connect(self) -> None:
        with self._lock:
            self._connect()

    def _connect(self) -> None:
        self._close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.path)
        except OSError as exc:
            s.close()
            raise TransportError(f"cannot connect to Suricata command socket {self.path}: {exc}") from exc
        self._sock = s
        self._buf = b""
        rep = self._exchange({"version": PROTOCOL_VERSION})
        if not rep.ok:
            self._close()
            raise ProtocolError(f"Suricata refused protocol version {PROTOCOL_VERSION}: {rep.message!r}")

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buf = b""

    # -- commands ------------------------------------------------------------

    def command(self, name: str, arguments: dict[str, Any] | None = None) -> Reply:
        """Send one command and return Suricata's reply (connects, retries once)."""
        msg: dict[str, Any] = {"command": name}
        if arguments is not None:
            msg["arguments"] = arguments
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._sock is None:
                        self._connect()
                    return self._exchange(msg)
                except TransportError as exc:
                    if isinstance(exc, ProtocolError) or attempt == 2:
                        self._close()
                        raise
                    log.info("command socket %s: %s; reconnecting once", self.path, exc)
                    self._close()
        raise AssertionError("unreachable")

    def dataset_add(self, setname: str, settype: str, value: str) -> Reply:
        return self.command("dataset-add", {"setname": setname, "settype": settype, "datavalue": value})

    def dataset_remove(self, setname: str, settype: str, value: str) -> Reply:
        return self.command("dataset-remove", {"setname": setname, "settype": settype, "datavalue": value})

    def dataset_lookup(self, setname: str, settype: str, value: str) -> Reply:
        return self.command("dataset-lookup", {"setname": setname, "settype": settype, "datavalue": value})

    def version(self) -> str:
        rep = self.command("version")
        return str(rep.message)

    # -- wire ----------------------------------------------------------------

    def _exchange(self, msg: dict[str, Any]) -> Reply:
        s = self._sock
        if s is None:
            raise TransportError("not connected")
        try:
            s.sendall(json.dumps(msg).encode() + b"\n")
            obj = self._read_reply(s)
        except (TimeoutError, OSError) as exc:
            self._close()
            raise TransportError(f"command socket {self.path}: {exc or type(exc).__name__}") from exc
        if not isinstance(obj, dict) or obj.get("return") not in ("OK", "NOK"):
            self._close()
            raise ProtocolError(f"unexpected reply from Suricata: {obj!r}"[:300])
        return Reply(obj["return"] == "OK", obj.get("message"), obj)

    def _read_reply(self, s: socket.socket) -> Any:
        """Read one JSON object; Suricata ends replies with a newline, but we do not rely on it."""
        dec = json.JSONDecoder()
        while True:
            text = self._buf.lstrip()
            if text:
                try:
                    obj, end = dec.raw_decode(text.decode("utf-8", "replace"))
                except ValueError:
                    pass
                else:
                    rest = text.decode("utf-8", "replace")[end:]
                    self._buf = rest.encode()
                    return obj
            if len(self._buf) > MAX_REPLY:
                raise ProtocolError(f"reply from Suricata longer than {MAX_REPLY} bytes")
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionResetError("Suricata closed the command socket")
            self._buf += chunk

    def __enter__(self) -> SuricataCommandClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
