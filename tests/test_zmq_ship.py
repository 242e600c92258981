"""``ship --follow --checkpoint``: the checkpoint only covers acked batches; restarts lose nothing."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from test_zmq_sockets import Pump

from sidecar.sources.follow import load_checkpoint
from sidecar.transports.zmq_flow import ZmqVerdictSource

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sidecar" / "data" / "samples" / "ctu-sme-11.conn.log.labeled.gz"
PY = sys.executable


def ship_cmd(log: Path, ck: Path, flows: str, acks: str) -> list[str]:
    return [PY, "-m", "sidecar.cli.main", "ship", "--input", str(log), "--follow", "--checkpoint", str(ck),
            "--idle-exit", "1.0", "--poll", "0.1", "--batch", "50", "--push", flows, "--acks", acks,
            "--resend-after", "1.0", "--drain-timeout", "20"]


def summary(err: bytes) -> dict[str, Any]:
    text = err.decode()
    out: dict[str, Any] = json.loads(text.split("ship summary: ", 1)[1].splitlines()[0])
    return out


def test_follow_checkpoint_covers_only_acked_batches(tmp_path: Path) -> None:
    lines = gzip.decompress(SAMPLE.read_bytes()).splitlines(keepends=True)
    head = [ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")]
    body = [ln for ln in lines if not ln.startswith(b"#")]
    assert len(body) == 766
    log, ck = tmp_path / "conn.log", tmp_path / "ship.ckpt"
    log.write_bytes(b"".join(head + body[:400]))
    flows, verdicts, acks = (f"ipc://{tmp_path}/{x}" for x in "fva")
    coll = ZmqVerdictSource(verdicts, acks=acks)
    cp = Pump(coll)
    worker = None
    try:
        # 1. a worker whose verdicts reach no collector: batches go out but are never acked;
        #    SIGTERM stops ship, which reports them unacked and writes no checkpoint
        lost = subprocess.Popen([PY, "-m", "sidecar.transports.zmq_worker", "--pull", flows, "--push",
                                 f"ipc://{tmp_path}/nowhere", "--engine", "numpy"], cwd=REPO, stderr=subprocess.DEVNULL)
        p = subprocess.Popen(ship_cmd(log, ck, flows, acks), cwd=REPO, stderr=subprocess.PIPE)
        time.sleep(2.5)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=20)
        lost.kill()
        lost.wait(timeout=10)
        s1 = summary(err)
        assert p.returncode == 1, err.decode()[-1500:]
        assert s1["acked_batches"] == 0 and s1["unacked_batches"] == s1["batches_sent"] > 0, s1
        assert not ck.exists() and coll.stats.read == 0
        # 2. with a worker: resumes from the start, everything acked, checkpoint at the end of the file
        worker = subprocess.Popen([PY, "-m", "sidecar.transports.zmq_worker", "--pull", flows, "--push", verdicts,
                                   "--engine", "numpy"], cwd=REPO, stderr=subprocess.DEVNULL)
        r = subprocess.run(ship_cmd(log, ck, flows, acks), cwd=REPO, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode()[-1500:]
        s = summary(r.stderr)
        assert s["records_sent"] == 400 == s["scored_records"] and s["unacked_batches"] == 0
        state = load_checkpoint(ck)
        assert state is not None and state.offset == log.stat().st_size
        # 3. the file grows: a new run sends only the new records
        with open(log, "ab") as fh:
            fh.write(b"".join(body[400:]))
        r = subprocess.run(ship_cmd(log, ck, flows, acks), cwd=REPO, capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr.decode()[-1500:]
        assert summary(r.stderr)["scored_records"] == 366
        cp.wait_for(lambda: coll.stats.emitted == 766)
        got = Counter(u for vb in cp.items for u in vb.flows["uid"].tolist())
        want = Counter(ln.split(b"\t")[1].decode() for ln in body)
        assert got == want and max(got.values()) == 1
    finally:
        cp.stop()
        if worker is not None:
            worker.kill()
            worker.wait(timeout=10)


def test_ship_sigkill_and_restart_loses_nothing(tmp_path: Path, shared: Path) -> None:
    """kill -9 of ship mid-stream: the restart resumes at the checkpoint; every record arrives,
    repeats (at-least-once across ship restarts) are bounded by the window."""
    src_file = shared / "zeek-labeled/iot-23/CTU-IoT-Malware-Capture-34-1/conn.log.labeled.gz"
    log, ck = tmp_path / "conn.log", tmp_path / "ship.ckpt"
    data = gzip.decompress(src_file.read_bytes())
    # the file's last record has no newline; a follower rightly waits for it, Zeek would write one
    log.write_bytes(data if data.endswith(b"\n") else data + b"\n")
    body = [ln for ln in log.read_bytes().splitlines() if ln and not ln.startswith(b"#")]
    want = Counter(ln.split(b"\t")[1].decode() for ln in body)
    total = sum(want.values())
    flows, verdicts, acks = (f"ipc://{tmp_path}/{x}" for x in "fva")
    coll = ZmqVerdictSource(verdicts, acks=acks)
    cp = Pump(coll)
    worker = subprocess.Popen([PY, "-m", "sidecar.transports.zmq_worker", "--pull", flows, "--push", verdicts,
                               "--engine", "numpy"], cwd=REPO, stderr=subprocess.DEVNULL)
    window, batch = 8, 50
    cmd = ship_cmd(log, ck, flows, acks)
    cmd[cmd.index("--batch") + 1] = str(batch)
    cmd += ["--window", str(window)]
    try:
        p = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 60
        while coll.stats.emitted < total // 3 and time.monotonic() < end:
            time.sleep(0.01)
        p.kill()
        p.wait(timeout=10)
        at_kill = coll.stats.emitted
        assert 0 < at_kill < total, "ship was not killed mid-stream"
        state = load_checkpoint(ck)
        assert state is not None and 0 < state.offset < log.stat().st_size
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr.decode()[-1500:]
        cp.wait_for(lambda: coll.stats.emitted >= total, timeout=30)
        got = Counter(u for vb in cp.items for u in vb.flows["uid"].tolist())
        assert set(got) == set(want)  # nothing lost
        repeats = sum(got.values()) - total
        # only batches in flight at the kill can repeat, plus those acked after the last checkpoint write
        # (a kill between the acks and the write): at most window + 1 (once seen: 9 batches at window 8)
        assert 0 <= repeats <= (window + 1) * batch
    finally:
        cp.stop()
        worker.kill()
        worker.wait(timeout=10)
