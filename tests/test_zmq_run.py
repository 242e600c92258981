"""``bnn-sidecar run`` as ZeroMQ workers and collector (the config contract), fed by ``ship``.

The workers' micro-batcher (batch_max 100) cuts across ship's 64-record batches, so the
collector must reassemble batches from parts; one worker is SIGKILLed mid-stream and
restarted. Every input record must be written exactly once by the collector's jsonl sink.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path

REPO = Path(__file__).resolve().parent.parent
SHARED_IOT = "zeek-labeled/iot-23/CTU-IoT-Malware-Capture-34-1/conn.log.labeled.gz"
PY = sys.executable


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        p: int = s.getsockname()[1]
        return p


def write_config(path: Path, sources: str, sinks: str) -> Path:
    path.write_text(f"""[sidecar]
engine = "numpy"
batch_max = 100
batch_ms = 20
checkpoint_dir = ""

[metrics]
listen = ""

{sources}
{sinks}
""")
    return path


def start_run(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([PY, "-m", "sidecar.cli.main", "run", "--config", str(cfg)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=open(log, "wb"))


def lines(p: Path) -> int:
    try:
        with open(p, "rb") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def test_run_workers_and_collector_kill_one_worker(tmp_path: Path, shared: Path) -> None:
    src_file = shared / SHARED_IOT
    want = Counter(u for b in read_path(src_file, "auto", ReadStats()) for u in b["uid"].tolist())
    total = sum(want.values())
    assert total == 23145
    flows, verdicts, acks = (f"tcp://127.0.0.1:{port()}" for _ in range(3))
    out = tmp_path / "verdicts.jsonl"
    coll_cfg = write_config(tmp_path / "collector.toml",
                            f'[[source]]\nkind = "zmq_verdicts"\nendpoint = "{verdicts}"\nacks = "{acks}"\n',
                            f'[[sink]]\nkind = "jsonl"\npath = "{out}"\n')
    work_cfg = write_config(tmp_path / "worker.toml",
                            f'[[source]]\nkind = "zmq"\nendpoint = "{flows}"\nrejects = "{verdicts}"\n',
                            f'[[sink]]\nkind = "zmq"\nendpoint = "{verdicts}"\n')
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start_run(coll_cfg, tmp_path / "collector.err"))
        workers = [start_run(work_cfg, tmp_path / f"w{i}.err") for i in range(3)]
        procs += workers
        time.sleep(1.5)  # let the services load the model and connect
        ship = subprocess.Popen(
            [PY, "-m", "sidecar.cli.main", "ship", "--input", str(src_file), "--push", flows, "--acks", acks,
             "--batch", "64", "--window", "8", "--hwm", "2", "--resend-after", "2", "--drain-timeout", "60"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(ship)
        end = time.monotonic() + 60
        while lines(out) < total // 4 and time.monotonic() < end and ship.poll() is None:
            time.sleep(0.02)
        at_kill = lines(out)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        procs.append(start_run(work_cfg, tmp_path / "w0b.err"))
        _, err = ship.communicate(timeout=120)
        text = err.decode()
        assert ship.returncode == 0, text[-2000:]
        s: dict[str, Any] = json.loads(text.split("ship summary: ", 1)[1].splitlines()[0])
        assert 0 < at_kill < total, "the worker was not killed mid-stream"
        assert s["records_sent"] == total == s["scored_records"] and s["unacked_batches"] == 0
        procs[0].send_signal(signal.SIGTERM)  # collector: drain, flush, exit
        procs[0].wait(timeout=30)
        got = Counter(json.loads(ln)["uid"] for ln in out.read_bytes().splitlines())
        assert got == want, f"missing {sum((want - got).values())}, twice {sum((got - want).values())}"
        summ = (tmp_path / "collector.err").read_text()
        assert f'"forwarded":{total}' in summ.replace(" ", "") or f'"forwarded": {total}' in summ
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
