"""Follow a growing log file (``tail -F``) with rotation and an atomic checkpoint.

* Complete lines only: a partial last line is held until its newline arrives.
* One UTF-8 BOM at offset 0 of a file is dropped (as the file readers do, see
  :mod:`sidecar.sources.bom`); a BOM anywhere else stays part of its line.
* Rotation by rename (Zeek: ``conn.log`` → ``conn.<ts>.log``, Suricata's default):
  the old file is read to its end through the open descriptor, then the new file
  at the path is opened from offset 0.
* Copy-truncate (Suricata/logrotate ``copytruncate``): the file shrinks below our
  offset, so reading restarts at 0.
* Checkpoint: ``{inode, offset, header, out_offset}`` written atomically (temp file,
  fsync, ``os.replace``). ``offset`` only ever covers lines the caller has fully
  handled, so after ``kill -9`` a restart resumes exactly there; the caller
  (``flows --follow``) truncates its output to ``out_offset`` so records written
  after the last checkpoint are not duplicated. If the file was rotated while we
  were down, the rest of the old file is found by inode in the same directory.
* Waiting: :meth:`Follower.wait` blocks until the file changes (inotify, see
  :mod:`sidecar.sources.follow_inotify`) or a timeout passes, whichever comes first;
  the timeout is the polling tick, and the only wake-up without inotify.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sidecar.sources.bom import BOM
from sidecar.sources.follow_inotify import FileWaker

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20
#: ``state.header`` keeps at most this many ``#`` lines (a Zeek TSV header block has 8; JSON input has
#: no ``#separator`` to reset it, so ``#`` lines there must not grow it, nor every checkpoint, without bound)
MAX_HEADER_LINES = 64


@dataclass
class FollowState:
    inode: int = -1
    offset: int = 0
    header: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def load_checkpoint(path: Path) -> FollowState | None:
    try:
        d = json.loads(path.read_text())
        return FollowState(int(d["inode"]), int(d["offset"]), list(d.get("header", [])), dict(d.get("extra", {})))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None


def save_checkpoint(path: Path, st: FollowState) -> None:
    tmp = path.with_name(path.name + ".tmp")
    data = json.dumps({"inode": st.inode, "offset": st.offset, "header": st.header, "extra": st.extra})
    with open(tmp, "w") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Follower:
    """Yields new complete lines of ``path`` on each :meth:`poll`.

    ``state.offset`` is advanced by :meth:`commit`, not by :meth:`poll`: the caller
    commits after it has written what the lines became.
    """

    def __init__(self, path: str | Path, state: FollowState | None = None, inotify: bool = True) -> None:
        self.path = Path(path)
        self.state = state or FollowState()
        self._inotify = inotify
        self._waker: FileWaker | None = None
        self._fh: IO[bytes] | None = None
        self._pending = b""
        self._read_to = self.state.offset  # offset of the end of lines handed out
        self._skip_rest = False  # the rest of an oversized line already handed out is dropped
        self._resume_old()

    def _resume_old(self) -> None:
        """Open the file the checkpoint points to (maybe rotated away) at its offset."""
        if self.state.inode < 0:
            return
        cand = [self.path, *sorted(self.path.parent.glob(self.path.stem + "*"))]
        for p in cand:
            try:
                if p.stat().st_ino == self.state.inode:
                    self._fh = open(p, "rb", buffering=0)  # noqa: SIM115
                    size = os.fstat(self._fh.fileno()).st_size
                    if size < self.state.offset:  # truncated while we were down
                        self.state.offset = 0
                        self.state.header = []
                    self._fh.seek(self.state.offset)
                    self._read_to = self.state.offset
                    return
            except OSError:
                continue
        log.warning("checkpointed file (inode %d) is gone; starting %s from 0", self.state.inode, self.path)
        self.state = FollowState(extra=self.state.extra)
        self._read_to = 0

    def _open_current(self) -> bool:
        try:
            fh = open(self.path, "rb", buffering=0)  # noqa: SIM115
        except FileNotFoundError:
            return False
        self._fh = fh
        self.state.inode = os.fstat(fh.fileno()).st_ino
        self.state.offset = 0
        self.state.header = []
        self._read_to = 0
        self._pending = b""
        self._skip_rest = False
        return True

    def poll(self, max_bytes: int = 4 << 20) -> list[bytes]:
        if self._fh is None and not self._open_current():
            return []
        assert self._fh is not None
        # Unbuffered: one read(2) per poll with data. Truncation and rotation are only checked
        # when it returns nothing (a file truncated below our offset reads as empty), so the
        # data path makes one system call (each one is a GIL hand-off to the scoring thread).
        chunk = self._fh.read(max_bytes) or b""
        if not chunk and os.fstat(self._fh.fileno()).st_size < self._read_to + len(self._pending):
            log.info("%s was truncated; reading from 0", self.path)  # copy-truncate
            self._fh.seek(0)
            self.state.offset = self._read_to = 0
            self.state.header = []
            self._pending = b""
            self._skip_rest = False
            chunk = self._fh.read(max_bytes) or b""
        if not chunk:
            try:
                rotated = self.path.stat().st_ino != self.state.inode
            except FileNotFoundError:
                rotated = False
            if not rotated:
                return []
            # Lines appended between the empty read above and the rename are still in the old
            # file: read it once more now that the rename is seen; switch only when that is empty.
            chunk = self._fh.read(max_bytes) or b""
            if not chunk:
                log.info("%s was rotated; switching to the new file", self.path)
                if self._pending:
                    log.warning("dropping %d bytes of unterminated last line of the rotated file", len(self._pending))
                self._fh.close()
                self._fh = None
                if self._open_current():  # read the new file now, not one wait later
                    return self.poll(max_bytes)
                return []
        while self._skip_rest:  # the rest of an oversized line (its head was one record): drop it
            nl = chunk.find(b"\n")
            if nl >= 0:
                self._read_to += nl + 1
                chunk = chunk[nl + 1 :]
                self._skip_rest = False
                break
            self._read_to += len(chunk)
            chunk = self._fh.read(max_bytes) or b""
            if not chunk:
                return []
        data = self._pending + chunk
        if not self._read_to and data[:3] == BOM:  # one BOM at offset 0 of a file is not data
            data = data[3:]
            self._read_to = 3
        cut = data.rfind(b"\n")
        if cut < 0:
            self._pending = data
            if len(self._pending) > MAX_LINE:
                # keep memory bounded: hand the oversized line out; the reader counts it as a skip
                lines, self._pending = [self._pending], b""
                self._read_to += len(lines[0])
                self._skip_rest = True
                return lines
            return []
        done, self._pending = data[: cut + 1], data[cut + 1 :]
        self._read_to += len(done)
        # lines end at b"\n" only, as in a file read (bytes.splitlines also splits at a lone b"\r")
        lines = done.splitlines(keepends=True) if b"\r" not in done else [x + b"\n" for x in done[:-1].split(b"\n")]
        if b"#" not in done or (done[:1] != b"#" and b"\n#" not in done):
            return lines  # no header line (the common case: one memchr)
        data_seen = False
        for k, ln in enumerate(lines):
            if ln.startswith(b"#"):
                if data_seen:
                    # A header after data lines (a Zeek TSV header block changing mid-file): end this
                    # poll before it, so that ``state.header`` after a poll is the header of every
                    # line it returned; the next poll reads from the header on.
                    back = len(done) - sum(map(len, lines[:k]))
                    self._fh.seek(-(back + len(self._pending)), os.SEEK_CUR)
                    self._read_to -= back
                    self._pending = b""
                    return lines[:k]
                if ln.startswith(b"#separator"):
                    self.state.header = []
                if len(self.state.header) < MAX_HEADER_LINES:  # bounded: "#" lines in JSON input
                    self.state.header.append(ln.decode("utf-8", "replace"))
            else:
                data_seen = True
        return lines

    def commit(self) -> None:
        """Mark every line returned so far as handled."""
        self.state.offset = self._read_to

    @property
    def waker(self) -> FileWaker:
        """The change notifier behind :meth:`wait` (created on first use)."""
        if self._waker is None:
            self._waker = FileWaker(self.path, use_inotify=self._inotify)
        return self._waker

    def wait(self, timeout: float) -> bool:
        """After an empty :meth:`poll`: block until the file (or its name) changes, :meth:`wake`
        is called, or ``timeout`` seconds pass. True when woken early (poll again now).

        The first call only sets the watches up and returns True: a change made before the
        watches existed would otherwise wait for the timeout."""
        if self._waker is None:
            self.waker  # noqa: B018
            return True
        return self._waker.wait(timeout)

    def wake(self) -> None:
        """End a current :meth:`wait` now (thread-safe)."""
        if self._waker is not None:
            self._waker.wake()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._waker is not None:
            self._waker.close()
