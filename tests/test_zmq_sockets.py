"""The ZeroMQ endpoints over real sockets: bad messages counted, rejects, dedup, parts, close(), CURVE."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from sidecar.errors import ConfigError, SinkError
from sidecar.flow import FlowBatch
from sidecar.scorer import make_scorer
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path
from sidecar.transports import zmq_wire as wire
from sidecar.transports.zmq_common import keygen
from sidecar.transports.zmq_flow import ZmqFlowSource, ZmqVerdictSink, ZmqVerdictSource
from sidecar.transports.zmq_ship import Shipper
from sidecar.verdict import VerdictBatch

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sidecar" / "data" / "samples" / "vertical-portscan.conn.json.log"
MODEL = REPO / "sidecar" / "data" / "model" / "bnn.onnx"


@pytest.fixture(scope="module")
def batch() -> FlowBatch:
    return next(iter(read_path(SAMPLE, "auto", ReadStats())))


@pytest.fixture(scope="module")
def verdicts(batch: FlowBatch) -> VerdictBatch:
    return make_scorer(MODEL, "numpy").score(batch)


def wait_for(cond: Any, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.02)
    assert cond(), "condition not reached in time"


class Pump:
    """Iterate a source in a thread (as the service does); stop it with close() and join (bounded)."""

    def __init__(self, src: Any) -> None:
        self.src = src
        self.items: list[Any] = []
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        for x in self.src:
            self.items.append(x)

    def wait_for(self, cond: Any, timeout: float = 10.0) -> None:
        wait_for(cond, timeout)

    def stop(self) -> None:
        self.src.close()
        self.t.join(timeout=5)
        assert not self.t.is_alive()


def push_sock(ep: str) -> Iterator[zmq.Socket[Any]]:
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, 1000)
    s.connect(ep)
    yield s
    s.close()
    ctx.term()


def test_flow_source_counts_garbage_rejects_bad_body_and_yields_good(tmp_path: Path, batch: FlowBatch) -> None:
    f_ep, v_ep, a_ep = (f"ipc://{tmp_path}/{x}" for x in "fva")
    coll = ZmqVerdictSource(v_ep, acks=a_ep)
    cp = Pump(coll)
    src = ZmqFlowSource(f_ep, bind=True, rejects=v_ep)
    sp = Pump(src)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"s1\0")
    sub.connect(a_ep)
    try:
        for s in push_sock(f_ep):
            good = wire.encode_flows(batch, "s1", 4)
            obj = msgpack.unpackb(good, raw=False)
            obj["cols"]["duration"][1] = obj["cols"]["duration"][1][:-8]  # header fine, body wrong
            time.sleep(0.3)  # let the SUB connect before the reject's ack is published
            for m in (b"garbage", msgpack.packb({"v": 9}), msgpack.packb(obj, use_bin_type=True), good):
                s.send(m)
        sp.wait_for(lambda: len(sp.items) == 1)
        cp.wait_for(lambda: coll.rejected_batches == 1)
        assert src.stats.skipped == {"bad-message": 2, "protocol": 50}
        assert src.stats.emitted == 50 and src.stats.read == 100
        got = sp.items[0]
        assert got.extra["_zmq_seq"].tolist() == [4] * 50 and got.extra["_zmq_row"].tolist() == list(range(50))
        assert coll.stats.skipped == {"rejected:protocol": 50}
        assert sub.poll(5000)
        topic, payload = sub.recv_multipart()
        assert topic == b"s1\0" and wire.decode_acks(*wire.unpack(payload)) == [(4, "rejected", "protocol")]
    finally:
        sub.close(0)
        ctx.term()
        sp.stop()
        cp.stop()


def test_close_from_another_thread_ends_iteration(tmp_path: Path) -> None:
    for src in (ZmqFlowSource(f"ipc://{tmp_path}/x", bind=True), ZmqVerdictSource(f"ipc://{tmp_path}/y")):
        p = Pump(src)
        time.sleep(0.3)
        t0 = time.monotonic()
        p.stop()  # joins with a bound; the contract is ~1 s
        assert time.monotonic() - t0 < 3.0


def with_zmq_extras(b: FlowBatch, stream: str, seq: int) -> FlowBatch:
    n = len(b)
    ex = {"_zmq_stream": np.full(n, stream, dtype=object), "_zmq_seq": np.full(n, seq, dtype=np.int64),
          "_zmq_row": np.arange(n, dtype=np.int32), "_zmq_total": np.full(n, n, dtype=np.int32)}
    return FlowBatch(b.cols, b.source, b.label, ex, b.origin)


def test_collector_dedups_and_reassembles_parts(tmp_path: Path, verdicts: VerdictBatch) -> None:
    v_ep = f"ipc://{tmp_path}/v"
    coll = ZmqVerdictSource(v_ep, dedup_window=8)
    cp = Pump(coll)
    sink = ZmqVerdictSink(v_ep)
    try:
        v0 = VerdictBatch(with_zmq_extras(verdicts.flows, "w", 0), verdicts.score, verdicts.score2,
                          verdicts.malicious, verdicts.cls, verdicts.stage, verdicts.model)
        v1 = VerdictBatch(with_zmq_extras(verdicts.flows, "w", 1), *[getattr(verdicts, k) for k in
                          ("score", "score2", "malicious", "cls", "stage", "model")])
        sink.write(v0)
        sink.write(v0)  # a resend scored by another worker: must not be written twice
        # batch 1 arrives as two parts of a re-batched service (odd rows, then even rows), then whole again
        idx = np.arange(len(v1))
        sink.write(v1.take(idx % 2 == 1))
        sink.write(v1.take(idx % 2 == 0))
        sink.write(VerdictBatch.concat([v1.take(idx < 10), v0.take(idx < 3)]))  # mixed: dup part + dup rows
        sink.write(verdicts)  # not from a zmq stream: the sink's own stream
        cp.wait_for(lambda: len(cp.items) == 3 and coll.duplicates >= 2)
        time.sleep(0.3)
        assert len(cp.items) == 3
        a, b, c = cp.items
        for got in (a, b):
            assert got.flows["uid"].tolist() == verdicts.flows["uid"].tolist()
            assert got.score.tolist() == verdicts.score.tolist() and got.cls.tolist() == verdicts.cls.tolist()
        assert c.flows["uid"].tolist() == verdicts.flows["uid"].tolist()
        assert coll.batches == 3 and coll.stats.emitted == 3 * len(verdicts)
    finally:
        sink.close()
        cp.stop()


def test_sink_send_timeout_raises_sink_error(tmp_path: Path, verdicts: VerdictBatch) -> None:
    sink = ZmqVerdictSink(f"ipc://{tmp_path}/nobody", hwm=1, send_timeout=0.5)
    try:
        with pytest.raises(SinkError):  # the first message(s) wait in the pipe for the peer (HWM 1)
            for _ in range(5):
                sink.write(verdicts)
    finally:
        sink.close()


def test_curve_encrypts_and_authenticates(tmp_path: Path, batch: FlowBatch) -> None:
    if not zmq.has("curve"):
        pytest.skip("libzmq without CURVE")
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    srv_pub, srv_sec = keygen(keys, "ship")
    cli_pub, cli_sec = keygen(keys, "worker")
    _, other_sec = keygen(keys, "intruder")
    allowed.mkdir()
    (allowed / "worker.key").write_bytes(Path(cli_pub).read_bytes())
    with socket_port() as port:
        ep = f"tcp://127.0.0.1:{port}"
    sh = Shipper(ep, curve_secret=srv_sec, curve_clients=str(allowed), hwm=4)
    pumps = [Pump(ZmqFlowSource(ep, curve_server=srv_pub, curve_secret=s)) for s in (other_sec, cli_sec)]
    try:
        sent = [sh.send(batch) for _ in range(4)]
        pumps[1].wait_for(lambda: len(pumps[1].items) == 4)
        time.sleep(0.5)
        assert pumps[0].items == []  # not in the allowed directory: the handshake is refused
        assert pumps[1].items[0]["uid"].tolist() == batch["uid"].tolist()
        assert sent == [True] * 4
    finally:
        for p in pumps:
            p.stop()
        sh.close()
    with pytest.raises(ConfigError):
        ZmqFlowSource(ep, curve_server=str(tmp_path / "missing.key"))


class socket_port:
    def __enter__(self) -> int:
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        port: int = self.s.getsockname()[1]
        return port

    def __exit__(self, *a: object) -> None:
        self.s.close()


def test_collector_token_protocol_acks_only_after_commit(tmp_path: Path, verdicts: VerdictBatch) -> None:
    """As the service uses it: take_token() in the source thread, commit() later from another thread."""
    v_ep, a_ep = f"ipc://{tmp_path}/v", f"ipc://{tmp_path}/a"
    coll = ZmqVerdictSource(v_ep, acks=a_ep)
    tokens: list[Any] = []

    def pump() -> None:
        for _ in coll:
            tokens.append(coll.take_token())

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"w\0")
    sub.connect(a_ep)
    sink = ZmqVerdictSink(v_ep)
    try:
        time.sleep(0.3)
        v0 = VerdictBatch(with_zmq_extras(verdicts.flows, "w", 0), verdicts.score, verdicts.score2,
                          verdicts.malicious, verdicts.cls, verdicts.stage, verdicts.model)
        v1 = VerdictBatch(with_zmq_extras(verdicts.flows, "w", 1), verdicts.score, verdicts.score2,
                          verdicts.malicious, verdicts.cls, verdicts.stage, verdicts.model)
        sink.write(v0)
        wait_for(lambda: len(tokens) == 1)
        assert tokens == [("w", 0)]
        sink.write(v0)  # a copy while the first is not handled yet: dropped, not acked
        wait_for(lambda: coll.duplicates == 1)
        assert not sub.poll(500)  # not handled yet: no ack
        coll.commit(tokens[0])
        assert sub.poll(5000)
        assert wire.decode_acks(*wire.unpack(sub.recv_multipart()[1])) == [(0, "ok", None)]
        sink.write(v1)
        wait_for(lambda: len(tokens) == 2)
        coll.close()  # the service stops: iteration ends with batch 1 yielded but not yet handled
        t.join(timeout=5)
        assert not t.is_alive()
        coll.commit(tokens[1])  # the scoring thread finishes it afterwards: the ack still goes out
        assert sub.poll(5000)
        assert wire.decode_acks(*wire.unpack(sub.recv_multipart()[1])) == [(1, "ok", None)]
        assert coll.batches == 2 and coll.stats.emitted == 2 * len(verdicts)
    finally:
        sub.close(0)
        ctx.term()
        sink.close()
        coll.close()


def test_ship_can_connect_to_a_binding_worker(tmp_path: Path, batch: FlowBatch) -> None:
    ep = f"ipc://{tmp_path}/w"
    p = Pump(ZmqFlowSource(ep, bind=True))
    sh = Shipper(ep, bind=False)
    try:
        assert sh.send(batch) and not sh.tracking  # no acks endpoint: fire-and-forget
        p.wait_for(lambda: len(p.items) == 1)
        assert p.items[0]["uid"].tolist() == batch["uid"].tolist()
        assert sh.summary()["records_sent"] == len(batch)
    finally:
        sh.close()
        p.stop()
    with pytest.raises(ConfigError):
        Shipper(ep, bind=False, curve_clients=str(tmp_path))
