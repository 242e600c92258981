"""The service loop in process: VerdictBatch pass-through, back-pressure, stop from another thread."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import QuietSink
from prometheus_client import generate_latest

from sidecar.cli.score import DEFAULT_MODEL
from sidecar.flow import FlowBatch
from sidecar.scorer import Scorer, make_scorer
from sidecar.service.follow_source import FollowSource
from sidecar.service.metrics import Metrics
from sidecar.service.pipeline import Service
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path
from sidecar.verdict import VerdictBatch

SAMPLES = Path(__file__).resolve().parent.parent / "sidecar" / "data" / "samples"


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return make_scorer(DEFAULT_MODEL, "numpy")


class Replay:
    """Yields ready batches: verdicts, like a ZeroMQ collector source, or flows, like a file source
    that has read its records."""

    def __init__(self, batches: list[VerdictBatch] | list[FlowBatch]) -> None:
        self.batches = batches
        self.stats = ReadStats()
        self.reconnects = 2

    def __iter__(self) -> Iterator[VerdictBatch | FlowBatch]:
        for b in self.batches:
            self.stats.read += len(b)
            self.stats.emitted += len(b)
            yield b

    def close(self) -> None:
        pass


class SlowSink(QuietSink):
    name = "slow"

    def __init__(self) -> None:
        self.rows: list[str] = []

    def write(self, v: VerdictBatch) -> None:
        time.sleep(0.02)
        self.rows += v.flows["uid"].tolist()


def test_verdicts_pass_through_and_back_pressure(scorer: Scorer, tmp_path: Path) -> None:
    flows = list(read_path(SAMPLES / "ctu-sme-11.conn.log.labeled.gz", "auto", ReadStats(), batch_size=50))
    ready = [scorer.score(b) for b in flows[:4]]
    n_ready = sum(len(v) for v in ready)
    scored_before = scorer.scored
    log = tmp_path / "conn.log"
    log.write_bytes((SAMPLES / "horizontal-portscan.conn.log").read_bytes())
    fol = FollowSource(str(log), poll_ms=10, batch_size=4)
    fol.once = True
    sink = SlowSink()
    metrics = Metrics()
    svc = Service([("zmq", Replay(ready)), ("conn", fol)], [("slow", sink)], scorer,
                  batch_max=8, batch_ms=5, queue_batches=1, metrics=metrics)
    acc = svc.run()
    text = generate_latest(metrics.registry).decode()
    assert 'bnn_sidecar_reconnects_total{source="zmq"} 2.0' in text
    assert f"bnn_sidecar_records_forwarded_total {float(n_ready)}" in text
    assert 'bnn_sidecar_records_in_total{source="conn"} 41.0' in text
    assert acc["forwarded"] == n_ready and acc["scored"] == 41 and acc["inflight"] == 0
    assert scorer.scored - scored_before == 41  # ready-made verdicts were not scored again
    assert len(sink.rows) == n_ready + 41
    ready_uids = [u for v in ready for u in v.flows["uid"].tolist()]
    follow_uids = [u for b in read_path(log, "auto", ReadStats()) for u in b["uid"].tolist()]
    assert Counter(sink.rows) == Counter(ready_uids + follow_uids)  # nothing dropped, nothing twice
    assert svc.queue.maxsize == 1
    assert sum(acc["verdicts"].values()) == n_ready + 41


def test_stop_from_another_thread_and_idle_exit(scorer: Scorer, tmp_path: Path) -> None:
    log = tmp_path / "conn.log"
    log.write_bytes((SAMPLES / "horizontal-portscan.conn.log").read_bytes())
    sink = SlowSink()
    svc = Service([("conn", FollowSource(str(log), poll_ms=50))], [("s", sink)], scorer, batch_ms=10)
    res: dict[str, object] = {}
    t = threading.Thread(target=lambda: res.update(svc.run()), daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while len(sink.rows) < 41 and time.monotonic() < deadline:
        time.sleep(0.02)
    svc.request_stop()
    t.join(timeout=5)
    assert not t.is_alive() and res["scored"] == 41 and res["inflight"] == 0
    # idle-exit: stops by itself when nothing new comes
    svc2 = Service([("conn", FollowSource(str(log), poll_ms=50))], [("s", SlowSink())], scorer,
                   batch_ms=10, idle_exit=0.5)
    t0 = time.monotonic()
    assert svc2.run()["scored"] == 41
    assert time.monotonic() - t0 < 10


def test_empty_flow_batches_and_tags_without_records(scorer: Scorer) -> None:
    class Empty:
        stats = ReadStats()

        def __iter__(self) -> Iterator[FlowBatch]:
            yield FlowBatch.empty()

        def close(self) -> None:
            pass

    acc = Service([("e", Empty())], [], scorer).run()
    assert acc["scored"] == 0 and acc["batches"] == 0 and acc["inflight"] == 0


def test_a_source_that_ignores_close_cannot_hang_shutdown(scorer: Scorer) -> None:
    class Stubborn:
        stats = ReadStats()

        def __iter__(self) -> Iterator[FlowBatch]:
            time.sleep(3)  # ignores close()
            yield from ()

        def close(self) -> None:
            pass

    svc = Service([("stubborn", Stubborn())], [], scorer, stop_timeout=0.3)
    svc.request_stop()
    t0 = time.monotonic()
    assert svc.run()["scored"] == 0
    assert time.monotonic() - t0 < 2.0


def test_a_batch_the_scorer_rejects_is_counted_and_the_rest_scored(tmp_path: Path) -> None:
    from sidecar.errors import ModelError

    base = make_scorer(DEFAULT_MODEL, "numpy")

    calls = []

    class Flaky(Scorer):  # the real scorer, with one injected failure
        def score(self, batch: FlowBatch, source: str | None = None) -> VerdictBatch:
            calls.append(len(batch))
            if len(calls) == 2:  # the second micro-batch
                raise ModelError("injected failure")
            return super().score(batch, source)

    log = tmp_path / "conn.log"
    log.write_bytes((SAMPLES / "horizontal-portscan.conn.log").read_bytes())
    fol = FollowSource(str(log), poll_ms=10)
    fol.once = True
    sink = SlowSink()
    svc = Service([("conn", fol)], [("s", sink)], Flaky(base.engine, base.meta, base.model_id), batch_max=8)
    acc = svc.run()
    assert acc["rejected"] == {"score-error": 8} and acc["scored"] == 33 and acc["inflight"] == 0
    assert len(sink.rows) == 33


class CollectSink(QuietSink):
    name = "collect"

    def __init__(self) -> None:
        self.rows: list[str] = []

    def write(self, v: VerdictBatch) -> None:
        self.rows += v.flows["uid"].tolist()


def test_the_capture_check_and_the_flood_rule_count_per_source(shared: Path) -> None:
    """Two Zeek sensors: one sees every packet twice (CTU mixed 012), one does not (IoT-23 34-1). The
    service names the duplicating one, not both, and each sensor's flood counts are its own."""
    def load(rel: str) -> list[FlowBatch]:
        return list(read_path(shared / "zeek-labeled" / rel / "conn.log.labeled.gz", "auto", ReadStats(), batch_size=500))

    dup, clean = load("stratosphere-security-datasets-for-testing/012-zeek-mixed"), load("iot-23/CTU-IoT-Malware-Capture-34-1")
    sc = make_scorer(DEFAULT_MODEL, "onnx")
    sink = CollectSink()
    svc = Service([("sensor-a", Replay(dup)), ("sensor-b", Replay(clean))], [("s", sink)], sc,
                  batch_ms=5)
    acc = svc.run()
    assert acc["scored"] == len(sink.rows) == sum(map(len, dup)) + sum(map(len, clean))
    got = sc.capture.summary()
    assert set(got) == {"sensor-a", "sensor-b"}
    assert got["sensor-a"]["duplicating"] and got["sensor-a"]["twin_syn"] > 2000
    assert not got["sensor-b"]["duplicating"] and got["sensor-b"]["twin_syn"] == 0
    assert set(sc._counters) == {"sensor-a", "sensor-b"}
