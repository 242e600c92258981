"""A followed conn.log / eve.json as a live source of the service (``kind = "follow"``).

Wraps :class:`sidecar.sources.follow.Follower` (``tail -F`` with rotation, partial
lines and copy-truncate) and the format readers. At the end of the file iteration
blocks until the file changes (inotify) or ``poll_ms`` passes (the fallback tick that
also catches rotation and truncation); :meth:`close` from another thread wakes it, so
the iterator finishes at once (within ``poll_ms`` at worst).

Checkpoints are exact, at-least-once: after each poll the source offers a *token*
(the follow position after the lines of that poll) through :meth:`take_token`; the
service hands it back through :meth:`commit` only once the records before it are
written to every sink, and :meth:`save_checkpoint` persists the last committed token
(atomic write + fsync). After a crash, a restart resumes at the last saved position:
nothing is lost, records after it may be scored again.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from sidecar.errors import FormatDetectionError, InputError
from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import FORMATS, detect_bytes
from sidecar.sources.follow import Follower, FollowState, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


class FollowSource:
    def __init__(self, path: str, format: str = "auto", checkpoint: str | None = None,
                 poll_ms: int = 200, batch_size: int = 1024, inotify: bool = True) -> None:
        if format != "auto" and format not in FORMATS:
            raise InputError(f"unknown format {format!r}; choose one of auto, {', '.join(FORMATS)}")
        if not 1 <= poll_ms <= 1000:
            raise ValueError(f"poll_ms must be in [1, 1000] (close() must finish within ~1 s), got {poll_ms}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.path = Path(path)
        self.name = f"follow:{self.path}"
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.poll_s = poll_ms / 1000.0
        self.batch_size = batch_size
        self.stats = ReadStats()
        #: stop at the first empty poll (``run --once``: read what is there, then end)
        self.once = False
        state = (load_checkpoint(self.checkpoint) if self.checkpoint else None) or FollowState()
        fmt = state.extra.get("format") if format == "auto" else format
        self.format: str | None = fmt if fmt in FORMATS else None
        self._fol = Follower(self.path, state, inotify=inotify)
        self._fol.waker  # noqa: B018 -- create it now, so close() can always wake the iterator
        self._committed: FollowState | None = None
        self._saved: tuple[int, int] | None = None
        self._token: FollowState | None = None
        self._stop = threading.Event()
        self._started = False
        self._lock = threading.Lock()

    # -- iteration (the source thread) ----------------------------------------

    def __iter__(self) -> Iterator[FlowBatch]:
        self._started = True
        try:
            while not self._stop.is_set():
                lines = self._fol.poll()
                if self._committed is None and self._fol.state.inode >= 0 and self.checkpoint is not None \
                        and not self.checkpoint.exists():
                    # Pin the file we started on (offset 0) so that a crash before the first real
                    # checkpoint, followed by a rotation, resumes the rotated file instead of losing it.
                    self._committed = FollowState(self._fol.state.inode, 0, [], {})
                if not lines:
                    if self.once:
                        return
                    if not self._stop.is_set():
                        self._fol.wait(self.poll_s)
                    continue
                batches = self._parse(lines)
                self._fol.commit()
                st = self._fol.state
                token = FollowState(st.inode, st.offset, list(st.header),
                                    {"format": self.format} if self.format else {})
                if not batches:
                    batches = [FlowBatch.empty("follow")]
                for i, b in enumerate(batches):
                    self._token = token if i == len(batches) - 1 else None
                    yield b
        finally:
            with self._lock:
                self._fol.close()

    def _parse(self, lines: list[bytes]) -> list[FlowBatch]:
        header = [h.encode() for h in self._fol.state.header if not h.startswith("#close")]
        if self.format is None:
            try:
                if any(h.startswith(b"#fields") for h in header):
                    self.format = "zeek-tsv"
                else:
                    self.format = detect_bytes(b"".join(lines[:8]))
            except FormatDetectionError as exc:
                body = [ln for ln in lines if ln.strip() and not ln.startswith(b"#")]
                self.stats.read += len(body)
                for _ in body:
                    self.stats.skip("unknown-format", where=str(self.path), detail=str(exc))
                return []
        mod = importlib.import_module(FORMATS[self.format])
        if self.format != "zeek-tsv":  # a "#" line in JSON input is a bad record: the reader counts it
            return list(mod.read_lines(lines, self.stats, where=str(self.path), batch_size=self.batch_size))
        body = [ln for ln in lines if not ln.startswith(b"#")]
        # the header block is fed again with every poll: count only this poll's own "#" lines, once
        own = len(lines) - len(body)
        if not body:
            self.stats.ignored["header"] += own
            return []
        feed = header + body
        out = list(mod.read_lines(feed, self.stats, where=str(self.path), batch_size=self.batch_size))
        self.stats.ignored["header"] += own - len(header)
        return out

    def take_token(self) -> FollowState | None:
        """The follow position completed by the batch just yielded (``None`` mid-poll)."""
        tok, self._token = self._token, None
        return tok

    # -- called by the service's scoring loop -----------------------------------

    def commit(self, token: FollowState) -> None:
        """Every record before ``token`` has been written to the sinks."""
        self._committed = token

    def save_checkpoint(self) -> None:
        tok = self._committed
        if self.checkpoint is None or tok is None or (tok.inode, tok.offset) == self._saved:
            return
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.checkpoint, tok)
        self._saved = (tok.inode, tok.offset)

    def close(self) -> None:
        """Stop iterating (thread-safe; wakes the iterator, which ends at once)."""
        self._stop.set()
        self._fol.wake()
        if not self._started:
            with self._lock:
                self._fol.close()
