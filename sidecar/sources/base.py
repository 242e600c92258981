"""The source interface: something that yields canonical :class:`FlowBatch` objects.

A *reader* turns one record format (bytes/lines) into batches. A *source* is a
reader bound to a place (a file, a followed file, a socket, a WebSocket...).
Both expose the same small interface: iterate to get batches, and ``stats``
counts what was read, emitted and skipped (by reason). Bad input never raises out
of iteration: it is counted in ``stats.skipped`` and logged with file and line.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sidecar.flow import FlowBatch

log = logging.getLogger(__name__)

#: Default number of records per yielded batch.
DEFAULT_BATCH = 4096


@dataclass
class ReadStats:
    """Accounting of one reader/source. ``read == emitted + sum(skipped.values())``
    for record-bearing lines; ``ignored`` counts lines that are not records by design
    (headers, comments, blank lines, non-flow eve events) by kind. One exception:
    ``skipped["truncated-input"]`` (a compressed file cut mid-stream) counts the damaged end
    of a file, not a line that was read, so it has no matching ``read``."""

    read: int = 0
    emitted: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)
    #: values of emitted records the reader set to missing because they were impossible, by reason
    #: (e.g. an eve flow whose end precedes its start: its duration is unknown, the flow is kept)
    missing: Counter[str] = field(default_factory=Counter)
    #: how many skip log lines were emitted (capped so garbage input cannot flood logs)
    _logged: int = 0

    def skip(self, reason: str, where: str = "", detail: str = "", max_logged: int = 50) -> None:
        self.skipped[reason] += 1
        if self._logged < max_logged:
            self._logged += 1
            log.warning("skipped record (%s) at %s: %s", reason, where or "?", detail[:200])
        elif self._logged == max_logged:
            self._logged += 1
            log.warning("further skipped records are counted but not logged")

    def made_missing(self, reason: str, n: int, where: str = "", detail: str = "", max_logged: int = 50) -> None:
        """``n`` values of emitted records were impossible and set to missing (NaN); logged once per call."""
        self.missing[reason] += n
        if self._logged < max_logged:
            self._logged += 1
            log.warning("%d value(s) set to missing (%s) at %s: %s", n, reason, where or "?", detail[:200])

    def merge(self, other: ReadStats) -> None:
        self.read += other.read
        self.emitted += other.emitted
        self.skipped.update(other.skipped)
        self.ignored.update(other.ignored)
        self.missing.update(other.missing)

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "read": self.read,
            "emitted": self.emitted,
            "skipped": dict(sorted(self.skipped.items())),
            "ignored": dict(sorted(self.ignored.items())),
        }
        if self.missing:  # only when it happened: summaries of clean input are unchanged
            d["missing"] = dict(sorted(self.missing.items()))
        return d


@runtime_checkable
class Source(Protocol):
    """Yields canonical flow batches; ``stats`` accounts for every input record."""

    stats: ReadStats

    def __iter__(self) -> Iterator[FlowBatch]: ...

    def close(self) -> None: ...
