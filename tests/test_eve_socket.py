"""EveSocketSource with a Python writer on a real unix socket, fed real Suricata eve lines."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sidecar.errors import TransportError
from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats, Source
from sidecar.sources.eve import read_path
from sidecar.sources.eve_socket import EveSocketSource

JOIN_S = 10.0


@pytest.fixture(scope="module")
def honeypot(shared: Path) -> Path:
    return shared / "suricata" / "eve" / "magnc-honeypot-ssh.eve.json"


class Reader:
    """Runs the source's iteration in a thread, collecting batches with arrival times."""

    def __init__(self, src: EveSocketSource) -> None:
        self.src = src
        self.batches: list[tuple[float, FlowBatch]] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for b in self.src:
                self.batches.append((time.monotonic(), b))
        except BaseException as exc:  # reported by the test
            self.error = exc

    def n(self) -> int:
        return sum(len(b) for _, b in self.batches)

    def wait_for(self, n: int, timeout: float = JOIN_S) -> None:
        deadline = time.monotonic() + timeout
        while self.n() < n and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> float:
        t = time.monotonic()
        self.src.close()
        self.thread.join(JOIN_S)
        assert not self.thread.is_alive()
        assert self.error is None, self.error
        return time.monotonic() - t

    def all(self) -> FlowBatch:
        return FlowBatch.concat([b for _, b in self.batches])


def _connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(path))
    return s


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_real_eve_stream_matches_file_reader(tmp_path: Path, honeypot: Path) -> None:
    path = tmp_path / "eve.sock"
    src = EveSocketSource(str(path), batch_size=50, idle_flush_ms=50)
    assert isinstance(src, Source)
    r = Reader(src)
    ref_stats = ReadStats()
    ref = FlowBatch.concat(list(read_path(honeypot, ref_stats)))
    data = honeypot.read_bytes()
    with _connect(path) as s:
        for c in _chunks(data, 997):  # odd chunk size: lines split across reads
            s.sendall(c)
    r.wait_for(len(ref))
    r.stop()
    got = r.all()
    assert len(got) == len(ref) == ref_stats.emitted == 215
    assert all(len(b) <= 50 for _, b in r.batches)
    for col in ("uid", "orig_h", "resp_h", "proto", "orig_p", "resp_p"):
        assert got[col].tolist() == ref[col].tolist(), col
    np.testing.assert_array_equal(got["orig_ip_bytes"], ref["orig_ip_bytes"])
    assert src.stats.emitted == 215 and src.stats.read == ref_stats.read
    assert src.stats.ignored == ref_stats.ignored and src.stats.ignored["event:stats"] == 13
    assert not src.stats.skipped
    assert not path.exists()  # removed when iteration ended


def test_garbage_oversize_and_truncated_lines_are_counted(tmp_path: Path, honeypot: Path) -> None:
    path = tmp_path / "eve.sock"
    src = EveSocketSource(str(path), batch_size=1000, max_line_bytes=4096, idle_flush_ms=20)
    r = Reader(src)
    flows = [ln for ln in honeypot.read_bytes().splitlines() if b'"event_type":"flow"' in ln][:20]
    junk = [b"not json at all", b"\xff\xfe\x00garbage", b"[1,2,3]", b'{"event_type":"flow","flow":{}}',
            b"{" + b'"x":"' + b"A" * 10000 + b'"}']
    with _connect(path) as s:
        s.sendall(b"\n".join(flows[:10] + junk + flows[10:]) + b"\n")
        s.sendall(b'{"event_type":"flow","partial')  # connection ends mid-line
    r.wait_for(20)
    time.sleep(0.2)
    r.stop()
    assert r.n() == 20
    st = src.stats
    assert st.skipped == {"bad-json": 2, "not-object": 1, "bad-flow": 1, "oversize": 1, "truncated": 1}
    assert st.read == st.emitted + sum(st.skipped.values())


