"""Codec for Broker's WebSocket JSON data model (``/v1/messages/json``).

Every Broker value travels as ``{"@data-type": TAG, "data": ...}``. Each tag maps to one class
of :mod:`sidecar.sources.broker_values` (see ``TYPES``; all re-exported here); ``decode`` looks
the tag up in that table and ``encode`` asks the value for its tag and ``data``. Messages (ack,
error, data-message, event) are handled by ``decode_message``; ``encode_event`` and
``handshake`` build what a client sends. Anything malformed raises
:class:`sidecar.errors.ProtocolError`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.errors import ProtocolError
from sidecar.sources.broker_values import _TIMESPAN_RE as _TIMESPAN_RE
from sidecar.sources.broker_values import _UNITS_NS as _UNITS_NS
from sidecar.sources.broker_values import (
    TYPES,
    Address,
    Boolean,
    BrokerValue,
    Count,
    EnumValue,
    Integer,
    IPAddress,
    NoneValue,
    Port,
    Real,
    Set,
    String,
    Subnet,
    Table,
    Timespan,
    Timestamp,
    UnknownDataType,
    Vector,
    decode,
    encode,
)

__all__ = [
    "TYPES", "Ack", "Address", "Boolean", "BrokerValue", "Count", "DataMessage", "EnumValue", "Error", "Event",
    "IPAddress", "Integer", "Message", "NoneValue", "Port", "Real", "Set", "String", "Subnet", "Table", "Timespan",
    "Timestamp", "UnknownDataType", "Vector", "decode", "decode_message", "encode",
    "encode_event", "encode_message", "handshake", "message_from_json",
]

# --- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ack:
    endpoint: str
    version: str


@dataclass(frozen=True)
class Error:
    code: str
    context: str


@dataclass(frozen=True)
class DataMessage:
    """A data message whose payload is not a Zeek event."""

    topic: str
    value: BrokerValue


@dataclass(frozen=True)
class Event:
    """A Zeek event; ``metadata`` is None when the element is absent, () when empty."""

    topic: str
    name: str
    args: tuple[BrokerValue, ...]
    metadata: tuple[tuple[int, BrokerValue], ...] | None = None


Message = Ack | Error | DataMessage | Event


def _str_field(obj: dict[str, Any], key: str) -> str:
    val = obj.get(key)
    if not isinstance(val, str):
        raise ProtocolError(f"{obj.get('type')!r} message needs a string {key!r}, got {val!r}")
    return val


def _as_event(topic: str, value: BrokerValue) -> Event | None:
    """Event framing: vector[count 1, count 1, vector[name, vector args, (vector metadata)]]."""
    if not (isinstance(value, Vector) and type(value) is Vector and len(value.items) == 3):
        return None
    fmt, kind, body = value.items
    if fmt != Count(1) or kind != Count(1) or type(body) is not Vector:
        return None
    if len(body.items) not in (2, 3) or type(body.items[0]) is not String:
        raise ProtocolError(f"malformed event on {topic!r}: need [name, args(, metadata)]")
    name, args = body.items[0], body.items[1]
    if type(args) is not Vector:
        raise ProtocolError(f"event {name.value!r}: args must be a vector, got {args!r:.100}")
    metadata: tuple[tuple[int, BrokerValue], ...] | None = None
    if len(body.items) == 3:
        meta = body.items[2]
        if type(meta) is not Vector:
            raise ProtocolError(f"event {name.value!r}: metadata must be a vector")
        pairs = []
        for pair in meta.items:
            if type(pair) is not Vector or len(pair.items) != 2 or not isinstance(pair.items[0], Count):
                raise ProtocolError(f"event {name.value!r}: bad metadata entry {pair!r:.100}")
            pairs.append((pair.items[0].value, pair.items[1]))
        metadata = tuple(pairs)
    return Event(topic, name.value, args.items, metadata)


def decode_message(raw: bytes | str) -> Message:
    """Decode one WebSocket text frame into an :data:`Message`."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"message is not valid JSON: {exc}") from exc
    return message_from_json(obj)


def message_from_json(obj: Any) -> Message:
    """:func:`decode_message` for an already parsed JSON document."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"message must be a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "ack":
        return Ack(_str_field(obj, "endpoint"), _str_field(obj, "version"))
    if kind == "error":
        return Error(_str_field(obj, "code"), _str_field(obj, "context"))
    if kind == "data-message":
        topic = _str_field(obj, "topic")
        value = decode(obj)
        return _as_event(topic, value) or DataMessage(topic, value)
    raise ProtocolError(f"unknown message type {kind!r}")


def encode_event(
    topic: str,
    name: str,
    args: Sequence[BrokerValue],
    metadata: Sequence[tuple[int, BrokerValue]] | None = None,
) -> dict[str, Any]:
    """Build the data-message Zeek expects for publishing event ``name(*args)`` on ``topic``."""
    body: list[BrokerValue] = [String(name), Vector(tuple(args))]
    if metadata is not None:
        body.append(Vector(tuple(Vector((Count(k), v)) for k, v in metadata)))
    msg: dict[str, Any] = {"type": "data-message", "topic": topic}
    msg.update(encode(Vector((Count(1), Count(1), Vector(tuple(body))))))
    return msg


def encode_message(msg: Message) -> dict[str, Any]:
    """Inverse of :func:`decode_message` (as a JSON object)."""
    if isinstance(msg, Ack):
        return {"type": "ack", "endpoint": msg.endpoint, "version": msg.version}
    if isinstance(msg, Error):
        return {"type": "error", "code": msg.code, "context": msg.context}
    if isinstance(msg, Event):
        meta = msg.metadata
        return encode_event(msg.topic, msg.name, msg.args, meta)
    return {"type": "data-message", "topic": msg.topic, **encode(msg.value)}


def handshake(topics: list[str]) -> bytes:
    """The first frame a client sends: the JSON array of topics to subscribe to."""
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        raise ProtocolError(f"subscriptions must be a list of strings, got {topics!r}")
    return json.dumps(topics).encode()
