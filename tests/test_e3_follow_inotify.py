"""Follow mode woken by inotify (sidecar/sources/follow_inotify.py) on real Zeek records.

* :class:`FileWaker` wakes on writes, truncation, rotation by rename and a new file at
  the path, and on :meth:`FileWaker.wake` from another thread; writes to other files of
  the directory do not wake it; without inotify it is a plain timed wait.
* :class:`FollowSource` with inotify and a 1 s fallback tick reads a real conn.log
  through partial lines, Zeek-style rotation and copy-truncate with every record exactly
  once, and the wake-ups came from inotify; the same run with inotify off (polling) gives
  the same records.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest

from sidecar.service.follow_source import FollowSource
from sidecar.sources.follow import Follower
from sidecar.sources.follow_inotify import FileWaker

REAL_TSV = "zeek/slips/ctu-sme-11.conn.log.labeled"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux only")


def _tsv(shared: Path) -> tuple[list[bytes], list[bytes]]:
    lines = (shared / REAL_TSV).read_bytes().lstrip().splitlines(keepends=True)
    return ([ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")],
            [ln for ln in lines if not ln.startswith(b"#")])


def _waker(path: Path) -> FileWaker:
    w = FileWaker(path)
    assert w.inotify, "inotify_init1 failed on Linux (max_user_instances used up?)"
    return w


def test_waker_wakes_on_write_truncate_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "conn.log"
    log.write_bytes(b"#fields\tts\n")
    w = _waker(log)
    try:
        assert w.wait(0.05) is False  # nothing happened: the wait runs out
        with open(log, "ab") as fh:
            fh.write(b"1.0\n")
        assert w.wait(30) is True  # IN_MODIFY on the file
        os.truncate(log, 0)  # copy-truncate
        assert w.wait(30) is True
        os.rename(log, tmp_path / "conn.1.log")  # rotation: IN_MOVED_FROM on the directory
        assert w.wait(30) is True
        log.write_bytes(b"")  # the new file at the path: IN_CREATE (+ IN_MODIFY)
        assert w.wait(30) is True
        while w.wait(0.05):  # drain anything left over from the steps above
            pass
        with open(log, "ab") as fh:  # the new file is watched too
            fh.write(b"2.0\n")
        assert w.wait(30) is True
        assert w.events >= 5
    finally:
        w.close()


def test_waker_ignores_other_files_and_wakes_on_request(tmp_path: Path) -> None:
    log = tmp_path / "conn.log"
    log.write_bytes(b"")
    w = _waker(log)
    try:
        (tmp_path / "dns.log").write_bytes(b"other log of the same directory\n")
        with open(tmp_path / "dns.log", "ab") as fh:
            fh.write(b"more\n")
        assert w.wait(0.2) is False and w.events == 0
        woke: list[bool] = []
        t = threading.Thread(target=lambda: woke.append(w.wait(60)), daemon=True)
        t.start()
        time.sleep(0.05)
        w.wake()  # from another thread: close() uses this
        t.join(timeout=30)
        assert woke == [True]
    finally:
        w.close()
    w.wake()  # after close: a no-op, not an error
    assert w.wait(0.01) is False


def test_waker_waits_for_a_file_that_does_not_exist_yet(tmp_path: Path) -> None:
    log = tmp_path / "conn.log"
    w = _waker(log)
    try:
        log.write_bytes(b"#fields\tts\n")
        assert w.wait(30) is True
        while w.wait(0.05):
            pass
        with open(log, "ab") as fh:
            fh.write(b"1.0\n")
        assert w.wait(30) is True
    finally:
        w.close()


def test_fallback_without_inotify_is_a_timed_wait(tmp_path: Path) -> None:
    log = tmp_path / "conn.log"
    log.write_bytes(b"")
    w = FileWaker(log, use_inotify=False)
    try:
        assert not w.inotify
        with open(log, "ab") as fh:
            fh.write(b"x\n")
        assert w.wait(0.05) is False  # no inotify: only the timer ends the wait
        w.wake()
        assert w.wait(30) is True  # but close() can still wake it
    finally:
        w.close()


def test_follower_wait_is_created_lazily_and_closed(tmp_path: Path) -> None:
    log = tmp_path / "conn.log"
    log.write_bytes(b"a\n")
    fol = Follower(log)
    assert fol.poll() == [b"a\n"] and fol.poll() == []
    with open(log, "ab") as fh:
        fh.write(b"b\n")
    assert fol.wait(30) is True  # first wait: sets the watches up, asks for one more poll
    assert fol.poll() == [b"b\n"] and fol.poll() == []
    with open(log, "ab") as fh:
        fh.write(b"c\n")
    assert fol.wait(30) is True and fol.waker.events == 1 and fol.poll() == [b"c\n"]
    fol.close()
    assert fol.wait(0.01) is False  # closed: a plain bounded wait


def _run_follow(shared: Path, tmp_path: Path, inotify: bool) -> tuple[Counter[str], FollowSource]:
    header, body = _tsv(shared)
    log = tmp_path / "conn.log"
    log.write_bytes(b"".join(header))
    src = FollowSource(str(log), format="zeek-tsv", poll_ms=1000 if inotify else 20, batch_size=64,
                       inotify=inotify)
    got: list[str] = []
    lock = threading.Lock()

    def consume() -> None:
        for b in src:
            with lock:
                got.extend(b["uid"].tolist())

    t = threading.Thread(target=consume, daemon=True)
    t.start()

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                if len(got) >= n:
                    return
            time.sleep(0.01)
        raise AssertionError(f"follower got {len(got)} of {n} records")

    def append(lines: list[bytes]) -> None:
        for ln in lines:  # every record in two writes: the follower sees partial lines
            with open(log, "ab") as fh:
                fh.write(ln[:7])
                fh.flush()
                fh.write(ln[7:])

    try:
        append(body[:50])
        wait_for(50)
        os.rename(log, tmp_path / "conn.2026-11-23-20-00-00.log")  # Zeek rotation
        log.write_bytes(b"".join(header))
        append(body[50:100])
        wait_for(100)
        shutil.copyfile(log, tmp_path / "conn.log.1")  # copy-truncate, new content shorter than old
        os.truncate(log, 0)
        with open(log, "ab") as fh:
            fh.write(b"".join(header))
        append(body[100:130])
        wait_for(130)
    finally:
        src.close()
        t.join(timeout=10)
    assert not t.is_alive()
    return Counter(got), src


def test_follow_source_inotify_rotation_truncate_partial_exactly_once(shared: Path, tmp_path: Path) -> None:
    got, src = _run_follow(shared, tmp_path, inotify=True)
    _, body = _tsv(shared)
    want = Counter(ln.split(b"\t")[1].decode() for ln in body[:130])
    assert got == want and src.stats.read == 130
    assert src._fol.waker.inotify and src._fol.waker.events > 0  # woken by inotify, not only the 1 s tick


def test_follow_source_polling_fallback_same_records(shared: Path, tmp_path: Path) -> None:
    got, src = _run_follow(shared, tmp_path, inotify=False)
    _, body = _tsv(shared)
    want = Counter(ln.split(b"\t")[1].decode() for ln in body[:130])
    assert got == want and src.stats.read == 130
    assert not src._fol.waker.inotify and src._fol.waker.events == 0


def test_follower_truncate_below_a_held_partial_line_restarts_at_0(tmp_path: Path) -> None:
    log = tmp_path / "eve.json"
    log.write_bytes(b'{"a":1}\n{"b":')
    fol = Follower(log)
    assert fol.poll() == [b'{"a":1}\n'] and fol.poll() == []  # the partial line is held
    fol.commit()
    # copy-truncate, then a new line: the file (8 bytes) now ends before the held partial line
    # (read up to byte 14), though not before the last full line handed out (8)
    log.write_bytes(b'{"c":3}\n')
    assert fol.poll() == [b'{"c":3}\n']
    fol.commit()
    assert fol.state.offset == 8 and fol.poll() == []
    fol.close()


class _RotateOnStat(type(Path())):  # type: ignore[misc]
    """A real path whose next ``stat()`` first runs ``hook`` (real writes and a real rename):
    it puts a writer's append + rotation exactly between the follower's empty read and its
    rotation check, the interleaving that lost the last lines of a rotated file."""

    hook: ClassVar[list[Any]] = []

    def stat(self, *args: Any, **kwargs: Any) -> os.stat_result:
        while self.hook:
            self.hook.pop()()
        return super().stat(*args, **kwargs)


def test_lines_appended_just_before_a_rotation_are_not_lost(shared: Path, tmp_path: Path) -> None:
    header, body = _tsv(shared)
    log = tmp_path / "conn.log"
    log.write_bytes(b"".join(header + body[:10]))
    fol = Follower(log)
    fol.path = _RotateOnStat(log)
    got = [ln for ln in fol.poll() if not ln.startswith(b"#")]
    assert fol.poll() == []

    def append_and_rotate() -> None:
        with open(log, "ab") as fh:
            fh.write(b"".join(body[10:15]))
        os.rename(log, tmp_path / "conn.1.log")
        log.write_bytes(b"".join(header + body[15:18]))

    _RotateOnStat.hook.append(append_and_rotate)
    for _ in range(5):
        got += [ln for ln in fol.poll() if not ln.startswith(b"#")]
    fol.close()
    assert got == body[:18]
