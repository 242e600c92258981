"""E10 review: a followed Zeek TSV log is accounted like the same file read at once.

The follow consumers (``FollowSource`` of the service and ``flows --follow``) feed the
current header block in front of every poll's data lines, so the reader counted the
header lines once per poll (``ignored["header"]`` 72 for a file with 10 header lines when
appended in small pieces; 16 instead of 20 for two logs in one file, whose closing
``#close`` line was never counted). Each ``#`` line of the followed file must be counted
once, as reading the file counts it. Real files only (Zeek's own test baselines of two
Zeek versions, concatenated: a header change mid-file, as after a Zeek restart).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from sidecar.service.follow_source import FollowSource
from sidecar.sources import zeek_tsv
from sidecar.sources.base import ReadStats

LOGS = ("zeek/version-series/ssh-basic.conn.v3.0.0.log", "zeek/version-series/ssh-basic.conn.v8.0.0.log")


def _file_stats(p: Path) -> dict[str, Any]:
    st = ReadStats()
    for _ in zeek_tsv.read_path(p, st):
        pass
    return st.as_dict()


def _two_logs(shared: Path, tmp_path: Path) -> tuple[Path, bytes]:
    raw = b"".join((shared / rel).read_bytes() for rel in LOGS)
    p = tmp_path / "conn.log"
    p.write_bytes(raw)
    return p, raw


def test_follow_source_counts_header_lines_once(shared: Path, tmp_path: Path) -> None:
    p, _ = _two_logs(shared, tmp_path)
    want = _file_stats(p)
    src = FollowSource(str(p), poll_ms=5, inotify=False)
    src.once = True
    n = sum(len(b) for b in src)
    assert n == want["emitted"] > 0
    assert src.stats.as_dict() == want


def test_follow_source_appended_in_pieces_counts_like_the_file(shared: Path, tmp_path: Path) -> None:
    src_file, raw = _two_logs(shared, tmp_path)
    want = _file_stats(src_file)
    lines = raw.splitlines(keepends=True)
    p = tmp_path / "growing.log"
    p.write_bytes(b"")
    src = FollowSource(str(p), poll_ms=5, inotify=False)
    got = [0]
    t = threading.Thread(target=lambda: got.__setitem__(0, sum(len(b) for b in src)), daemon=True)
    t.start()
    try:
        for i in range(0, len(lines), 4):
            with open(p, "ab") as fh:
                fh.write(b"".join(lines[i : i + 4]))
            # wait (bounded) until the follower has handed out everything written so far
            size, deadline = p.stat().st_size, time.monotonic() + 10
            while src._fol._read_to + len(src._fol._pending) < size and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(0.02)
    finally:
        src.close()
        t.join(5)
    assert not t.is_alive()
    assert got[0] == want["emitted"] > 0
    # the last #close line is only seen, never written as a record: everything else must match
    assert src.stats.as_dict() == want


def test_flows_follow_cli_counts_header_lines_once(shared: Path, tmp_path: Path) -> None:
    p, _ = _two_logs(shared, tmp_path)
    want = _file_stats(p)
    out = tmp_path / "flows.jsonl"
    r = subprocess.run([sys.executable, "-m", "sidecar.cli.main", "flows", "--follow", "--input", str(p),
                        "--out", str(out), "--poll", "0.05", "--idle-exit", "0.5"],
                       capture_output=True, timeout=120, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(rb"total: (\{.*\})", r.stderr)
    assert m is not None, r.stderr[-500:]
    assert orjson.loads(m.group(1)) == want
    assert len(out.read_bytes().splitlines()) == want["emitted"]


def test_follow_header_state_is_bounded_for_hash_lines_in_json(tmp_path: Path) -> None:
    """JSON input has no ``#separator`` to reset the follower's header state: 500 ``#`` lines
    must not grow it (nor the checkpoint) past MAX_HEADER_LINES; every line is still handed out."""
    from sidecar.sources.follow import MAX_HEADER_LINES, Follower

    p = tmp_path / "eve.json"
    p.write_bytes(b"".join(b"# junk %d\n" % i for i in range(500)) + b'{"event_type":"flow"}\n')
    fol = Follower(p, inotify=False)
    got: list[bytes] = []
    for _ in range(100):
        lines = fol.poll()
        if not lines:
            break
        got += lines
        fol.commit()
    fol.close()
    assert len(got) == 501 and len(fol.state.header) == MAX_HEADER_LINES
