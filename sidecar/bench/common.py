"""Shared pieces of the benchmarks: inputs, timing, pinning, machine facts.

Timing uses the CPU time of this process (``time.process_time``) for throughput,
so a figure means "records per second of one busy core" even when other jobs share
the machine; the wall-clock figure is reported beside it. Per-call latencies use
``perf_counter_ns`` (a wall clock: preemption shows up in p99, which is the point).
"""

from __future__ import annotations

import gzip
import importlib
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.sources.base import ReadStats
from sidecar.sources.detect import FORMATS, detect_bytes

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
MODEL = Path(__file__).resolve().parent.parent / "data" / "model" / "bnn.onnx"
#: formats that are on the scoring hot path (CIC CSV is offline training input)
HOT_FORMATS = ("zeek-tsv", "zeek-json", "eve")


@dataclass
class Input:
    """One record file held in memory, split into header and body lines."""

    path: Path
    fmt: str
    header: list[bytes]
    body: list[bytes]

    def stream(self, min_records: int) -> list[bytes]:
        """Header + body repeated until at least ``min_records`` body lines."""
        reps = max(1, -(-min_records // max(1, len(self.body))))
        return self.header + self.body * reps

    def lazy_stream(self, min_records: int) -> Iterator[bytes]:
        """Like :meth:`stream` without materialising the repeated list (for RSS runs)."""
        reps = max(1, -(-min_records // max(1, len(self.body))))
        yield from self.header
        for _ in range(reps):
            yield from self.body


def load_input(path: Path) -> Input:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    lines = raw.splitlines(keepends=True)
    fmt = detect_bytes(b"".join(lines[:50]))
    if fmt == "zeek-tsv":
        header = [ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")]
        body = [ln for ln in lines if not ln.startswith(b"#")]
    else:
        header, body = [], lines
    return Input(path, fmt, header, body)


def default_inputs() -> list[Path]:
    return sorted(p for p in SAMPLES.iterdir() if p.name != "README.md")


def hot_inputs(paths: Iterable[Path]) -> list[Input]:
    return [i for i in map(load_input, paths) if i.fmt in HOT_FORMATS]


def reader(fmt: str) -> Any:
    return importlib.import_module(FORMATS[fmt])


def count_records(mod: Any, stream: Iterable[bytes]) -> int:
    st = ReadStats()
    return sum(len(b) for b in mod.read_lines(stream, st))


@dataclass
class Timing:
    cpu: float
    wall: float
    result: Any


def best_of(fn: Callable[[], Any], repeat: int) -> Timing:
    """Best (smallest CPU time) of ``repeat`` runs; wall time of that same run."""
    best: Timing | None = None
    for _ in range(max(1, repeat)):
        c0, w0 = time.process_time(), time.perf_counter()
        r = fn()
        t = Timing(time.process_time() - c0, time.perf_counter() - w0, r)
        if best is None or t.cpu < best.cpu:
            best = t
    assert best is not None
    return best


def best_of_alternating(fns: list[Callable[[], Any]], repeat: int) -> list[Timing]:
    """Best (smallest CPU time) of ``repeat`` passes of each function, passes interleaved."""
    best: list[Timing | None] = [None] * len(fns)
    for _ in range(max(1, repeat)):
        for i, fn in enumerate(fns):
            c0, w0 = time.process_time(), time.perf_counter()
            r = fn()
            t = Timing(time.process_time() - c0, time.perf_counter() - w0, r)
            b = best[i]
            if b is None or t.cpu < b.cpu:
                best[i] = t
    return [b for b in best if b is not None]


def pin_one_core(cpu: int | None = None) -> int | None:
    """Pin this process (and future children) to one CPU; returns it (None if unsupported)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    target = cpu if cpu is not None and cpu in allowed else allowed[0]
    os.sched_setaffinity(0, {target})
    return target


def one_thread_env() -> dict[str, str]:
    """Environment for child processes: one BLAS/OpenMP thread (one core means one thread)."""
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = "1"
    return env


def machine() -> dict[str, Any]:
    import numpy as np

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpus_online": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "timing": "throughput from CPU time of the bench process (best of --repeat); wall beside it",
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    except ImportError:
        info["onnxruntime"] = None
    info["msgspec"] = "msgspec" in sys.modules or _has("msgspec")
    return info


def _has(mod: str) -> bool:
    try:
        importlib.import_module(mod)
    except ImportError:
        return False
    return True


def rate(n: int, seconds: float) -> int:
    return round(n / seconds) if seconds > 0 else 0


def time_windows(call: Callable[[Any], Any], windows: Sequence[Any], batch: int, seconds: float,
                 min_calls: int = 20) -> dict[str, Any]:
    """Per-call latency percentiles and flows/s of ``call(w)``, cycling through ``windows``
    (pre-cut arguments of ``batch`` rows each, so cutting is not timed and caches see fresh input).

    ``flows_per_s`` is ``batch / p50``: the median call, robust to preemption on a shared
    machine; ``flows_per_s_cpu`` divides all flows by the process CPU time.
    """
    import numpy as np

    for w in windows[:3]:
        call(w)  # warm up
    lat: list[int] = []
    c0 = time.process_time()
    deadline = time.perf_counter() + seconds
    while len(lat) < min_calls or time.perf_counter() < deadline:
        w = windows[len(lat) % len(windows)]
        t0 = time.perf_counter_ns()
        call(w)
        lat.append(time.perf_counter_ns() - t0)
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
