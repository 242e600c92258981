"""Bounded-latency micro-batching of columnar flow batches.

A micro-batch closes when it holds ``max_records`` records or ``max_ms`` milliseconds
after its first record arrived, whichever comes first. Batches stay columnar: incoming
:class:`~sidecar.flow.FlowBatch` pieces are sliced (numpy views) and concatenated
(:meth:`FlowBatch.concat`), never turned into per-flow objects.

Every added piece may carry a *tag* (e.g. a source checkpoint position). A tag travels
with the closed batch that holds the last record of its piece, so a caller that
commits a tag after handling a closed batch never commits records it has not handled.

A closed batch holds records of one source only: a piece whose format
(``FlowBatch.source``) or ``key`` (the service passes its source's label) differs from the
open batch's closes the open batch first. The feature code reads the format (Zeek's
unset-duration rule), so a Zeek record must not lose its Zeek semantics because a Suricata
record arrived in the same 50 ms; the scorer counts per source (the flood rule, the capture
check), so two sensors' records are not pooled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sidecar.flow import FlowBatch


@dataclass
class Closed:
    """A closed micro-batch: the records, the tags it completes, when its first record came."""

    batch: FlowBatch
    tags: list[Any] = field(default_factory=list)
    opened: float = 0.0
    #: the ``key`` its pieces were added with (one source's label in the service)
    key: Any = None


def slice_batch(b: FlowBatch, start: int, stop: int) -> FlowBatch:
    """Rows ``start:stop`` of ``b`` as views (no copy)."""
    return FlowBatch(
        {k: v[start:stop] for k, v in b.cols.items()},
        b.source,
        None if b.label is None else b.label[start:stop],
        {k: v[start:stop] for k, v in b.extra.items()},
        None if b.origin is None else b.origin[start:stop],
    )


class MicroBatcher:
    def __init__(self, max_records: int = 1024, max_ms: float = 50.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_records < 1:
            raise ValueError("max_records must be >= 1")
        if max_ms <= 0:
            raise ValueError("max_ms must be > 0")
        self.max_records = max_records
        self.max_s = max_ms / 1000.0
        self.clock = clock
        self._pieces: list[FlowBatch] = []
        self._tags: list[Any] = []
        self._n = 0
        self._opened = 0.0
        self._key: Any = None

    @property
    def pending(self) -> int:
        """Records waiting in the open batch."""
        return self._n

    def deadline(self) -> float | None:
        """Clock time at which the open batch closes by age; ``None`` when nothing is open."""
        return self._opened + self.max_s if self._n else None

    def add(self, batch: FlowBatch, tag: Any = None, now: float | None = None, key: Any = None) -> list[Closed]:
        """Add records; return the batches that closed by size or by a change of source (usually none
        or one). ``key`` names the source of the records (pieces of different keys never share a batch)."""
        now = self.clock() if now is None else now
        n = len(batch)
        if n == 0:
            if tag is None:
                return []
            if self._n == 0:  # nothing open: the tag is complete right away
                return [Closed(batch, [tag], now)]
            self._tags.append(tag)
            return []
        out: list[Closed] = []
        if self._n and (self._key != key or self._pieces[0].source != batch.source):
            out.append(self._close())  # one source per batch (module docstring)
        start = 0
        while start < n:
            if self._n == 0:
                self._opened = now
                self._key = key
            take = min(self.max_records - self._n, n - start)
            piece = batch if (start == 0 and take == n) else slice_batch(batch, start, start + take)
            self._pieces.append(piece)
            self._n += take
            start += take
            if start == n and tag is not None:
                self._tags.append(tag)
            if self._n >= self.max_records:
                out.append(self._close())
        return out

    def poll(self, now: float | None = None) -> Closed | None:
        """The open batch if it is ``max_ms`` old, else ``None``."""
        if self._n == 0:
            return None
        now = self.clock() if now is None else now
        if now >= self._opened + self.max_s:
            return self._close()
        return None

    def flush(self) -> Closed | None:
        """Close the open batch now (shutdown); ``None`` when nothing is open."""
        if self._n == 0 and not self._tags:
            return None
        if self._n == 0:
            tags, self._tags = self._tags, []
            return Closed(FlowBatch.empty(), tags, self.clock())
        return self._close()

    def _close(self) -> Closed:
        c = Closed(FlowBatch.concat(self._pieces), self._tags, self._opened, self._key)
        self._pieces, self._tags, self._n = [], [], 0
        return c
