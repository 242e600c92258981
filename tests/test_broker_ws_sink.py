"""BrokerWsSink against the Zeek-like WebSocket peer: every published message is checked
against the Broker v1 schema and main.zeek's ``BNN::verdict`` signature by the peer."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from broker_peer import BROKER, BrokerPeer, Session, check_client_message, real
from conftest import REPO

from sidecar.cli.score import DEFAULT_MODEL
from sidecar.flow import FlowBatch
from sidecar.scorer import make_scorer
from sidecar.sinks.base import Sink
from sidecar.sinks.broker_ws import VERDICT_EVENT, BrokerWsSink, verdict_events
from sidecar.sources import broker_codec as bc
from sidecar.sources.base import ReadStats
from sidecar.sources.zeek_tsv import read_path
from sidecar.verdict import VerdictBatch

CTU = REPO / "sidecar" / "data" / "samples" / "ctu-sme-11.conn.log.labeled.gz"
pytestmark = pytest.mark.skipif(not BROKER.is_dir(), reason="shared Broker samples not present")


@cache
def ctu_verdicts() -> VerdictBatch:
    flows = FlowBatch.concat(list(read_path(CTU, ReadStats())))
    return make_scorer(DEFAULT_MODEL, "onnx").score(flows)


def wait_for(cond: Callable[[], bool], limit: float = 15.0) -> bool:
    deadline = time.monotonic() + limit
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    return cond()


def uids(events: list[bc.Event]) -> list[str]:
    return [e.args[0].value for e in events]  # type: ignore[attr-defined]


def test_malicious_verdicts_are_published_as_valid_bnn_verdict_events() -> None:
    v = ctu_verdicts()
    mal = np.flatnonzero(v.malicious)
    assert 0 < len(mal) < len(v)
    with BrokerPeer() as peer:
        sink = BrokerWsSink(peer.url)
        assert isinstance(sink, Sink)
        sink.write(v)
        assert wait_for(lambda: len(peer.events(VERDICT_EVENT)) >= len(mal))
        sink.close()
    assert peer.handshakes == [[]]  # publish-only
    assert peer.violations == []
    evs = peer.events(VERDICT_EVENT)
    assert uids(evs) == v.flows["uid"][mal].tolist()
    assert {e.topic for e in evs} == {"zeek/bnn/verdicts"}
    e0, i0 = evs[0], mal[0]
    _uid, cid, score, cls, stage, model = e0.args
    assert isinstance(cid, bc.Vector) and len(cid.items) == 6
    oh, op, rh, rp, proto, ctx = cid.items
    assert (str(oh.value), op, str(rh.value), rp) == (  # type: ignore[attr-defined]
        v.flows["orig_h"][i0], bc.Port(int(v.flows["orig_p"][i0]), v.flows["proto"][i0]),
        v.flows["resp_h"][i0], bc.Port(int(v.flows["resp_p"][i0]), v.flows["proto"][i0]))
    assert proto == bc.Count({"tcp": 6, "udp": 17, "icmp": 1}[v.flows["proto"][i0]]) and ctx == bc.NoneValue()
    assert score == bc.Real(float(v.score[i0])) and cls == bc.String(str(v.cls[i0]))
    assert stage == bc.Count(int(v.stage[i0])) and model == bc.String(v.model)
    assert e0.metadata is None
    assert sink.sent == len(mal) and sink.pending == 0 and sink.dropped == 0


def test_only_malicious_false_sends_every_verdict() -> None:
    v = ctu_verdicts().take(np.arange(40))
    with BrokerPeer() as peer:
        sink = BrokerWsSink(peer.url, only_malicious=False)
        sink.write(v)
        sink.flush()
        assert wait_for(lambda: len(peer.events(VERDICT_EVENT)) >= 40)
        sink.close()
    assert uids(peer.events(VERDICT_EVENT)) == v.flows["uid"].tolist() and peer.violations == []


def test_connection_dropped_mid_stream_no_verdict_is_lost() -> None:
    v = ctu_verdicts().take(np.arange(600))
    first = lambda s: (s.recv_data(100, timeout=10), s.drop())  # noqa: E731
    with BrokerPeer([first, Session.serve]) as peer:  # type: ignore[list-item]
        sink = BrokerWsSink(peer.url, only_malicious=False, reconnect_min_s=0.05)
        for i in range(0, 600, 50):  # a stream of writes while the server goes away
            sink.write(v.take(np.arange(i, i + 50)))
            time.sleep(0.01)
        assert wait_for(lambda: set(uids(peer.events(VERDICT_EVENT))) >= set(v.flows["uid"].tolist()))
        sink.close()
    assert peer.connections == 2 and sink.connects == 2 and peer.violations == []
    by_conn = [m for c, m in peer.received if c == 0]
    assert len(by_conn) == 100
    assert sink.sent >= 600 and sink.dropped == 0


def test_verdicts_written_while_zeek_is_down_are_sent_after_it_comes_up() -> None:
    v = ctu_verdicts().take(np.arange(30))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    sink = BrokerWsSink(f"ws://127.0.0.1:{port}/v1/messages/json", only_malicious=False,
                        reconnect_min_s=0.05, reconnect_max_s=0.2)
    sink.write(v)
    assert wait_for(lambda: sink.connect_failures >= 2, 5)
    assert sink.pending == 30 and sink.sent == 0
    sink.flush()  # not connected: returns at once, keeps the queue
    assert sink.pending == 30
    with BrokerPeer(port=port) as peer:
        assert wait_for(lambda: len(peer.events(VERDICT_EVENT)) >= 30)
        sink.close()
    assert uids(peer.events(VERDICT_EVENT)) == v.flows["uid"].tolist()


def test_bounded_queue_drops_oldest_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    v = ctu_verdicts().take(np.arange(20))
    sink = BrokerWsSink("ws://127.0.0.1:9/v1/messages/json", max_pending=5, only_malicious=False,
                        reconnect_min_s=1, flush_timeout_s=0.1)
    sink.write(v)
    assert sink.pending == 5 and sink.dropped == 15 and sink.queued == 20
    assert any("dropped 15 oldest" in r.getMessage() for r in caplog.records)
    sink.close()


def test_server_error_messages_are_counted() -> None:
    def plan(s: Session) -> None:
        s.send(real("zeek-error-bad-event-args-err2.json"))
        s.send(real("error.json"))
        s.serve()

    v = ctu_verdicts().take(np.arange(3))
    with BrokerPeer([plan]) as peer:
        sink = BrokerWsSink(peer.url, only_malicious=False)
        sink.write(v)
        assert wait_for(lambda: sum(sink.errors.values()) >= 2 and len(peer.events(VERDICT_EVENT)) >= 3)
        sink.close()
    assert sink.errors == {"deserialization_failed": 2} and sink.connects == 1


def test_encoding_edge_cases_and_peer_checks() -> None:
    flows = FlowBatch.from_columns(
        {"uid": ["a", None, "c", "d"], "orig_h": ["2001:db8::1", "10.0.0.1", "not-an-ip", "10.0.0.2"],
         "orig_p": [8, None, 1, 5], "resp_h": ["2001:db8::2", "10.0.0.9", "10.0.0.3", "10.0.0.4"],
         "resp_p": [0, None, 2, 6], "proto": ["icmp", None, "tcp", "132"]}, "test")
    n = len(flows)
    v = VerdictBatch(flows, np.array([0.9, np.nan, 0.5, 0.7]), np.full(n, np.nan), np.ones(n, bool),
                     np.array(["scan"] * n, dtype=object), np.array([2, 1, 2, 0], np.int8), "abc")
    msgs = list(verdict_events(v, "t"))
    assert msgs[2] is None  # no valid address: not sendable
    decoded = []
    for m in msgs:
        if m is None:
            continue
        ev, errs = check_client_message(m)
        assert errs == [] and isinstance(ev, bc.Event)
        decoded.append(ev)
    icmp, unknown, sctp = (e.args[1].items for e in decoded)  # type: ignore[attr-defined]
    assert icmp[1] == bc.Port(8, "icmp") and icmp[3] == bc.Port(0, "icmp") and icmp[4] == bc.Count(1)
    assert unknown[1] == bc.Port(0, "?") and unknown[4] == bc.NoneValue()
    assert sctp[1] == bc.Port(5, "?")
    assert decoded[1].args[0] == bc.String("") and decoded[1].args[2] == bc.Real(-1.0)
    # the peer's checker is not a rubber stamp
    bad = json.loads(msgs[0])  # type: ignore[arg-type]
    bad["data"][2]["data"][1]["data"][2] = {"@data-type": "count", "data": 1}  # score as count
    assert check_client_message(json.dumps(bad))[1]
    assert check_client_message("[]")[1] and check_client_message(b"x")[1]


def test_fast_encoder_is_identical_to_the_table_driven_codec() -> None:
    v = ctu_verdicts()
    for i, text in zip(range(50), verdict_events(v, "zeek/bnn/verdicts", only_malicious=False), strict=False):
        f = v.flows
        p = f["proto"][i]
        ref = bc.encode_event("zeek/bnn/verdicts", VERDICT_EVENT, [
            bc.String(f["uid"][i]),
            bc.Vector((bc.Address.from_data(f["orig_h"][i]), bc.Port(int(f["orig_p"][i]), p),
                       bc.Address.from_data(f["resp_h"][i]), bc.Port(int(f["resp_p"][i]), p),
                       bc.Count({"tcp": 6, "udp": 17, "icmp": 1}[p]), bc.NoneValue())),
            bc.Real(float(v.score[i])), bc.String(str(v.cls[i])), bc.Count(int(v.stage[i])), bc.String(v.model),
        ])
        assert isinstance(text, str) and json.loads(text) == ref


def test_zeek_round_trip_flows_in_scored_verdicts_out() -> None:
    """The whole loop against one Zeek-like peer: BNN::flows in, score, BNN::verdict back."""
    import threading

    from broker_peer import flow_events, read_conn_log

    from sidecar.sources.broker_ws import BrokerWsSource

    rows = read_conn_log(CTU)
    msgs = list(flow_events(rows, batch=64))

    def plan(s: Session) -> None:
        if s.topics:  # the subscriber (source) gets the flows; the publisher (sink) is served
            for m in msgs:
                s.send(m)
        s.serve()

    scorer = make_scorer(DEFAULT_MODEL, "onnx")
    with BrokerPeer([plan]) as peer:
        src = BrokerWsSource(peer.url, idle_flush_ms=20)
        sink = BrokerWsSink(peer.url)
        th = threading.Thread(target=lambda: [sink.write(scorer.score(b)) for b in src], daemon=True)
        th.start()
        assert wait_for(lambda: src.stats.emitted >= len(rows))
        want = int(ctu_verdicts().malicious.sum())
        assert wait_for(lambda: len(peer.events(VERDICT_EVENT)) >= want)
        src.close()
        th.join(timeout=2)
        sink.close()
    assert sorted(peer.handshakes, key=len) == [[], ["zeek/bnn/flows"]]
    assert peer.violations == [] and not th.is_alive()
    got = uids(peer.events(VERDICT_EVENT))
    mal = ctu_verdicts().flows["uid"][ctu_verdicts().malicious].tolist()
    assert sorted(got) == sorted(mal)


def test_the_service_runs_a_broker_ws_source_and_sink_against_zeek(tmp_path: Path) -> None:
    """`bnn-sidecar run` with only the WebSocket source and sink configured (sidecar.toml keys)."""
    import os
    import subprocess
    import sys
    import urllib.request

    from broker_peer import flow_events, read_conn_log

    pytest.importorskip("sidecar.service")
    rows = read_conn_log(CTU)
    msgs = list(flow_events(rows, batch=64))

    def plan(s: Session) -> None:
        if s.topics:
            for m in msgs:
                s.send(m)
        s.serve()

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    mport = s.getsockname()[1]
    s.close()
    want = int(ctu_verdicts().malicious.sum())
    with BrokerPeer([plan]) as peer:
        cfg = tmp_path / "sidecar.toml"
        cfg.write_text(f'[sidecar]\nengine = "numpy"\n[metrics]\nlisten = "127.0.0.1:{mport}"\n'
                       f'[[source]]\nkind = "broker_ws"\nurl = "{peer.url}"\ntopics = ["zeek/bnn/flows"]\n'
                       f'[[sink]]\nkind = "broker_ws"\nurl = "{peer.url}"\ntopic = "zeek/bnn/verdicts"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("BNN_SIDECAR_")}
        proc = subprocess.Popen([sys.executable, "-m", "sidecar.cli.main", "run", "--config", str(cfg)],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_for(lambda: len(peer.events(VERDICT_EVENT)) >= want, 60)
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read().decode()
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert peer.violations == [] and sorted(peer.handshakes, key=len) == [[], ["zeek/bnn/flows"]]
    assert f'bnn_sidecar_records_in_total{{source="broker_ws"}} {float(len(rows))}' in metrics
    got = uids(peer.events(VERDICT_EVENT))
    assert sorted(got) == sorted(ctu_verdicts().flows["uid"][ctu_verdicts().malicious].tolist())