def test_oversize_line_over_many_reads_then_recovers(tmp_path: Path, honeypot: Path) -> None:
    path = tmp_path / "eve.sock"
    src = EveSocketSource(str(path), max_line_bytes=1024, idle_flush_ms=20)
    r = Reader(src)
    flow = next(ln for ln in honeypot.read_bytes().splitlines() if b'"event_type":"flow"' in ln)
    with _connect(path) as s:
        s.sendall(b'{"a":"')
        for _ in range(50):
            s.sendall(b"B" * 1000)
        s.sendall(b'"}\n' + flow + b"\n")
        r.wait_for(1)
    r.stop()
    assert r.n() == 1 and src.stats.skipped == {"oversize": 1}


def test_partial_batch_flushes_after_idle_ms(tmp_path: Path, honeypot: Path) -> None:
    path = tmp_path / "eve.sock"
    src = EveSocketSource(str(path), batch_size=1000, idle_flush_ms=100)
    r = Reader(src)
    flows = [ln for ln in honeypot.read_bytes().splitlines() if b'"event_type":"flow"' in ln][:3]
    with _connect(path) as s:
        t0 = time.monotonic()
        s.sendall(b"\n".join(flows) + b"\n")
        r.wait_for(3, timeout=5)
        assert r.n() == 3  # yielded without close and without a full batch
        waited = r.batches[0][0] - t0
    r.stop()
    assert waited >= 0.09  # not before the idle time (latency itself is a benchmark matter)


def test_close_from_other_thread_while_blocked(tmp_path: Path) -> None:
    path = tmp_path / "eve.sock"
    src = EveSocketSource(str(path))
    r = Reader(src)
    with _connect(path):  # a connected, silent writer
        time.sleep(0.3)
        took = r.stop()
    assert took < 1.0
    assert r.n() == 0 and src.connections == 1


def test_reconnections_are_accepted(tmp_path: Path, honeypot: Path) -> None:
    path = tmp_path / "eve.sock"
    src = EveSocketSource(str(path), idle_flush_ms=10)
    r = Reader(src)
    flows = [ln for ln in honeypot.read_bytes().splitlines() if b'"event_type":"flow"' in ln][:30]
    for k in range(3):
        with _connect(path) as s:
            s.sendall(b"\n".join(flows[k * 10 : k * 10 + 10]) + b"\n")
        r.wait_for(10 * (k + 1))
    r.stop()
    assert r.n() == 30 and src.connections == 3


def test_stale_socket_replaced_non_socket_and_live_socket_refused(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # the file stays: a crashed previous run
    assert stale.exists()
    src = EveSocketSource(str(stale))
    with _connect(stale):
        pass
    # while it listens, a second source on the same path is refused
    with pytest.raises(TransportError, match="another process is listening"):
        EveSocketSource(str(stale))
    src.close()
    assert not stale.exists()
    regular = tmp_path / "eve.json"
    regular.write_text("{}\n")
    with pytest.raises(TransportError, match="not a socket"):
        EveSocketSource(str(regular))
    assert regular.read_text() == "{}\n"


def test_close_before_iteration_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "eve.sock"
    src = EveSocketSource(str(path))
    assert path.exists()
    src.close()
    assert not path.exists()
    assert list(src) == []


def test_random_bytes_never_crash(tmp_path: Path) -> None:
    """Fuzz: 256 KiB of seeded random bytes (with newlines) are all counted, nothing raised."""
    rng = np.random.default_rng(8)
    data = rng.integers(0, 256, size=1 << 18, dtype=np.uint8)
    data[rng.integers(0, len(data), size=4000)] = ord("\n")
    payload = data.tobytes()
    path = tmp_path / "eve.sock"
    src = EveSocketSource(str(path), max_line_bytes=512, idle_flush_ms=10)
    r = Reader(src)
    with _connect(path) as s:
        s.sendall(payload)
    deadline = time.monotonic() + 10
    lines = payload.split(b"\n")
    expect = sum(1 for ln in lines[:-1] if ln.strip()) + (1 if lines[-1] else 0)
    while src.stats.read < expect and time.monotonic() < deadline:
        time.sleep(0.02)
    r.stop()
    assert r.n() == 0 and src.stats.emitted == 0
    assert src.stats.read == expect == sum(src.stats.skipped.values())
    assert set(src.stats.skipped) <= {"bad-json", "not-object", "oversize", "truncated"}
