"""Reader throughput beside the ``orjson.loads``-per-line ceiling on the same lines."""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson

from sidecar.bench.common import Input, best_of, count_records, rate, reader


def ceiling(lines: list[bytes]) -> int:
    """``orjson.loads`` on every line, nothing else: the floor of any JSON reader's cost."""
    loads = orjson.loads
    for ln in lines:
        loads(ln)
    return len(lines)


def bench_parse(inputs: list[Input], min_records: int, repeat: int) -> list[dict[str, Any]]:
    """One row per input: records/s of the reader and, for JSON formats, the ceiling.

    ``ratio_vs_orjson`` = (time of ``orjson.loads`` on the lines) / (time of the
    reader on the same lines): 1.0 means the reader costs no more than parsing the
    JSON alone. It compares times on identical input, so lines that are not flow
    records (other eve event types) count on both sides.
    """
    rows: list[dict[str, Any]] = []
    for inp in inputs:
        mod = reader(inp.fmt)
        stream = inp.stream(min_records)
        t = best_of(partial(count_records, mod, stream), repeat)
        row: dict[str, Any] = {
            "input": inp.path.name,
            "format": inp.fmt,
            "lines": len(stream),
            "records": t.result,
            "reader_rec_per_s": rate(t.result, t.cpu),
            "reader_rec_per_s_wall": rate(t.result, t.wall),
        }
        if inp.fmt in ("eve", "zeek-json"):
            c = best_of(partial(ceiling, stream), repeat)
            row["orjson_lines_per_s"] = rate(c.result, c.cpu)
            row["ratio_vs_orjson"] = round(c.cpu / t.cpu, 3) if t.cpu > 0 else None
            if inp.fmt == "eve":
                # eve: how much of the gap is non-flow events we skip without parsing
                row["flow_lines"] = t.result
        rows.append(row)
    return rows
