"""E4: the open micro-batch closes as soon as no input is waiting (``close_when_idle``).

Real records (shipped Zeek samples), the real numpy scorer, real follow sources with
checkpoints; ``batch_ms`` is set to a minute so that only the idle close (or size, or
stop) can close a batch within the bounded waits below.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import QuietSink

from sidecar.cli.score import DEFAULT_MODEL
from sidecar.config import load_config
from sidecar.flow import FlowBatch
from sidecar.scorer import Scorer, make_scorer
from sidecar.service.follow_source import FollowSource
from sidecar.service.pipeline import Service
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path
from sidecar.verdict import VerdictBatch

SAMPLES = Path(__file__).resolve().parent.parent / "sidecar" / "data" / "samples"
PORTSCAN = SAMPLES / "horizontal-portscan.conn.log"  # 41 records
HOLD_MS = 60_000.0  # batch_ms far beyond every wait in this file


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return make_scorer(DEFAULT_MODEL, "numpy")


class Collect(QuietSink):
    """A sink that records every verdict batch it is given (sizes and uids)."""

    name = "collect"

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.uids: list[str] = []
        self.gate = gate
        self.entered = threading.Event()
        self.lock = threading.Lock()

    def write(self, v: VerdictBatch) -> None:
        if self.gate is not None and not self.sizes:
            self.entered.set()
            assert self.gate.wait(10), "gate never opened"
        with self.lock:
            self.sizes.append(len(v))
            self.uids += v.flows["uid"].tolist()

    def count(self) -> int:
        with self.lock:
            return len(self.uids)


class Feed:
    """A live source fed by the test: blocks until a batch is put, ends on close()."""

    def __init__(self) -> None:
        self.q: queue.Queue[FlowBatch | None] = queue.Queue()
        self.stats = ReadStats()

    def __iter__(self) -> Iterator[FlowBatch]:
        while True:
            b = self.q.get(timeout=10)
            if b is None:
                return
            self.stats.read += len(b)
            self.stats.emitted += len(b)
            yield b

    def close(self) -> None:
        self.q.put(None)


def _wait(cond: object, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def _real_batches(n: int) -> list[FlowBatch]:
    return list(read_path(SAMPLES / "ctu-sme-11.conn.log.labeled.gz", "auto", ReadStats(), batch_size=n))


def _start(svc: Service) -> tuple[threading.Thread, dict[str, object]]:
    res: dict[str, object] = {}
    t = threading.Thread(target=lambda: res.update(svc.run()), daemon=True)
    t.start()
    return t, res


@pytest.mark.parametrize("idle_close", [True, False])
def test_a_lone_batch_is_scored_at_once_only_when_idle_close_is_on(scorer: Scorer, idle_close: bool) -> None:
    feed, sink = Feed(), Collect()
    svc = Service([("feed", feed)], [("c", sink)], scorer, batch_ms=HOLD_MS, close_when_idle=idle_close)
    t, res = _start(svc)
    first = _real_batches(10)[0]
    feed.q.put(first)
    if idle_close:
        assert _wait(lambda: sink.count() == 10), "the idle batch was held back"
        assert sink.sizes == [10]
    else:  # held for batch_ms (a minute): nothing within 0.5 s, then the stop drains it
        assert _wait(lambda: feed.stats.read == 10)
        time.sleep(0.5)
        assert sink.count() == 0
    svc.request_stop()
    t.join(timeout=10)
    assert not t.is_alive()
    assert res["scored"] == 10 and res["inflight"] == 0 and res["batches"] == 1
    assert len(set(sink.uids)) == 10


def test_under_load_queued_pieces_still_fill_batches_to_batch_max(scorer: Scorer) -> None:
    """While the loop is busy, pieces queue up; the idle close must not split them."""
    pieces = _real_batches(50)[:15]  # 15 x 50 = 750 real records
    assert [len(p) for p in pieces] == [50] * 15
    gate = threading.Event()
    feed, sink = Feed(), Collect(gate)
    svc = Service([("feed", feed)], [("c", sink)], scorer, batch_max=200, batch_ms=HOLD_MS, queue_batches=64)
    t, res = _start(svc)
    feed.q.put(pieces[0])
    assert sink.entered.wait(10)
    for p in pieces[1:]:
        feed.q.put(p)
    # the first piece is being written (the sink blocks on the gate); the other 14 wait in the queue
    assert _wait(lambda: svc.queue.qsize() == 14)
    gate.set()
    assert _wait(lambda: sink.count() == 750)
    # 50 alone (idle when it came), then 700 queued records: 3 full batches + 100 closed when idle
    assert sink.sizes == [50, 200, 200, 200, 100]
    assert len(set(sink.uids)) == 750
    svc.request_stop()
    t.join(timeout=10)
    assert res["scored"] == 750 and res["inflight"] == 0 and res["batches"] == 5


def test_follow_with_checkpoint_is_exactly_once_across_restarts(scorer: Scorer, tmp_path: Path) -> None:
    lines = PORTSCAN.read_bytes().splitlines(keepends=True)
    header = [ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")]
    body = [ln for ln in lines if not ln.startswith(b"#")]
    assert len(body) == 41
    log, ckpt = tmp_path / "conn.log", str(tmp_path / "ckpt.json")
    log.write_bytes(b"".join(header + body[:20]))
    seen: list[str] = []
    for expect, more in ((20, body[20:30]), (30, body[30:])):
        sink = Collect()
        svc = Service([("conn", FollowSource(str(log), checkpoint=ckpt, poll_ms=20))], [("c", sink)], scorer,
                      batch_ms=HOLD_MS, checkpoint_interval=0.05)
        t, res = _start(svc)
        assert _wait(lambda: sink.count() == expect - len(seen)), "follow batch held back"  # noqa: B023
        with log.open("ab") as fh:  # appended while running: scored without waiting for batch_ms
            fh.write(b"".join(more))
        assert _wait(lambda: sink.count() == expect - len(seen) + len(more))  # noqa: B023
        time.sleep(0.2)  # nothing read twice arrives late
        assert sink.count() == expect - len(seen) + len(more)
        svc.request_stop()
        t.join(timeout=10)
        assert not t.is_alive() and res["inflight"] == 0
        seen += sink.uids
    assert len(seen) == 41 and len(set(seen)) == 41


def test_config_key_default_file_env(tmp_path: Path) -> None:
    cfg = load_config(None, env={}, validate=False)
    assert cfg.sidecar.close_when_idle is True and cfg.origins["sidecar.close_when_idle"] == "default"
    f = tmp_path / "s.toml"
    f.write_text("[sidecar]\nclose_when_idle = false\n")
    cfg = load_config(f, env={}, validate=False)
    assert cfg.sidecar.close_when_idle is False and cfg.origins["sidecar.close_when_idle"].startswith("file ")
    cfg = load_config(f, env={"BNN_SIDECAR_SIDECAR_CLOSE_WHEN_IDLE": "true"}, validate=False)
    assert cfg.sidecar.close_when_idle is True
    assert cfg.origins["sidecar.close_when_idle"] == "env BNN_SIDECAR_SIDECAR_CLOSE_WHEN_IDLE"
    from sidecar.errors import ConfigError

    f.write_text('[sidecar]\nclose_when_idle = "yes"\n')
    with pytest.raises(ConfigError, match="close_when_idle"):
        load_config(f, env={}, validate=False)
