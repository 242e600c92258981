"""Wake a file follower when its file changes (Linux inotify via ctypes), with a bounded wait.

:class:`FileWaker` blocks in :meth:`FileWaker.wait` until one of

* the followed file is written or truncated (``IN_MODIFY`` on the file's inode),
* its directory gains or loses the file's name (``IN_CREATE`` / ``IN_MOVED_TO`` /
  ``IN_MOVED_FROM`` / ``IN_DELETE``: rotation by rename, a new file opened),
* another thread calls :meth:`FileWaker.wake` (a self-pipe; used by ``close()``),
* the timeout passes (the fallback tick: rotation and copy-truncate detection go on
  by polling even if an event is missed, and every wait is bounded).

Without inotify (not Linux, no libc symbol, ``EMFILE`` because the per-user
``max_user_instances`` is used up, ...) the waker falls back to plain timed waits and
says so once at debug level. No dependency beyond the standard library.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import select
import struct
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

IN_MODIFY = 0x00000002
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_CLOEXEC = 0o2000000
IN_NONBLOCK = 0o4000

FILE_MASK = IN_MODIFY
DIR_MASK = IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE | IN_ONLYDIR
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then name[len]

_fallback_logged = False


def _log_fallback(reason: str) -> None:
    global _fallback_logged
    if not _fallback_logged:
        _fallback_logged = True
        log.debug("inotify unavailable (%s): followers poll on a timer", reason)


class Inotify:
    """A non-blocking inotify descriptor (thin ctypes wrapper over libc)."""

    def __init__(self) -> None:
        if not sys.platform.startswith("linux"):
            raise OSError(errno.ENOSYS, "inotify is Linux only")
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name, use_errno=True)
        try:
            self._init1 = libc.inotify_init1
            self._add = libc.inotify_add_watch
            self._rm = libc.inotify_rm_watch
        except AttributeError as exc:
            raise OSError(errno.ENOSYS, f"libc has no inotify: {exc}") from exc
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = self._init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"inotify_init1: {os.strerror(e)}")
        self.fd: int = fd

    def add_watch(self, path: Path, mask: int) -> int:
        wd = int(self._add(self.fd, os.fsencode(path), mask))
        if wd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"inotify_add_watch {path}: {os.strerror(e)}")
        return wd

    def rm_watch(self, wd: int) -> None:
        self._rm(self.fd, wd)  # EINVAL when the kernel already dropped it (inode gone): fine

    def read_events(self) -> list[tuple[int, int, bytes]]:
        """Every queued event as ``(wd, mask, name)``; empty when none is queued."""
        out: list[tuple[int, int, bytes]] = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            if not buf:
                return out
            pos = 0
            while pos + _EVENT.size <= len(buf):
                wd, mask, _cookie, n = _EVENT.unpack_from(buf, pos)
                pos += _EVENT.size
                out.append((wd, mask, buf[pos:pos + n].rstrip(b"\0")))
                pos += n

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FileWaker:
    """Block until ``path`` (or its name in its directory) changes, a wake-up, or a timeout.

    :meth:`wait` belongs to one thread (the follower's); :meth:`wake` may be called
    from any thread; :meth:`close` by the waiting thread (or when nobody waits).
    """

    def __init__(self, path: str | Path, use_inotify: bool = True) -> None:
        self.path = Path(path)
        self._name = os.fsencode(self.path.name)
        self._ino: Inotify | None = None
        self._dir_wd: int | None = None
        self._file_wd: int | None = None
        self._prev_wd: int | None = None
        self._lock = threading.Lock()
        self._rd, self._wr = os.pipe()
        os.set_blocking(self._rd, False)
        os.set_blocking(self._wr, False)
        self._poller = select.poll()
        self._poller.register(self._rd, select.POLLIN)
        #: wake-ups by inotify events (for tests and metrics)
        self.events = 0
        #: True when changes wake :meth:`wait` (else it is a plain timed wait)
        self.inotify = False
        if use_inotify:
            try:
                self._ino = Inotify()
            except OSError as exc:
                _log_fallback(str(exc))
        else:
            _log_fallback("disabled")
        if self._ino is not None:
            self.inotify = True
            self._poller.register(self._ino.fd, select.POLLIN)
            self._watch_dir()
            self._watch_file()

    def _watch_dir(self) -> None:
        assert self._ino is not None
        try:
            self._dir_wd = self._ino.add_watch(self.path.parent, DIR_MASK)
        except OSError as exc:  # directory missing (yet): the timer tick retries
            self._dir_wd = None
            log.debug("cannot watch %s: %s", self.path.parent, exc)

    def _watch_file(self) -> None:
        """(Re)watch whatever file is at ``path`` now; keep the previous file's watch too
        (after a rename the follower still reads the old file to its end)."""
        assert self._ino is not None
        try:
            wd = self._ino.add_watch(self.path, FILE_MASK)
        except OSError:
            return  # not there yet: IN_CREATE / IN_MOVED_TO on the directory brings us back
        if wd == self._file_wd:
            return
        if self._prev_wd is not None and self._prev_wd != wd:
            self._ino.rm_watch(self._prev_wd)
        self._prev_wd, self._file_wd = self._file_wd, wd

    def _relevant(self, events: list[tuple[int, int, bytes]]) -> bool:
        hit = False
        for wd, mask, name in events:
            if mask & IN_Q_OVERFLOW:
                hit = True
            elif wd == self._dir_wd and name == self._name:
                hit = True
                if mask & (IN_CREATE | IN_MOVED_TO):
                    self._watch_file()
            elif wd == self._dir_wd and mask & IN_IGNORED:
                self._dir_wd = None  # directory removed: the tick retries
                hit = True
            elif wd in (self._file_wd, self._prev_wd):
                if mask & IN_IGNORED:
                    if wd == self._file_wd:
                        self._file_wd = None
                    else:
                        self._prev_wd = None
                hit = True
        return hit

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when woken by a change or :meth:`wake`."""
        deadline = time.monotonic() + max(0.0, timeout)
        if self._rd < 0:  # closed: a bounded plain wait, never a busy loop
            time.sleep(max(0.0, timeout))
            return False
        if self._ino is not None:
            if self._dir_wd is None:
                self._watch_dir()
            if self._file_wd is None:
                self._watch_file()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                ready = self._poller.poll(max(1, int(left * 1000 + 0.999)))
            except InterruptedError:
                continue
            if not ready:
                return False
            woke = False
            for fd, _ in ready:
                if fd == self._rd:
                    self._drain_pipe()
                    woke = True
                elif self._ino is not None and fd == self._ino.fd and self._relevant(self._ino.read_events()):
                    self.events += 1
                    woke = True
            if woke:
                return True

    def _drain_pipe(self) -> None:
        try:
            while os.read(self._rd, 512):
                pass
        except (BlockingIOError, OSError):
            pass

    def wake(self) -> None:
        """Make a current (or the next) :meth:`wait` return at once; any thread."""
        with self._lock:
            if self._wr < 0:
                return
            with contextlib.suppress(OSError):  # pipe full: a wake-up is already pending
                os.write(self._wr, b"x")

    def close(self) -> None:
        with self._lock:
            if self._ino is not None:
                self._ino.close()
                self._ino = None
            for fd in (self._rd, self._wr):
                if fd >= 0:
                    os.close(fd)
            self._rd = self._wr = -1
