"""BrokerWsSource against the replaying Zeek-like WebSocket peer (tests/broker_peer.py)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from broker_peer import BROKER, BrokerPeer, Session, flow_events, flow_record, read_conn_log, real
from conftest import REPO

from sidecar.cli.score import DEFAULT_MODEL
from sidecar.flow import FIELDS, FlowBatch
from sidecar.scorer import make_scorer
from sidecar.sources import broker_codec as bc
from sidecar.sources.base import ReadStats
from sidecar.sources.broker_ws import FLOW_LAYOUT, BrokerWsSource, decode_flow
from sidecar.sources.zeek_tsv import read_path

SAMPLES = REPO / "sidecar" / "data" / "samples"
PORTSCAN = SAMPLES / "horizontal-portscan.conn.log"
CTU = SAMPLES / "ctu-sme-11.conn.log.labeled.gz"
pytestmark = pytest.mark.skipif(not BROKER.is_dir(), reason="shared Broker samples not present")


def collect(src: BrokerWsSource, until: Callable[[list[FlowBatch]], bool], limit: float = 15.0) -> list[FlowBatch]:
    """Iterate ``src`` in this thread; a helper thread closes it once ``until`` holds."""
    out: list[FlowBatch] = []
    t0 = time.monotonic()

    def stopper() -> None:
        while not until(out) and time.monotonic() - t0 < limit:
            time.sleep(0.02)
        src.close()

    th = threading.Thread(target=stopper, daemon=True)
    th.start()
    for b in src:
        out.append(b)
    th.join(timeout=5)
    return out


def n_rows(out: list[FlowBatch]) -> int:
    return sum(len(b) for b in out)


def sender(msgs: list[str], then: Callable[[Session], None] = Session.serve) -> Callable[[Session], None]:
    def plan(s: Session) -> None:
        for m in msgs:
            s.send(m)
        then(s)

    return plan


def reader_batch(path: Path) -> FlowBatch:
    return FlowBatch.concat(list(read_path(path, ReadStats())))


def assert_same_flows(got: FlowBatch, want: FlowBatch) -> None:
    assert len(got) == len(want)
    for f in FIELDS:
        g, w = got[f.name], want[f.name]
        if f.name == "ts":  # Broker timestamps carry milliseconds
            np.testing.assert_allclose(g, w, atol=1.001e-3, rtol=0)
        elif f.dtype == np.float64:
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-9, equal_nan=True)
        else:
            assert g.tolist() == w.tolist(), f.name


@pytest.mark.parametrize(
    ("conn_id_fields", "batch", "metadata"),
    [(6, 64, True), (5, 16, False), (4, 1, True)],
    ids=["zeek8-batched", "zeek7.1-no-metadata", "zeek6-single-events"],
)
def test_real_conn_log_decodes_end_to_end_and_scores_like_the_file_reader(
    conn_id_fields: int, batch: int, metadata: bool
) -> None:
    path = CTU if batch > 1 else PORTSCAN
    rows = read_conn_log(path)
    msgs = list(flow_events(rows, batch=batch, conn_id_fields=conn_id_fields, metadata=metadata))
    with BrokerPeer([sender(msgs)]) as peer:
        src = BrokerWsSource(peer.url, batch_size=300, idle_flush_ms=50)
        out = collect(src, lambda o: n_rows(o) >= len(rows))
    assert peer.handshakes == [["zeek/bnn/flows"]]
    assert src.stats.as_dict() == {"read": len(rows), "emitted": len(rows), "skipped": {}, "ignored": {}}
    assert max(len(b) for b in out) <= 300 and all(b.source == "broker" for b in out)
    got = FlowBatch.concat(out)
    want = reader_batch(path)
    assert_same_flows(got, want)
    # missing stays missing: S0 rows of the port scan have no service/duration/bytes
    assert np.isnan(got["duration"]).sum() == np.isnan(want["duration"]).sum() > 0
    scorer = make_scorer(DEFAULT_MODEL, "onnx")
    v_ws, v_file = scorer.score(got), scorer.score(want)
    assert v_ws.malicious.tolist() == v_file.malicious.tolist()
    assert v_ws.cls.tolist() == v_file.cls.tolist()
    np.testing.assert_array_equal(v_ws.score, v_file.score)
    if path == CTU:
        assert v_ws.malicious.sum() > 0


def test_custom_topics_and_broker_era_ack() -> None:
    rows = read_conn_log(PORTSCAN)[:5]
    msgs = list(flow_events(rows, topic="zeek/bnn/flows/0-of-2", batch=5, conn_id_fields=4, metadata=False))
    with BrokerPeer([sender(msgs)], ack="ack.json") as peer:
        src = BrokerWsSource(peer.url, topics=["zeek/bnn/flows/0-of-2", "zeek/bnn/flows/1-of-2"], idle_flush_ms=20)
        out = collect(src, lambda o: n_rows(o) >= 5)
    assert peer.handshakes == [["zeek/bnn/flows/0-of-2", "zeek/bnn/flows/1-of-2"]]
    assert n_rows(out) == 5 and src.connects == 1


ERROR_FILES = [
    "error.json",
    "error-invalid-data.json",
    "zeek-error-bad-event-args-err1.json",
    "zeek-error-bad-event-args-err2.json",
    "zeek-error-bad-event-args-err3.json",
    "zeek-error-bad-event-args-err4.json",
]


def _flow_event(args: list[bc.BrokerValue], name: str = "BNN::flow") -> str:
    return json.dumps(bc.encode_event("zeek/bnn/flows", name, args))


def test_errors_and_bad_input_are_counted_skips_and_good_flows_still_arrive() -> None:
    rows = read_conn_log(PORTSCAN)
    good = list(flow_events(rows[:10], batch=5))
    rec = bc.decode_message(good[0])
    assert isinstance(rec, bc.Event)
    one = rec.args[0].items[0]  # type: ignore[attr-defined]
    assert isinstance(one, bc.Vector)
    bad: dict[str, list[str | bytes]] = {
        "broker_error": [real(n) for n in ERROR_FILES],
        "malformed_message": [
            "How is it going?",  # the real input behind error.json
            b"\x00\xffbinary",
            (BROKER / "invalid" / "subscriptions-truncated.txt").read_text(),
            '{"type": "data-message", "topic": "zeek/bnn/flows"}',
        ],
        "unknown_data_type": [
            (BROKER / "invalid" / "event-args-unknown-data-type.json").read_text(),
            json.dumps({"type": "data-message", "topic": "zeek/bnn/flows",
                        **json.loads((BROKER / "invalid" / "unknown-data-type-phone.json").read_text())}),
        ],
        "unknown_data_type_in_record": [_with_phone_service(good[0])],
        "bad_event": [
            _flow_event([one, one]),  # wrong arity
            _flow_event([], "BNN::flows"),
            _flow_event([bc.Count(3)], "BNN::flows"),  # not a vector
        ],
        "bad_record": [
            _flow_event([bc.Vector(one.items[:-1])]),  # 13 fields
            _flow_event([bc.Vector((bc.NoneValue(), *one.items[1:]))]),  # required ts unset
            _flow_event([bc.Vector((*one.items[:3], bc.String("tcp"), *one.items[4:]))]),  # proto not an enum
            _flow_event([bc.Count(1)]),
        ],
    }
    ignored = [real("event-zeek8-hello.json"), real("data-message.json"), real("ack-zeek8.1.json")]
    msgs: list[str | bytes] = [*good[:1]]
    for group in bad.values():
        msgs += group
    msgs += ignored + good[1:]
    with BrokerPeer([sender(msgs)]) as peer:  # type: ignore[arg-type]
        src = BrokerWsSource(peer.url, idle_flush_ms=20)
        out = collect(src, lambda o: n_rows(o) >= 10)
    st = src.stats
    assert n_rows(out) == 10 and st.emitted == 10
    want = {k: len(v) for k, v in bad.items()}
    want["unknown_data_type"] += 5 * want.pop("unknown_data_type_in_record")  # 5 records, each skipped
    assert dict(st.skipped) == want
    assert dict(st.ignored) == {"other_event": 1, "data_message": 1, "ack": 1}
    assert st.read == st.emitted + sum(st.skipped.values())
    assert src.errors == {"deserialization_failed": 6}
    assert src.connects == 1  # errors do not close the connection (Zeek 8 behaviour)


def _with_phone_service(msg: str) -> str:
    """A real-shaped BNN::flows event whose records carry an unknown @data-type (service)."""
    obj = json.loads(msg)
    for rec in obj["data"][2]["data"][1]["data"][0]["data"]:
        rec["data"][4] = json.loads((BROKER / "invalid" / "unknown-data-type-phone.json").read_text())
    return json.dumps(obj)


def test_missing_optional_fields_stay_missing() -> None:
    row = {"ts": "1.5", "uid": "Cx", "id.orig_h": "2001:db8::1", "id.orig_p": "8", "id.resp_h": "2001:db8::2",
           "id.resp_p": "0", "proto": "icmp"}
    wire = json.loads(json.dumps(bc.encode(flow_record(row, conn_id_fields=6))))
    assert [x["@data-type"] for x in wire["data"][4:]] == ["none"] * 10
    flow = decode_flow(wire)
    assert flow["service"] is None and flow["duration"] is None and flow["orig_bytes"] is None
    assert (flow["orig_p"], flow["resp_p"], flow["proto"]) == (8, 0, "icmp")
    assert (flow["orig_flags"], flow["resp_flags"]) == (-1, -1)
    b = FlowBatch.from_columns({k: [v] for k, v in flow.items()}, "broker")
    assert np.isnan(b["duration"][0]) and np.isnan(b["orig_bytes"][0]) and b["service"][0] is None
    assert len(FLOW_LAYOUT) == 14


def test_huge_message_is_a_counted_skip_and_a_clean_reconnect() -> None:
    huge = real("transcripts/broker-recv-large-vector.json")  # 200-count vector, ~4 KB compact
    rows = read_conn_log(PORTSCAN)[:3]
    first = sender([huge], then=lambda s: s.recv_data(1, timeout=2))
    second = sender(list(flow_events(rows, batch=3)))
    with BrokerPeer([first, second]) as peer:
        src = BrokerWsSource(peer.url, max_message_bytes=len(huge) - 1, idle_flush_ms=20, reconnect_min_s=0.05)
        out = collect(src, lambda o: n_rows(o) >= 3)
    assert dict(src.stats.skipped) == {"message_too_large": 1}
    assert n_rows(out) == 3 and src.connects == 2 and peer.connections == 2


def test_server_drops_mid_stream_and_source_reconnects_without_losing_later_flows() -> None:
    rows = read_conn_log(CTU)
    msgs = list(flow_events(rows, batch=50))
    half = len(msgs) // 2
    with BrokerPeer([sender(msgs[:half], then=Session.drop), sender(msgs[half:])]) as peer:
        src = BrokerWsSource(peer.url, idle_flush_ms=20, reconnect_min_s=0.05)
        out = collect(src, lambda o: n_rows(o) >= len(rows))
    assert n_rows(out) == len(rows) and src.connects == 2
    assert FlowBatch.concat(out)["uid"].tolist() == [r["uid"] for r in rows]


def test_peer_that_never_acks_means_retries_and_close_still_works() -> None:
    with BrokerPeer(never_ack=True) as peer:
        src = BrokerWsSource(peer.url, ack_timeout_s=0.2, reconnect_min_s=0.05, reconnect_max_s=0.1)
        out = collect(src, lambda o: src.connect_failures >= 3, limit=10)
    assert out == [] and src.connects == 0 and src.connect_failures >= 3
    assert peer.connections >= 3 and all(h == ["zeek/bnn/flows"] for h in peer.handshakes)


def test_wrong_path_gets_zeeks_invalid_uri_error_instead_of_an_ack() -> None:
    with BrokerPeer() as peer:
        src = BrokerWsSource(peer.url.replace("/v1/messages/json", "/v1/nope"), reconnect_min_s=0.05,
                             reconnect_max_s=0.1)
        collect(src, lambda o: src.connect_failures >= 2, limit=10)
    assert src.errors["invalid_uri"] >= 2 and src.connects == 0
    assert src.stats.skipped["broker_error"] == src.errors["invalid_uri"]


def test_close_from_another_thread_ends_a_blocked_iteration_within_a_second() -> None:
    with BrokerPeer() as peer:  # acks, then sends nothing
        src = BrokerWsSource(peer.url)
        th = threading.Thread(target=lambda: list(src), daemon=True)
        th.start()
        deadline = time.monotonic() + 5
        while src.connects == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert src.connects == 1
        src.close()
        th.join(timeout=1.0)
        assert not th.is_alive()


def test_close_while_backing_off_against_a_dead_port() -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    src = BrokerWsSource(f"ws://127.0.0.1:{port}/v1/messages/json", reconnect_min_s=5, reconnect_max_s=5)
    th = threading.Thread(target=lambda: list(src), daemon=True)
    th.start()
    deadline = time.monotonic() + 5
    while src.connect_failures == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    src.close()
    th.join(timeout=1.0)
    assert not th.is_alive() and src.connect_failures >= 1


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def test_wss_with_ca_file(tmp_path: Path) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    rows = read_conn_log(PORTSCAN)[:4]
    with BrokerPeer([sender(list(flow_events(rows, batch=4)))], ssl_context=ctx) as peer:
        url = peer.url.replace("ws://", "wss://")
        untrusted = BrokerWsSource(url, reconnect_min_s=0.05, reconnect_max_s=0.1)
        collect(untrusted, lambda o: untrusted.connect_failures >= 1, limit=10)
        assert untrusted.connects == 0  # the self-signed cert is not in the system store
        src = BrokerWsSource(url, ca_file=str(cert), idle_flush_ms=20)
        out = collect(src, lambda o: n_rows(o) >= 4)
    assert n_rows(out) == 4 and src.connects == 1


def test_backoff_is_capped_exponential_with_jitter_and_resets_only_after_a_stable_session() -> None:
    import random

    from sidecar.transports.ws_client import Backoff

    b = Backoff(0.1, 2.0, rng=random.Random(7))
    delays = [b.next() for _ in range(8)]
    for n, d in enumerate(delays):
        cap = min(2.0, 0.1 * 2**n)
        assert cap / 2 <= d <= cap
    assert max(delays[5:]) <= 2.0 and min(delays[5:]) >= 1.0
    b.session_ended(0.5)  # accepted and dropped at once: keep backing off
    assert b.next() >= 1.0
    b.session_ended(60.0)
    assert b.next() <= 0.1


def test_bad_urls_and_app_names_are_config_errors() -> None:
    from sidecar.errors import ConfigError

    for url in ("http://127.0.0.1:1/v1/messages/json", "ws://:80/x", "127.0.0.1:27759"):
        with pytest.raises(ConfigError):
            BrokerWsSource(url)
    with pytest.raises(ConfigError):
        BrokerWsSource("ws://127.0.0.1:1/v1/messages/json", app_name="no spaces allowed")
    with pytest.raises(ConfigError):
        BrokerWsSource("wss://127.0.0.1:1/v1/messages/json", ca_file="/nonexistent/ca.pem")
