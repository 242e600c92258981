"""A sink writing verdicts as JSON lines in the ``score`` output schema.

``path = "-"`` writes to stdout (never closed by the sink). ``only_malicious`` keeps
only malicious verdicts. ``stamp_field`` (e.g. ``"t_out"``) adds the wall-clock write
time (UNIX seconds) to every row, which the latency benchmark compares with the time
each record was written to the followed log.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import IO

import numpy as np
import orjson

from sidecar.verdict import VerdictBatch


class JsonlSink:
    def __init__(self, path: str, only_malicious: bool = False, stamp_field: str = "") -> None:
        self.name = "jsonl"
        self.path = path
        self.only_malicious = only_malicious
        self.stamp_field = stamp_field
        self.written = 0
        self._fh: IO[bytes] | None = None
        self._open()

    def _open(self) -> None:
        if self.path == "-":
            self._fh = sys.stdout.buffer
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - long-lived handle

    def write(self, verdicts: VerdictBatch) -> None:
        if self._fh is None:
            raise ValueError("jsonl sink is closed")
        if self.only_malicious:
            verdicts = verdicts.take(np.flatnonzero(verdicts.malicious))
        if len(verdicts) == 0:
            return
        if self.stamp_field:
            now = time.time()
            key = self.stamp_field
            data = b"".join(orjson.dumps({**r, key: now}) + b"\n" for r in verdicts.iter_json())
        else:
            data = verdicts.json_lines()
        self._fh.write(data)
        self.written += len(verdicts)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def reopen(self) -> None:
        """Close and reopen ``path`` (SIGHUP after logrotate renamed it)."""
        if self.path == "-":
            return
        self.close()
        self._open()

    def close(self) -> None:
        if self._fh is None:
            return
        self._fh.flush()
        if self._fh is not sys.stdout.buffer:
            os.fsync(self._fh.fileno())
            self._fh.close()
        self._fh = None
