"""Reader throughput beside the ``orjson.loads``-per-line ceiling on the same lines.

What is compared, exactly:

* both sides get the SAME in-memory ``list[bytes]`` (the input file's lines, line
  ends kept, repeated to ``--min-records``); neither side reads or decompresses a
  file, so file reading is excluded from both equally;
* reader: ``read_lines(lines, ReadStats())`` consumed to the end: canonical
  columnar ``FlowBatch`` objects (numpy columns, ``origin`` strings for eve),
  counted skips and ignored lines included;
* ceiling: ``orjson.loads(line)`` on every line, the result dropped at once
  (the dict is built and freed; nothing else);
* timing: CPU time of this process (``time.process_time``), best of ``--repeat``
  passes; reader and ceiling passes ALTERNATE, so a burst of load from other jobs
  on the machine hits both sides alike instead of one of them.

``ratio_vs_orjson`` = ceiling time / reader time on identical lines (1.0: the reader
costs no more than parsing the JSON alone). Eve lines that are not ``flow`` events
are in both times: the ceiling parses them, the reader decodes them far enough to
count them by event type.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson

from sidecar.bench.common import Input, best_of, best_of_alternating, count_records, rate, reader


def ceiling(lines: list[bytes]) -> int:
    """``orjson.loads`` on every line, nothing else: the floor of any JSON reader's cost."""
    loads = orjson.loads
    for ln in lines:
        loads(ln)
    return len(lines)


def bench_parse(inputs: list[Input], min_records: int, repeat: int) -> list[dict[str, Any]]:
    """One row per input: records/s of the reader and, for JSON formats, the ceiling."""
    rows: list[dict[str, Any]] = []
    for inp in inputs:
        mod = reader(inp.fmt)
        stream = inp.stream(min_records)
        json_fmt = inp.fmt in ("eve", "zeek-json")
        if json_fmt:
            t, c = best_of_alternating(
                [partial(count_records, mod, stream), partial(ceiling, stream)], repeat
            )
        else:
            t = best_of(partial(count_records, mod, stream), repeat)
        row: dict[str, Any] = {
            "input": inp.path.name,
            "format": inp.fmt,
            "lines": len(stream),
            "records": t.result,
            "reader_rec_per_s": rate(t.result, t.cpu),
            "reader_rec_per_s_wall": rate(t.result, t.wall),
        }
        if json_fmt:
            row["reader_lines_per_s"] = rate(len(stream), t.cpu)
            row["orjson_lines_per_s"] = rate(c.result, c.cpu)
            row["ratio_vs_orjson"] = round(c.cpu / t.cpu, 3) if t.cpu > 0 else None
            if inp.fmt == "eve":
                row["flow_lines"] = t.result  # the other lines are other event types
        rows.append(row)
    return rows
