"""Feature extraction alone (:func:`sidecar.features.schema.extract`) per batch size.

Follow mode scores small micro-batches (the service closes a batch as soon as input is
idle, so 1-20 flows are common), where extract's fixed cost per call matters more than
its cost per row. Per hot input (its records read with the sidecar reader into one
canonical batch, repeated to at least 4x the largest batch size) and batch size: p50/p99
per-call latency and flows/s of ``extract(rows)``. Calls cycle through up to 64 different
row windows, cut before timing (``FlowBatch.take`` is not extract's cost).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sidecar.bench.common import Input, reader, time_windows
from sidecar.features.schema import extract
from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats

BATCHES = (1, 8, 64, 1024)
#: distinct row windows the timed calls cycle through
WINDOWS = 64


def real_batch(inp: Input, rows: int) -> FlowBatch:
    """The input's canonical records as one batch, repeated to at least ``rows`` rows."""
    b = FlowBatch.concat(list(reader(inp.fmt).read_lines(inp.stream(0), ReadStats())))
    reps = -(-rows // max(1, len(b)))
    return FlowBatch.concat([b] * reps) if len(b) and reps > 1 else b


def time_extract(windows: list[FlowBatch], seconds: float, min_calls: int = 20) -> dict[str, Any]:
    """Latency percentiles and flows/s of ``extract`` over ``windows`` (all of one size)."""
    return time_windows(extract, windows, len(windows[0]), seconds, min_calls)


def bench_features(
    inputs: list[Input], seconds: float, batches: tuple[int, ...] = BATCHES
) -> list[dict[str, Any]]:
    """Rows ``{input, format, batch, calls, p50_us, p99_us, flows_per_s, flows_per_s_cpu}``."""
    rows: list[dict[str, Any]] = []
    for inp in inputs:
        b = real_batch(inp, 4 * max(batches))
        if not len(b):
            rows.append({"input": inp.path.name, "format": inp.fmt, "error": "no records"})
            continue
        for n in batches:
            starts = range(0, len(b) - n + 1, max(n, (len(b) - n) // WINDOWS or 1))
            windows = [b.take(np.arange(s, s + n)) for s in starts][:WINDOWS]
            rows.append({"input": inp.path.name, "format": inp.fmt, **time_extract(windows, seconds)})
    return rows
