"""FollowSource (the service's followed-file source) and ``score --follow`` on real records."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

from sidecar.flow import FlowBatch
from sidecar.service.follow_source import FollowSource
from sidecar.sources.follow import load_checkpoint

REAL_TSV = "zeek/slips/ctu-sme-11.conn.log.labeled"
REAL_JSON = "zeek/slips/test9-mixed.conn.json.log"


def _tsv(shared: Path) -> tuple[list[bytes], list[bytes]]:
    lines = (shared / REAL_TSV).read_bytes().lstrip().splitlines(keepends=True)
    return ([ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")],
            [ln for ln in lines if not ln.startswith(b"#")])


def test_close_from_another_thread_ends_iteration_quickly(shared: Path, tmp_path: Path) -> None:
    header, body = _tsv(shared)
    log = tmp_path / "conn.log"
    log.write_bytes(b"".join(header + body[:100]))
    src = FollowSource(str(log), poll_ms=500)
    got: list[FlowBatch] = []
    t = threading.Thread(target=lambda: got.extend(src), daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while sum(len(b) for b in got) < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # now blocked between polls
    t0 = time.monotonic()
    src.close()
    t.join(timeout=5)
    assert not t.is_alive() and time.monotonic() - t0 < 1.5
    assert sum(len(b) for b in got) == 100 and src.stats.read == 100 and src.format == "zeek-tsv"


def test_checkpoint_holds_only_committed_positions(shared: Path, tmp_path: Path) -> None:
    header, body = _tsv(shared)
    log, ckpt = tmp_path / "conn.log", tmp_path / "c.json"
    log.write_bytes(b"".join(header + body[:50]))
    src = FollowSource(str(log), checkpoint=str(ckpt), poll_ms=10, batch_size=16)
    src.once = True
    tokens = []
    n = 0
    for b in src:
        n += len(b)
        tok = src.take_token()
        if tok is not None:
            tokens.append(tok)
    assert n == 50 and len(tokens) == 1  # one poll, one position, carried by its last batch
    src.save_checkpoint()
    # nothing committed yet: the checkpoint only pins the file we started on, at offset 0
    # (so a crash + rotation before the first commit resumes the rotated file)
    pinned = load_checkpoint(ckpt)
    assert pinned is not None and (pinned.inode, pinned.offset) == (log.stat().st_ino, 0)
    src.commit(tokens[0])
    src.save_checkpoint()
    st = load_checkpoint(ckpt)
    assert st is not None and st.offset == log.stat().st_size and st.extra["format"] == "zeek-tsv"
    # a new source resumes after the committed position and reads only new lines
    with open(log, "ab") as fh:
        fh.write(b"".join(body[50:80]))
    again = FollowSource(str(log), checkpoint=str(ckpt), poll_ms=10)
    again.once = True
    uids = [u for b in again for u in b["uid"].tolist()]
    assert uids == [ln.split(b"\t")[1].decode() for ln in body[50:80]]


def test_garbage_is_counted_not_raised(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_bytes(b"hello world\nthis is not a log\n")
    src = FollowSource(str(log), poll_ms=10)
    src.once = True
    assert sum(len(b) for b in src) == 0
    assert src.stats.skipped["unknown-format"] == 2 and src.stats.read == 2


def test_score_follow_matches_score_on_the_file(shared: Path, tmp_path: Path) -> None:
    lines = (shared / REAL_JSON).read_bytes().splitlines(keepends=True)
    log, out, ref = tmp_path / "conn.json.log", tmp_path / "follow.jsonl", tmp_path / "ref.jsonl"
    log.write_bytes(b"".join(lines[:200]))
    cmd = [sys.executable, "-m", "sidecar.cli.main", "score", "--follow", "--input", str(log), "--out", str(out),
           "--batch", "64", "--batch-ms", "20", "--poll-ms", "20", "--idle-exit", "3"]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while (not out.exists() or len(out.read_bytes().splitlines()) < 200) and time.monotonic() < deadline:
        time.sleep(0.05)
    with open(log, "ab") as fh:
        fh.write(b"".join(lines[200:]))
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err.decode()[-3000:]
    r = subprocess.run([sys.executable, "-m", "sidecar.cli.main", "score", "--input", str(log), "--out", str(ref)],
                       capture_output=True, timeout=120)
    assert r.returncode == 0
    got = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    want = [orjson.loads(x) for x in ref.read_bytes().splitlines()]
    assert len(want) > 500 and got == want
