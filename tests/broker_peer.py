"""A small Zeek-like WebSocket server for the Broker WebSocket tests.

It listens on 127.0.0.1 (ephemeral port) with the real ``websockets`` server, serves only
``/v1/messages/json`` and behaves like Zeek 8's server where the protocol says so:

* a wrong path gets the real ``invalid_uri`` error (``zeek-error-invalid-uri.json``);
* the first client frame must be a JSON array of strings, else the real
  ``deserialization_failed`` reply (``zeek-error-subscriptions-*.json``) and close;
* the ack is a real one (``ack-zeek8.json`` / ``ack.json``);
* every later client frame is checked against the Broker v1 JSON schema
  (``v1-broker-out.schema.json``, ``DataMessage``), decoded as a Zeek event, and a
  ``BNN::verdict`` event's arguments are type-checked against main.zeek's signature; a
  bad one is recorded in ``violations`` and answered with Zeek's real
  ``failed to create Zeek event`` error (``zeek-error-bad-event-args-err2.json``).

What a connection does after the ack is a *plan* (one per connection, the last one
repeats): a function of a :class:`Session`. ``flow_events`` turns a real Zeek conn.log
(TSV) into ``BNN::flow``/``BNN::flows`` events encoded the way Zeek serializes a
``BNN::Flow`` record (positional vector, ``none`` for unset fields, timestamps at
Broker's millisecond precision, ``conn_id`` with the 4/5/6 fields of Zeek 6-7.0/7.1/8+).
"""

from __future__ import annotations

import copy
import gzip
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
from conftest import SHARED
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from sidecar.sources import broker_codec as bc

BROKER = SHARED / "broker"
PATH = "/v1/messages/json"
SCHEMA = json.loads((BROKER / "v1-broker-out.schema.json").read_text()) if BROKER.is_dir() else {}


def real(name: str) -> str:
    """A real message file from shared/data/broker, as compact JSON text."""
    return json.dumps(json.loads((BROKER / name).read_text()), separators=(",", ":"))


def _shallow(name: str) -> jsonschema.protocols.Validator:
    """The schema definition ``name`` without its recursive ``items`` (walked by hand below:
    dispatching on ``@data-type`` is what the schema's ``anyOf`` does, but ~100x faster)."""
    d = copy.deepcopy(SCHEMA["definitions"][name])
    d.get("properties", {}).get("data", {}).pop("items", None)
    d.pop("$ref", None)
    return jsonschema.Draft202012Validator(d)


DEFS = SCHEMA.get("definitions", {})
#: ``@data-type`` -> validator of that definition (None, Boolean, Count, ..., Table)
BY_TAG = {d["properties"]["@data-type"]["const"]: _shallow(n) for n, d in DEFS.items()
          if "@data-type" in d.get("properties", {})}
DATA_MESSAGE = _shallow("DataMessage") if DEFS else None


def schema_errors(value: Any, where: str = "$") -> list[str]:
    """Errors of one Broker value against v1-broker-out.schema.json's ``Data``."""
    tag = value.get("@data-type") if isinstance(value, dict) else None
    if tag not in BY_TAG:
        return [f"{where}: no schema definition for {tag!r}"]
    errs = [f"{where}: {e.message}" for e in BY_TAG[tag].iter_errors(value)]
    data = value.get("data")
    if tag in ("vector", "set") and isinstance(data, list):
        for i, item in enumerate(data):
            errs += schema_errors(item, f"{where}[{i}]")
    elif tag == "table" and isinstance(data, list):
        for i, kv in enumerate(data):
            if not isinstance(kv, dict) or "key" not in kv or "value" not in kv:
                errs.append(f"{where}[{i}]: table entry needs key and value")
                continue
            errs += schema_errors(kv["key"], f"{where}[{i}].key") + schema_errors(kv["value"], f"{where}[{i}].value")
    return errs


#: what a BNN::verdict argument must decode to (main.zeek: uid string, id conn_id,
#: score double, cls string, stage count, model string)
VERDICT_ARGS = (bc.String, "conn_id", bc.Real, bc.String, bc.Count, bc.String)


