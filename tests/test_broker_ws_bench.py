"""Throughput benchmarks of the Broker WebSocket path (no network): decoding BNN::flows
events into flow batches and encoding BNN::verdict events. Run with
``pytest tests/test_broker_ws_bench.py --benchmark-enable``; by default (benchmarks
disabled) each runs once as a plain correctness test.

The decode benchmarks split the path: the whole ``_handle`` + ``_take`` path as shipped
(msgspec typed parse + columns), without msgspec (orjson + columnar decoder) and with
only the record-by-record reference decoder (the path before the fast decoders);
``orjson.loads`` alone; the typed path alone; and the columnar and the reference decoder
on already parsed records.
Each round is the 766 real flows of the CTU sample in BNN::flows events of 64."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from broker_peer import BROKER, flow_events, read_conn_log
from conftest import REPO

from sidecar.cli.score import DEFAULT_MODEL
from sidecar.flow import FlowBatch
from sidecar.scorer import make_scorer
from sidecar.sinks.broker_ws import verdict_events
from sidecar.sources.base import ReadStats
from sidecar.sources.broker_flow import decode_flow, decode_flows, decode_message
from sidecar.sources.broker_ws import BrokerWsSource, flow_event
from sidecar.sources.zeek_tsv import read_path

CTU = REPO / "sidecar" / "data" / "samples" / "ctu-sme-11.conn.log.labeled.gz"
pytestmark = pytest.mark.skipif(not BROKER.is_dir(), reason="shared Broker samples not present")


@pytest.fixture(scope="module")
def msgs() -> list[str]:
    return list(flow_events(read_conn_log(CTU), batch=64))


@pytest.fixture(scope="module")
def records(msgs: list[str]) -> list[list[Any]]:
    out = []
    for m in msgs:
        ev = flow_event(orjson.loads(m))
        assert ev is not None
        out.append(ev[2][0]["data"])
    return out


def _source_round(msgs: list[str]) -> int:
    src = BrokerWsSource("ws://127.0.0.1:9/v1/messages/json", batch_size=1 << 30)
    for m in msgs:
        src._handle(m)
    assert not src.stats.skipped
    return len(src._take())


def test_bench_decode_flows_events(benchmark: Any, msgs: list[str]) -> None:
    assert benchmark(_source_round, msgs) == 766  # real flows per round


def test_bench_decode_flows_events_orjson_columnar(benchmark: Any, msgs: list[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sidecar.sources.broker_ws.decode_message", lambda raw: None)  # as without msgspec
    assert benchmark(_source_round, msgs) == 766


def test_bench_decode_flows_events_reference_path(benchmark: Any, msgs: list[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sidecar.sources.broker_ws.decode_message", lambda raw: None)
    monkeypatch.setattr("sidecar.sources.broker_ws.decode_flows", lambda records: None)
    assert benchmark(_source_round, msgs) == 766


def test_bench_decode_message_typed(benchmark: Any, msgs: list[str]) -> None:
    if decode_message(msgs[0]) is None:
        pytest.skip("msgspec not installed")
    assert benchmark(lambda: sum(w[1] for w in map(decode_message, msgs) if w is not None)) == 766


def test_bench_orjson_parse_ceiling(benchmark: Any, msgs: list[str]) -> None:
    assert benchmark(lambda: len([orjson.loads(m) for m in msgs])) == len(msgs)


def test_bench_decode_parsed_fast(benchmark: Any, records: list[list[Any]]) -> None:
    def run() -> int:
        cols = [decode_flows(r) for r in records]
        return sum(len(c["ts"]) for c in cols if c is not None)

    assert benchmark(run) == 766


def test_bench_decode_parsed_reference(benchmark: Any, records: list[list[Any]]) -> None:
    assert benchmark(lambda: sum(1 for r in records for x in r if decode_flow(x))) == 766


def test_bench_encode_verdict_events(benchmark: Any) -> None:
    flows = FlowBatch.concat(list(read_path(CTU, ReadStats())))
    v = make_scorer(DEFAULT_MODEL, "onnx").score(flows)

    def run() -> int:
        return sum(m is not None for m in verdict_events(v, "zeek/bnn/verdicts", only_malicious=False))

    assert benchmark(run) == len(flows)
