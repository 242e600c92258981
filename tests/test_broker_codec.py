"""Tests for sidecar.sources.broker_codec against real Broker/Zeek WebSocket messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.errors import ProtocolError
from sidecar.sources import broker_codec as bc

DATA = Path("/work/shared/data/broker")
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared Broker samples not present")


def _files(sub: str, pattern: str = "*") -> list[Path]:
    return sorted((DATA / sub).glob(pattern)) if DATA.is_dir() else []


def _transcript_messages() -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for path in _files("transcripts"):
        lines = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
        for i, line in enumerate(lines):
            obj = json.loads(line)
            msg = obj["message"] if "direction" in obj else obj
            out.append((f"{path.name}:{i}", msg))
    return out


@pytest.mark.parametrize("path", _files("types", "*.json"), ids=lambda p: p.name)
def test_types_round_trip(path: Path) -> None:
    obj = json.loads(path.read_text())
    value = bc.decode(obj)
    assert obj["@data-type"] == value.TAG
    assert bc.encode(value) == obj


@pytest.mark.parametrize("name_msg", _transcript_messages(), ids=lambda nm: nm[0])
def test_transcripts_decode_and_reencode(name_msg: tuple[str, Any]) -> None:
    _, msg = name_msg
    decoded = bc.decode_message(json.dumps(msg))
    assert isinstance(decoded, (bc.Ack, bc.Event, bc.DataMessage, bc.Error))
    if '1970-01-01T01:42:42"' not in json.dumps(msg):  # client sent a timestamp w/o fraction
        assert bc.encode_message(decoded) == msg


def test_client_timestamp_without_fraction_is_echoed_with_millis() -> None:
    ts = bc.decode({"@data-type": "timestamp", "data": "1970-01-01T01:42:42"})
    assert isinstance(ts, bc.Timestamp)
    assert ts.seconds == 6162.0
    assert bc.encode(ts)["data"] == "1970-01-01T01:42:42.000"


@pytest.mark.parametrize(
    "name",
    [
        "event-args-not-a-list.json",
        "event-args-unknown-data-type.json",
        "unknown-data-type-phone.json",
        "subscriptions-mixed.json",
        "subscriptions-numbers.json",
        "subscriptions-truncated.txt",
    ],
)
def test_invalid_inputs_raise(name: str) -> None:
    with pytest.raises(ProtocolError):
        bc.decode_message((DATA / "invalid" / name).read_bytes())


@pytest.mark.parametrize(
    ("name", "reply"),
    [
        ("event-args-missing-arg.json", "zeek-error-bad-event-args-err2.json"),
        ("event-args-wrong-types.json", "zeek-error-bad-event-args-err3.json"),
    ],
)
def test_semantically_invalid_events_decode_and_server_replies_error(name: str, reply: str) -> None:
    # Well-formed on the wire; only Zeek's event signature `ping(string, count)` rejects them.
    assert isinstance(bc.decode_message((DATA / "invalid" / name).read_bytes()), bc.Event)
    err = bc.decode_message((DATA / reply).read_bytes())
    assert err == bc.Error("deserialization_failed", "failed to create Zeek event")


def test_invalid_files_all_covered() -> None:
    assert len(_files("invalid")) == 8


@pytest.mark.parametrize("path", _files(".", "*error*.json"), ids=lambda p: p.name)
def test_error_replies(path: Path) -> None:
    msg = bc.decode_message(path.read_text())
    assert isinstance(msg, bc.Error) and msg.code and msg.context


@pytest.mark.parametrize("path", _files(".", "ack*.json"), ids=lambda p: p.name)
def test_acks(path: Path) -> None:
    msg = bc.decode_message(path.read_bytes())
    assert isinstance(msg, bc.Ack)
    assert msg == bc.Ack(**{k: v for k, v in json.loads(path.read_text()).items() if k != "type"})


def test_event_data_message() -> None:
    msg = bc.decode_message((DATA / "event-data-message.json").read_bytes())
    assert msg == bc.Event("/foo/bar", "event_1", (bc.Integer(42), bc.String("test")), None)


def test_event_with_metadata_and_zeek8_hello() -> None:
    msg = bc.decode_message((DATA / "event-data-message-with-metadata.json").read_bytes())
    assert isinstance(msg, bc.Event) and msg.metadata is not None
    key, ts = msg.metadata[0]
    assert key == 1 and bc.encode(ts) == {"@data-type": "timestamp", "data": "2023-04-18T14:13:14.000"}
    hello = bc.decode_message((DATA / "event-zeek8-hello.json").read_bytes())
    assert hello == bc.Event("zeek.test", "hello", (bc.Count(3),), ())


def test_plain_data_message() -> None:
    msg = bc.decode_message((DATA / "data-message.json").read_bytes())
    assert msg == bc.DataMessage("/foo/bar", bc.Count(1))


def test_encode_event_matches_real_message_and_round_trips() -> None:
    real = json.loads((DATA / "event-ping-from-client.json").read_text())
    built = bc.encode_event("/zeek/event/my_topic", "ping", [bc.String("Hello"), bc.Count(42)])
    assert built == real
    back = bc.decode_message(json.dumps(built))
    assert back == bc.Event("/zeek/event/my_topic", "ping", (bc.String("Hello"), bc.Count(42)))
    meta = [(1, bc.Timestamp.from_seconds(4711))]
    with_meta = bc.encode_event("t", "e", [], meta)
    assert bc.decode_message(json.dumps(with_meta)) == bc.Event("t", "e", (), tuple(meta))


def test_handshake() -> None:
    for name in ("handshake.json", "handshake-empty.json", "handshake-duplicate-topics.json"):
        topics = json.loads((DATA / name).read_text())
        assert json.loads(bc.handshake(topics)) == topics
    with pytest.raises(ProtocolError):
        bc.handshake([1, "/my_topic"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("text", "ns", "canonical"),
    [
        ("1500ms", 1_500_000_000, "1500ms"),
        ("2s", 2 * 10**9, "2s"),
        ("3ns", 3, "3ns"),
        ("7us", 7000, "7us"),
        ("1min", 60 * 10**9, "1min"),
        ("1h", 3600 * 10**9, "1h"),
        ("1d", 86400 * 10**9, "1d"),
        ("60s", 60 * 10**9, "1min"),
        ("0ms", 0, "0s"),
        ("-5s", -5 * 10**9, "-5s"),
    ],
)
def test_timespans(text: str, ns: int, canonical: str) -> None:
    value = bc.decode({"@data-type": "timespan", "data": text})
    assert value == bc.Timespan(ns)
    assert bc.encode(value)["data"] == canonical
    assert bc.Timespan.from_seconds(ns / 1e9) == value


@pytest.mark.parametrize("text", ["0/icmp", "80/tcp", "53/udp", "?/unknown", "8080/?"])
def test_ports(text: str) -> None:
    assert bc.encode(bc.decode({"@data-type": "port", "data": text}))["data"] == text


@pytest.mark.parametrize(
    "obj",
    [
        {"@data-type": "phone", "data": "555"},
        {"@data-type": "count", "data": -1},
        {"@data-type": "count", "data": 1.5},
        {"@data-type": "count", "data": 2**64},
        {"@data-type": "integer", "data": True},
        {"@data-type": "real", "data": "1"},
        {"@data-type": "real", "data": 10**400},
        {"@data-type": "none", "data": None},
        {"@data-type": "timespan", "data": "5 weeks"},
        {"@data-type": "timestamp", "data": "2022-13-40T00:00:00"},
        {"@data-type": "address", "data": "300.1.1.1"},
        {"@data-type": "subnet", "data": "10.0.0.0/33"},
        {"@data-type": "port", "data": "70000/tcp"},
        {"@data-type": "port", "data": "80/sctp"},
        {"@data-type": "vector", "data": 42},
        {"@data-type": "table", "data": [{"key": {"@data-type": "none", "data": {}}}]},
        {"data": 1},
        "count",
    ],
)
def test_malformed_values_raise(obj: Any) -> None:
    with pytest.raises(ProtocolError):
        bc.decode(obj)


def test_non_object_and_unknown_type_messages_raise() -> None:
    for raw in (b"How is it going?", b"[]", b'{"type": "hello"}', b'{"type": "ack"}', b"\xff"):
        with pytest.raises(ProtocolError):
            bc.decode_message(raw)


_scalars = st.one_of(
    st.integers(0, 2**64 - 1).map(bc.Count),
    st.integers(-(2**63), 2**63 - 1).map(bc.Integer),
    st.floats(allow_nan=False, allow_infinity=False).map(bc.Real),
    st.text().map(bc.String),
)
_values = st.recursive(
    _scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4).map(lambda xs: bc.Vector(tuple(xs))),
        st.lists(kids, max_size=4).map(lambda xs: bc.Set(tuple(xs))),
        st.lists(st.tuples(kids, kids), max_size=4).map(lambda xs: bc.Table(tuple(xs))),
    ),
    max_leaves=20,
)


@given(_values)
def test_property_value_round_trip(value: bc.BrokerValue) -> None:
    wire = json.loads(json.dumps(bc.encode(value)))
    assert bc.decode(wire) == value
    assert bc.encode(bc.decode(wire)) == wire


@given(st.text(), st.text(min_size=1), st.lists(_values, max_size=4))
def test_property_event_round_trip(topic: str, name: str, args: list[bc.BrokerValue]) -> None:
    raw = json.dumps(bc.encode_event(topic, name, args))
    assert bc.decode_message(raw) == bc.Event(topic, name, tuple(args))


# --- every Broker data type, property round trips (extends _scalars above) -------------------

_ips = st.ip_addresses()
_all_scalars = st.one_of(
    _scalars,
    st.just(bc.NoneValue()),
    st.booleans().map(bc.Boolean),
    st.text().map(bc.EnumValue),
    st.integers(-(2**63), 2**63 - 1).map(bc.Timespan),
    st.integers(0, 253402300799 * 10**9).map(bc.Timestamp),  # up to 9999-12-31T23:59:59
    _ips.map(bc.Address),
    _ips.flatmap(lambda ip: st.integers(0, ip.max_prefixlen).map(lambda n: bc.Subnet(ip, n))),
    st.builds(bc.Port, st.one_of(st.none(), st.integers(0, 65535)), st.sampled_from(["tcp", "udp", "icmp", "?"])),
)
_all_values = st.recursive(
    _all_scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4).map(lambda xs: bc.Vector(tuple(xs))),
        st.lists(kids, max_size=4).map(lambda xs: bc.Set(tuple(xs))),
        st.lists(st.tuples(kids, kids), max_size=4).map(lambda xs: bc.Table(tuple(xs))),
    ),
    max_leaves=20,
)


@given(_all_values)
def test_property_every_type_round_trips(value: bc.BrokerValue) -> None:
    wire = json.loads(json.dumps(bc.encode(value)))
    assert bc.decode(wire) == value
    assert bc.encode(bc.decode(wire)) == wire


def test_every_data_type_is_covered_by_real_examples_and_the_table() -> None:
    tags = {json.loads(p.read_text())["@data-type"] for p in _files("types", "*.json")}
    assert tags == set(bc.TYPES) == {
        "none", "boolean", "count", "integer", "real", "timespan", "timestamp", "string", "enum-value",
        "address", "subnet", "port", "vector", "set", "table"}


def test_unknown_data_type_is_its_own_protocol_error() -> None:
    with pytest.raises(bc.UnknownDataType):
        bc.decode_message((DATA / "invalid" / "event-args-unknown-data-type.json").read_bytes())
    with pytest.raises(bc.UnknownDataType):
        bc.decode(json.loads((DATA / "invalid" / "unknown-data-type-phone.json").read_text()))
    assert issubclass(bc.UnknownDataType, ProtocolError)


def test_all_types_transcript_has_the_extremes() -> None:
    msg = bc.decode_message((DATA / "transcripts" / "broker-recv-all-types.json").read_text())
    assert isinstance(msg, bc.DataMessage) and isinstance(msg.value, bc.Vector)
    values = set(msg.value.items)
    assert bc.Count(2**64 - 1) in values and bc.Integer(-(2**63)) in values and bc.Integer(2**63 - 1) in values
