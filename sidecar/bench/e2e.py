"""End to end: record lines in → canonical flows → features → engine → verdict JSON lines out."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from sidecar.bench.common import Input, best_of_alternating, count_records, rate, reader
from sidecar.errors import EngineUnavailable
from sidecar.jsonlines import score_to_json_lines
from sidecar.sources.base import ReadStats

#: records per micro-batch, as ``bnn-sidecar score`` uses by default
BATCH = 1024


def pipeline(mod: Any, stream: Iterable[bytes], scorer: Any, write: Callable[[bytes], Any], batch: int = BATCH) -> int:
    """What ``bnn-sidecar score`` does per batch (the same function); returns the flows scored.

    Each pass is a new input for the flood rule (its counts start from zero, as for a new file)."""
    scorer.reset_rate()
    return score_to_json_lines(mod.read_lines(stream, ReadStats(), batch_size=batch), scorer, write)


class NullSink:
    """Counts the verdict bytes instead of writing them (the disk is not what we measure)."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, b: bytes) -> int:
        self.bytes += len(b)
        return len(b)


def bench_e2e(
    inputs: list[Input], engines: list[str], model: Path, min_records: int, repeat: int
) -> list[dict[str, Any]]:
    """Per input and engine: verdicts/s end to end beside the reader alone on the same lines.

    Two rows per input and engine: with the flood and guessing rules as shipped (``rate_rule`` /
    ``guess_rule`` = their thresholds) and without either (``off``), timed in the same interleaved passes as the reader alone."""
    from sidecar.features.guess import GuessRule
    from sidecar.features.rate import RateRule
    from sidecar.scorer import make_scorer

    rows: list[dict[str, Any]] = []
    for kind in engines:
        try:
            scorer = make_scorer(model, kind)
            plain = make_scorer(model, kind, RateRule(threshold=0), guess=GuessRule(threshold=0))
        except EngineUnavailable as exc:
            rows.append({"engine": kind, "error": str(exc)})
            continue
        for inp in inputs:
            mod = reader(inp.fmt)
            stream = inp.stream(min_records)
            sinks = (NullSink(), NullSink())
            # passes interleaved, so a noisy stretch of the machine hits every side of the ratios
            e, e0, p = best_of_alternating(
                [partial(pipeline, mod, stream, scorer, sinks[0].write),
                 partial(pipeline, mod, stream, plain, sinks[1].write), partial(count_records, mod, stream)], repeat
            )
            for timing, sc, sink in ((e, scorer, sinks[0]), (e0, plain, sinks[1])):
                rows.append(
                    {
                        "engine": kind,
                        "rate_rule": sc.rate.threshold or "off",
                        "guess_rule": sc.guess.threshold or "off",
                        "input": inp.path.name,
                        "format": inp.fmt,
                        "flows": timing.result,
                        "e2e_flows_per_s": rate(timing.result, timing.cpu),
                        "e2e_flows_per_s_wall": rate(timing.result, timing.wall),
                        "parse_rec_per_s": rate(p.result, p.cpu),
                        "ratio_vs_parse": round(p.cpu / timing.cpu, 3) if timing.cpu > 0 else None,
                        "verdict_bytes_per_pass": sink.bytes // max(1, repeat),
                    }
                )
    return rows