def check_verdict(ev: bc.Event) -> list[str]:
    out = []
    if len(ev.args) != len(VERDICT_ARGS):
        return [f"BNN::verdict has {len(ev.args)} args, main.zeek declares {len(VERDICT_ARGS)}"]
    for i, (want, got) in enumerate(zip(VERDICT_ARGS, ev.args, strict=True)):
        if want == "conn_id":
            items = got.items if type(got) is bc.Vector else ()
            ok = (len(items) >= 4 and isinstance(items[0], bc.Address) and isinstance(items[1], bc.Port)
                  and isinstance(items[2], bc.Address) and isinstance(items[3], bc.Port)
                  and all(isinstance(x, (bc.Count, bc.NoneValue)) for x in items[4:5])
                  and all(isinstance(x, (bc.Vector, bc.NoneValue)) for x in items[5:6]) and len(items) <= 6)
            if not ok:
                out.append(f"arg {i} is not a conn_id: {got!r:.200}")
        elif type(got) is not want:
            out.append(f"arg {i} is {type(got).__name__}, want {want.__name__}")  # type: ignore[union-attr]
    return out


def check_client_message(text: str | bytes) -> tuple[bc.Message | None, list[str]]:
    """Decode and validate one frame a (publishing) client sent after its handshake."""
    if isinstance(text, bytes):
        return None, ["binary frame (Zeek accepts only text frames)"]
    try:
        obj = json.loads(text)
    except ValueError as exc:
        return None, [f"not JSON: {exc}"]
    errs = [e.message for e in DATA_MESSAGE.iter_errors(obj)] if DATA_MESSAGE else []
    errs += schema_errors(obj)
    if not isinstance(obj, dict) or obj.get("type") != "data-message":
        errs.append("client may only send data messages after the handshake")
    try:
        msg = bc.decode_message(text)
    except bc.ProtocolError as exc:
        return None, [*errs, f"undecodable: {exc}"]
    if not isinstance(msg, bc.Event):
        errs.append("data message is not a Zeek event")
    elif msg.name == "BNN::verdict":
        errs += check_verdict(msg)
    return msg, errs


class Session:
    """One accepted client connection, after the handshake and ack."""

    def __init__(self, peer: BrokerPeer, ws: ServerConnection, index: int, topics: list[str]) -> None:
        self.peer, self.ws, self.index, self.topics = peer, ws, index, topics

    def send(self, text: str | bytes) -> None:
        self.ws.send(text)

    def recv_data(self, n: int, timeout: float = 10.0) -> list[bc.Message]:
        """Receive, validate and record up to ``n`` client messages (stops at timeout/close)."""
        got: list[bc.Message] = []
        deadline = time.monotonic() + timeout
        while len(got) < n and time.monotonic() < deadline and not self.peer.stopping.is_set():
            try:
                raw = self.ws.recv(timeout=0.1)
            except TimeoutError:
                continue
            except ConnectionClosed:
                break
            msg, errs = check_client_message(raw)
            with self.peer.lock:
                self.peer.received.append((self.index, msg))
                self.peer.violations += errs
            if errs:
                self.ws.send(real("zeek-error-bad-event-args-err2.json"))
            if msg is not None:
                got.append(msg)
        return got

    def serve(self) -> None:
        """Keep receiving until the client leaves or the peer stops."""
        while not self.peer.stopping.is_set():
            if not self.recv_data(10**9, timeout=0.5) and self.ws.state.name != "OPEN":
                return

    def drop(self) -> None:
        """Drop the TCP connection without a closing handshake (like a crashed Zeek)."""
        self.ws.socket.close()


Plan = Callable[[Session], None]


class BrokerPeer:
    def __init__(self, plans: list[Plan] | None = None, ack: str = "ack-zeek8.json", never_ack: bool = False,
                 ssl_context: ssl.SSLContext | None = None, port: int = 0) -> None:
        self.ssl_context = ssl_context
        self.listen_port = port
        self.plans = plans or [Session.serve]
        self.ack = ack
        self.never_ack = never_ack
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.handshakes: list[Any] = []
        self.received: list[tuple[int, bc.Message | None]] = []
        self.violations: list[str] = []
        self.connections = 0
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.socket.getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{PATH}"

    def events(self, name: str) -> list[bc.Event]:
        with self.lock:
            return [m for _, m in self.received if isinstance(m, bc.Event) and m.name == name]

    def __enter__(self) -> BrokerPeer:
        self._server = serve(self._handle, "127.0.0.1", self.listen_port, ssl=self.ssl_context, compression=None, max_size=None,
                             ping_interval=None, open_timeout=5, close_timeout=1)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._thread.join(timeout=5)

    def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        if ws.request.path != PATH:
            ws.send(real("zeek-error-invalid-uri.json"))
            return
        try:
            first = ws.recv(timeout=5)
        except (TimeoutError, ConnectionClosed):
            return
        try:
            topics = json.loads(first)
        except ValueError:
            topics = None
        with self.lock:
            self.handshakes.append(topics)
            index = self.connections
            self.connections += 1
        if not isinstance(topics, list):
            ws.send(real("zeek-error-subscriptions-broken-array.json"))
            return
        if not all(isinstance(t, str) for t in topics):
            ws.send(real("zeek-error-subscriptions-non-string.json"))
            return
        if self.never_ack:
            self.stopping.wait(30)
            return
        ws.send(real(self.ack))
        self.plans[min(index, len(self.plans) - 1)](Session(self, ws, index, topics))


