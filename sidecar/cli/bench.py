"""``bnn-sidecar bench``: throughput figures measured in one run on this machine.

``bench parse`` times every reader on real record files (repeated in memory so
a run lasts long enough to measure) beside the ceiling of ``orjson.loads`` alone on
the same lines, and prints records/s and the reader/ceiling ratio. It is a
benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from sidecar.sources.base import ReadStats
from sidecar.sources.detect import FORMATS, detect_bytes

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=["parse"], nargs="?", default="parse")
    p.add_argument("--input", "-i", nargs="+", metavar="PATH", help="record files (default: bundled samples)")
    p.add_argument("--min-records", type=int, default=200_000, help="records per timed pass (input repeated)")
    p.add_argument("--repeat", type=int, default=3, help="timed passes; the best is reported")


def _lines(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.splitlines(keepends=True)


def _best(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    best, n = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - t0)
    return best, n


def bench_parse(paths: list[Path], min_records: int, repeat: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for path in paths:
        lines = _lines(path)
        fmt = detect_bytes(b"".join(lines[:50]))
        if fmt == "cic-csv":
            continue  # offline training input, not a hot-path format
        mod = importlib.import_module(FORMATS[fmt])
        body = [ln for ln in lines if not ln.startswith(b"#")] if fmt == "zeek-tsv" else lines
        header = [ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")]
        reps = max(1, min_records // max(1, len(body)))
        stream = header + body * reps

        def run_reader(stream: list[bytes] = stream, mod: object = mod) -> int:
            st = ReadStats()
            n = 0
            for b in mod.read_lines(stream, st):  # type: ignore[attr-defined]
                n += len(b)
            return n

        t_reader, n = _best(run_reader, repeat)
        row: dict[str, object] = {"file": path.name, "format": fmt, "records": n,
                                  "reader_rec_per_s": round(n / t_reader)}
        if fmt in ("eve", "zeek-json"):
            data = body * reps

            def ceiling(data: list[bytes] = data) -> int:
                loads = orjson.loads
                for ln in data:
                    loads(ln)
                return len(data)

            t_ceil, m = _best(ceiling, repeat)
            row["orjson_lines_per_s"] = round(m / t_ceil)
            row["ratio_vs_orjson"] = round((n / t_reader) / (m / t_ceil), 3)
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    paths = [Path(p) for p in args.input] if args.input else sorted(
        p for p in SAMPLES.iterdir() if p.name != "README.md"
    )
    rows = bench_parse(paths, args.min_records, args.repeat)
    cols = ["file", "format", "records", "reader_rec_per_s", "orjson_lines_per_s", "ratio_vs_orjson"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r.get(c, "")) for c in cols))
    return 0
