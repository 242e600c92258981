"""Model-only speed: ``engine.run`` on a prepared float32 feature matrix."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from sidecar.bench.common import Input, reader
from sidecar.errors import EngineUnavailable
from sidecar.features.schema import extract
from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats

BATCHES = (1, 64, 1024)


def real_features(inputs: list[Input], rows: int) -> np.ndarray:
    """Feature rows of the real inputs, tiled to ``rows`` (float32, C order)."""
    parts = []
    for inp in inputs:
        st = ReadStats()
        batches = list(reader(inp.fmt).read_lines(inp.stream(0), st))
        if batches:
            parts.append(extract(FlowBatch.concat(batches)))
    if not parts:
        raise ValueError("no records in the benchmark inputs")
    x = np.concatenate(parts)
    reps = -(-rows // len(x))
    return np.ascontiguousarray(np.tile(x, (reps, 1))[:rows], dtype=np.float32)


def load(kind: str, model: Path) -> Any:
    from sidecar.engines.load import load_engine

    return load_engine(model, kind)


def time_engine(engine: Any, x: np.ndarray, batch: int, seconds: float, min_calls: int = 20) -> dict[str, Any]:
    """Per-call latency percentiles and flows/s for one batch size.

    Calls cycle through different rows of ``x`` so caches see fresh input.
    ``flows_per_s`` is ``batch / p50``: the median call, robust to preemption on a
    shared machine; ``flows_per_s_cpu`` divides all flows by the process CPU time.
    """
    n = len(x)
    starts = list(range(0, max(1, n - batch + 1), batch)) or [0]
    for s in starts[:3]:
        engine.run(x[s : s + batch])  # warm up
    lat: list[int] = []
    c0 = time.process_time()
    deadline = time.perf_counter() + seconds
    i = 0
    while len(lat) < min_calls or time.perf_counter() < deadline:
        s = starts[i % len(starts)]
        xb = x[s : s + batch]
        t0 = time.perf_counter_ns()
        engine.run(xb)
        lat.append(time.perf_counter_ns() - t0)
        i += 1
        if len(lat) >= 2_000_000:
            break
    cpu = time.process_time() - c0
    a = np.asarray(lat, dtype=np.float64) / 1e3
    p50, p99 = float(np.percentile(a, 50)), float(np.percentile(a, 99))
    return {
        "batch": batch,
        "calls": len(lat),
        "p50_us": round(p50, 1),
        "p99_us": round(p99, 1),
        "flows_per_s": round(batch / (p50 / 1e6)) if p50 > 0 else 0,
        "flows_per_s_cpu": round(batch * len(lat) / cpu) if cpu > 0 else 0,
    }


def bench_model(
    inputs: list[Input], engines: list[str], model: Path, seconds: float, batches: tuple[int, ...] = BATCHES
) -> list[dict[str, Any]]:
    x = real_features(inputs, max(max(batches) * 8, 8192))
    rows: list[dict[str, Any]] = []
    for kind in engines:
        try:
            eng = load(kind, model)
        except EngineUnavailable as exc:
            rows.append({"engine": kind, "error": str(exc)})
            continue
        for b in batches:
            rows.append({"engine": kind, **time_engine(eng, x, b, seconds)})
    return rows