# --- Zeek-side encoding of real conn.log records --------------------------------------------


def read_conn_log(path: Path) -> list[dict[str, str | None]]:
    """Rows of a Zeek TSV conn.log ('-' -> None); independent of the sidecar's reader."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows: list[dict[str, str | None]] = []
    fields: list[str] = []
    with opener(path, "rt") as fh:  # type: ignore[operator]
        for line in fh:
            line = line.rstrip("\n")
            if line.lstrip().startswith("#fields"):
                fields = line.lstrip().split("\t")[1:]
            elif line and not line.lstrip().startswith("#"):
                vals = line.split("\t")
                rows.append({k: (None if v == "-" else v) for k, v in zip(fields, vals, strict=False)})
    return rows


def _opt(v: str | None, make: Callable[[str], bc.BrokerValue]) -> bc.BrokerValue:
    return bc.NoneValue() if v is None else make(v)


def flow_record(row: dict[str, str | None], conn_id_fields: int = 6) -> bc.Vector:
    """A BNN::Flow value as Zeek serializes it (field order of main.zeek's ``type Flow``)."""
    proto = row["proto"] or "unknown_transport"
    pp = proto if proto in ("tcp", "udp", "icmp") else "?"
    cid: list[bc.BrokerValue] = [
        bc.Address.from_data(row["id.orig_h"]), bc.Port(int(row["id.orig_p"] or 0), pp),
        bc.Address.from_data(row["id.resp_h"]), bc.Port(int(row["id.resp_p"] or 0), pp),
    ]
    if conn_id_fields >= 5:  # Zeek 7.1+: proto (IP protocol number, default 65535)
        cid.append(bc.Count({"tcp": 6, "udp": 17, "icmp": 1}.get(proto, 65535)))
    if conn_id_fields >= 6:  # Zeek 8+: ctx (empty record by default)
        cid.append(bc.Vector(()))
    ts_ms = int(float(row["ts"] or 0) * 1000)  # Broker's JSON timestamps carry milliseconds
    return bc.Vector((
        bc.Timestamp(ts_ms * 10**6),
        bc.String(row["uid"] or ""),
        bc.Vector(tuple(cid)),
        bc.EnumValue(proto),
        _opt(row.get("service"), bc.String),
        _opt(row.get("duration"), lambda s: bc.Timespan(int(float(s) * 10**9))),
        _opt(row.get("orig_bytes"), lambda s: bc.Count(int(s))),
        _opt(row.get("resp_bytes"), lambda s: bc.Count(int(s))),
        _opt(row.get("conn_state"), bc.String),
        _opt(row.get("history"), bc.String),
        _opt(row.get("orig_pkts"), lambda s: bc.Count(int(s))),
        _opt(row.get("orig_ip_bytes"), lambda s: bc.Count(int(s))),
        _opt(row.get("resp_pkts"), lambda s: bc.Count(int(s))),
        _opt(row.get("resp_ip_bytes"), lambda s: bc.Count(int(s))),
    ))


def flow_events(rows: list[dict[str, str | None]], topic: str = "zeek/bnn/flows", batch: int = 64,
                conn_id_fields: int = 6, metadata: bool = True) -> Iterator[str]:
    """BNN::flows events of ``batch`` records (``batch=1``: BNN::flow events), as Zeek 8 frames
    them (empty metadata vector) or without the metadata element (``metadata=False``)."""
    meta: list[tuple[int, bc.BrokerValue]] | None = [] if metadata else None
    for i in range(0, len(rows), batch):
        recs = [flow_record(r, conn_id_fields) for r in rows[i:i + batch]]
        if batch == 1:
            msg = bc.encode_event(topic, "BNN::flow", recs, meta)
        else:
            msg = bc.encode_event(topic, "BNN::flows", [bc.Vector(tuple(recs))], meta)
        yield json.dumps(msg, separators=(",", ":"))
