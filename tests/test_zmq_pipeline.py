"""End to end over real pyzmq: ``bnn-sidecar ship`` → 3 worker processes → collector.

One worker is SIGKILLed and restarted mid-stream; every record of the input must come
out of the collector exactly once, with the same verdict a single process gives.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sidecar.scorer import make_scorer
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path
from sidecar.transports.zmq_flow import ZmqVerdictSource

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sidecar" / "data" / "samples" / "ctu-sme-11.conn.log.labeled.gz"
MODEL = REPO / "sidecar" / "data" / "model" / "bnn.onnx"
PY = sys.executable
DEADLINE = 90.0  # s: watchdog for the whole pipeline run (normally a few seconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def endpoints(kind: str, tmp: Path) -> tuple[str, str, str]:
    if kind == "tcp":
        return tuple(f"tcp://127.0.0.1:{free_port()}" for _ in range(3))  # type: ignore[return-value]
    return (f"ipc://{tmp}/f.sock", f"ipc://{tmp}/v.sock", f"ipc://{tmp}/a.sock")


def start_worker(flows: str, verdicts: str, engine: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PY, "-m", "sidecar.transports.zmq_worker", "--pull", flows, "--push", verdicts, "--engine", engine],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
    )


def wait_ready(logs: list[Path], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not all(lg.exists() and "worker ready" in lg.read_text() for lg in logs):
        assert time.monotonic() < end, "workers did not start"
        time.sleep(0.05)


def expected() -> tuple[Counter[tuple[str, float]], dict[str, tuple[float, bool, str]]]:
    st = ReadStats()
    batches = list(read_path(SAMPLE, "auto", st))
    scorer = make_scorer(MODEL, "numpy")
    keys: Counter[tuple[str, float]] = Counter()
    verdict: dict[str, tuple[float, bool, str]] = {}
    for b in batches:
        v = scorer.score(b)
        keys.update(zip(b["uid"].tolist(), b["ts"].tolist(), strict=True))
        for u, s, m, c in zip(b["uid"].tolist(), v.score.tolist(), v.malicious.tolist(), v.cls.tolist(), strict=True):
            verdict[u] = (s, m, c)
    assert sum(keys.values()) == 766 == st.emitted
    return keys, verdict


def run_pipeline(kind: str, tmp: Path, engine: str, stop_first: bool) -> None:
    flows, verdicts, acks = endpoints(kind, tmp)
    src = ZmqVerdictSource(verdicts, acks=acks, dedup_window=1024)
    procs: list[subprocess.Popen[bytes]] = []
    ship_err = tmp / "ship.err"
    try:
        workers = [start_worker(flows, verdicts, engine, tmp / f"w{i}.err") for i in range(3)]
        procs += workers
        wait_ready([tmp / f"w{i}.err" for i in range(3)])  # so all three take part from the start
        ship = subprocess.Popen(
            [PY, "-m", "sidecar.cli.main", "ship", "--input", str(SAMPLE), "--push", flows, "--acks", acks,
             "--batch", "8", "--window", "12", "--hwm", "2", "--resend-after", "1.0", "--drain-timeout", "60"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(ship_err, "wb"),  # noqa: SIM115
        )
        procs.append(ship)
        watchdog = threading.Timer(DEADLINE, src.close)
        watchdog.start()

        def _closer() -> None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                ship.wait(timeout=DEADLINE)
            src.close()

        threading.Thread(target=_closer, daemon=True).start()
        got: Counter[tuple[str, float]] = Counter()
        rows: list[tuple[str, float, bool, str]] = []
        for nb, vb in enumerate(src, 1):
            f = vb.flows
            got.update(zip(f["uid"].tolist(), f["ts"].tolist(), strict=True))
            rows += zip(f["uid"].tolist(), vb.score.tolist(), vb.malicious.tolist(), vb.cls.tolist(), strict=True)
            assert f.label is not None and len(f.label) == len(vb)  # labels travel with the records
            if nb == 2:  # ship is held by its window: let every worker's (re)connect to ship complete
                time.sleep(0.5)
            if nb == 20:  # mid-stream (of ~96 batches)
                if stop_first:  # freeze it first so batches pile up in its queue, then kill: they are lost
                    os.kill(workers[0].pid, signal.SIGSTOP)
                else:
                    os.kill(workers[0].pid, signal.SIGKILL)
                    workers[0].wait(timeout=10)
                    procs.append(start_worker(flows, verdicts, engine, tmp / "w0b.err"))
            if stop_first and nb == 35:
                os.kill(workers[0].pid, signal.SIGKILL)
                workers[0].wait(timeout=10)
                procs.append(start_worker(flows, verdicts, engine, tmp / "w0b.err"))
        watchdog.cancel()
        rc = ship.wait(timeout=10)
        text = ship_err.read_text()
        summary = json.loads(text.split("ship summary: ", 1)[1].splitlines()[0])
        assert workers[0].returncode == -signal.SIGKILL
        want, verdict = expected()
        # zero lost, none written twice, exactly the input's records
        assert got == want, f"missing {sum((want - got).values())}, extra {sum((got - want).values())}"
        assert sum(got.values()) == 766 == src.stats.emitted
        assert all(n == 1 for n in got.values())
        for u, s, m, c in rows:
            assert verdict[u][1:] == (m, c) and np.isclose(verdict[u][0], s, rtol=0, atol=1e-12)
        # ship's accounting: sent = scored + rejected, nothing left unacked
        assert rc == 0, text[-2000:]
        assert summary["records_sent"] == 766 == summary["scored_records"]
        assert summary["rejected_batches"] == 0 and summary["unacked_batches"] == 0
        assert summary["acked_batches"] == summary["batches_sent"] == 96 == src.batches
        if stop_first:
            # batches routed to the frozen worker were lost and had to be resent
            assert summary["resent"] >= 1, summary
    finally:
        src.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)


def test_ship_three_workers_kill_one_tcp(tmp_path: Path) -> None:
    run_pipeline("tcp", tmp_path, "onnx", stop_first=False)


def test_ship_three_workers_freeze_kill_one_ipc(tmp_path: Path) -> None:
    run_pipeline("ipc", tmp_path, "numpy", stop_first=True)


def test_unscorable_batch_is_rejected_with_reason_and_accounted(tmp_path: Path) -> None:
    """ship → worker whose scorer fails on one batch → reject → collector → ack: sent = scored + rejected."""
    from sidecar.transports.zmq_ship import Shipper

    flows, verdicts, acks = endpoints("ipc", tmp_path)
    src = ZmqVerdictSource(verdicts, acks=acks)
    w = start_worker(flows, verdicts, "numpy", tmp_path / "w.err")
    sh = Shipper(flows, acks=acks, window=4, resend_after=30.0, stream="rej-test")
    timer = threading.Timer(60, src.close)
    try:
        good, other = list(read_path(SAMPLE, "auto", ReadStats(), batch_size=10))[:2]
        # the CIC flag-count extra the features read is not numeric here: the scorer raises ValueError
        other.extra["SYN Flag Cnt"] = np.array(["x"] * len(other), dtype=object)
        assert sh.send(good) and sh.send(other)
        got: list[int] = []
        coll = threading.Thread(target=lambda: got.extend(len(vb) for vb in src), daemon=True)
        coll.start()
        timer.start()
        assert sh.drain(30), sh.summary()
        src.close()
        coll.join(timeout=5)
        assert not coll.is_alive()
        s = sh.summary()
        assert s["scored_records"] == 10 and s["rejected_records"] == {"score-error": 10}
        assert s["records_sent"] == 20 == s["scored_records"] + sum(s["rejected_records"].values())
        assert s["resent"] == 0 and s["unacked_batches"] == 0
        assert src.stats.skipped["rejected:score-error"] == 10 and got == [10]
    finally:
        timer.cancel()
        sh.close()
        src.close()
        w.kill()
        w.wait(timeout=10)


def test_ship_worker_collector_with_curve_tcp(tmp_path: Path) -> None:
    """All three links encrypted and client-authenticated; keys made by ``ship --curve-keygen``."""
    import zmq

    from sidecar.transports.zmq_common import keygen

    if not zmq.has("curve"):
        pytest.skip("libzmq without CURVE")
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    r = subprocess.run([PY, "-m", "sidecar.cli.main", "ship", "--curve-keygen", str(keys), "ship"], cwd=REPO,
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and (keys / "ship.key_secret").exists(), r.stderr.decode()
    keygen(keys, "collector")
    keygen(keys, "worker")
    allowed.mkdir()
    for name in ("ship", "worker"):  # ship connects to the collector's ack PUB, the worker to both
        (allowed / f"{name}.key").write_bytes((keys / f"{name}.key").read_bytes())
    flows, verdicts, acks = endpoints("tcp", tmp_path)
    src = ZmqVerdictSource(verdicts, acks=acks, curve_secret=str(keys / "collector.key_secret"),
                           curve_clients=str(allowed))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen(
            [PY, "-m", "sidecar.transports.zmq_worker", "--pull", flows, "--push", verdicts, "--engine", "numpy",
             "--curve-secret", str(keys / "worker.key_secret"), "--curve-ship-key", str(keys / "ship.key"),
             "--curve-collector-key", str(keys / "collector.key")], cwd=REPO, stderr=subprocess.DEVNULL))
        ship = subprocess.Popen(
            [PY, "-m", "sidecar.cli.main", "ship", "--input", str(SAMPLE), "--push", flows, "--acks", acks,
             "--batch", "100", "--resend-after", "2", "--drain-timeout", "60",
             "--curve-secret", str(keys / "ship.key_secret"), "--curve-clients", str(allowed),
             "--curve-collector-key", str(keys / "collector.key")],
            cwd=REPO, stderr=subprocess.PIPE)
        procs.append(ship)
        got: Counter[str] = Counter()

        def _closer() -> None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                ship.wait(timeout=DEADLINE)
            src.close()

        threading.Thread(target=_closer, daemon=True).start()
        for vb in src:
            got.update(vb.flows["uid"].tolist())
        _, err = ship.communicate(timeout=10)
        assert ship.returncode == 0, err.decode()[-2000:]
        want, _ = expected()
        assert sum(got.values()) == 766 and set(got) == {u for u, _ in want} and max(got.values()) == 1
    finally:
        src.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
