"""Model-only speed on a prepared float32 feature matrix, two paths per engine and batch size.

* ``path="run"``: ``engine.run`` (every output for every row; the keys of the original rows);
* ``path="cascade"``: what :meth:`sidecar.scorer.Scorer.score` really runs:
  ``engine.run_cascade(x, scorer.screen)`` (stage 2 only where the screen flags) when the
  engine has it, else ``engine.run``; ``stage2_frac`` is the fraction of rows it flagged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sidecar.bench.common import Input, reader, time_windows
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
    """The scorer for ``kind`` (sha256-checked model): its engine and its stage-1 screen."""
    from sidecar.scorer import make_scorer

    return make_scorer(model, kind)


def time_engine(engine: Any, x: np.ndarray, batch: int, seconds: float, min_calls: int = 20) -> dict[str, Any]:
    """:func:`time_call` of ``engine.run``."""
    return time_call(engine.run, x, batch, seconds, min_calls)


def time_call(
    call: Callable[[np.ndarray], Any], x: np.ndarray, batch: int, seconds: float, min_calls: int = 20
) -> dict[str, Any]:
    """:func:`~sidecar.bench.common.time_windows` of ``call`` over consecutive ``batch``-row slices of ``x``."""
    starts = list(range(0, max(1, len(x) - batch + 1), batch)) or [0]
    return time_windows(call, [x[s : s + batch] for s in starts], batch, seconds, min_calls)


def bench_model(
    inputs: list[Input], engines: list[str], model: Path, seconds: float, batches: tuple[int, ...] = BATCHES
) -> list[dict[str, Any]]:
    """Rows ``{engine, path, batch, ...}``: for each engine and batch, ``run`` then ``cascade``."""
    x = real_features(inputs, max(max(batches) * 8, 8192))
    rows: list[dict[str, Any]] = []
    for kind in engines:
        try:
            scorer = load(kind, model)
        except EngineUnavailable as exc:
            rows.append({"engine": kind, "error": str(exc)})
            continue
        eng, screen = scorer.engine, scorer.screen
        cascade = getattr(eng, "run_cascade", None)

        def scored(xb: np.ndarray, cascade: Any = cascade, eng: Any = eng, screen: Any = screen) -> Any:
            return cascade(xb, screen) if cascade is not None else eng.run(xb)

        frac = round(float(np.mean(screen(eng.run(x).bin_logit))), 3)
        for b in batches:
            rows.append({"engine": kind, "path": "run", **time_call(eng.run, x, b, seconds)})
            row = {"engine": kind, "path": "cascade" if cascade is not None else "run (no run_cascade)"}
            rows.append({**row, **time_call(scored, x, b, seconds), "stage2_frac": frac})
    return rows
