"""``flows --follow``: rotation, partial lines and exact resume after ``kill -9``.

A real child process follows a real Zeek conn.log that a writer grows line by line
(partial lines included), rotates by rename mid-stream, and is killed with SIGKILL
twice; after restarts the output holds every record exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

REAL = "zeek/slips/test10-mixed.conn.log"


def _spawn(log: Path, out: Path, ckpt: Path, idle: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "sidecar.cli.main", "flows", "--follow", "--input", str(log), "--out", str(out),
         "--checkpoint", str(ckpt), "--poll", "0.02", "--idle-exit", str(idle)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def test_kill9_resume_rotation_zero_loss_zero_dup(shared: Path, tmp_path: Path) -> None:
    lines = (shared / REAL).read_bytes().lstrip().splitlines(keepends=True)
    header = [ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")]
    body = [ln for ln in lines if not ln.startswith(b"#")]
    one = Counter(ln.split(b"\t")[1].decode() for ln in body)
    want = one + one  # two files, same records
    log, out, ckpt = tmp_path / "conn.log", tmp_path / "out.jsonl", tmp_path / "ckpt.json"
    log.write_bytes(b"".join(header))
    child = _spawn(log, out, ckpt, idle=30)
    # The follower is responsible for what is logged after it first started: wait until it has
    # pinned the file in its checkpoint (a busy machine can take seconds to start Python; killing
    # it before that and rotating would lose file 1 by design, not by a bug).
    deadline = time.monotonic() + 60
    while not ckpt.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ckpt.exists(), "the follower never wrote its first checkpoint"
    kills = 0
    for part in range(2):
        for i, ln in enumerate(body):
            with open(log, "ab") as fh:  # write each record in two pieces: partial lines happen
                fh.write(ln[:10])
                fh.flush()
                time.sleep(0.001)
                fh.write(ln[10:])
            if (i in (40, 100) and part == 0) or (i == 70 and part == 1):
                time.sleep(0.1)
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=10)
                kills += 1
                child = _spawn(log, out, ckpt, idle=30)
        if part == 0:  # Zeek-style rotation: rename, then a new file with a new header
            time.sleep(0.3)
            os.rename(log, tmp_path / "conn.2020-10-06-12-00-00.log")
            log.write_bytes(b"".join(header))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = [orjson.loads(x)["uid"] for x in out.read_bytes().splitlines()] if out.exists() else []
        if len(got) >= sum(want.values()):
            break
        time.sleep(0.1)
    child.send_signal(signal.SIGTERM)
    child.wait(timeout=10)
    assert kills == 3
    got_c = Counter(orjson.loads(x)["uid"] for x in out.read_bytes().splitlines())
    assert got_c == want, (len(got_c), sum(got_c.values()), sum(want.values()))
