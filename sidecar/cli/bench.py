"""``bnn-sidecar bench [parse|model|e2e|rss|all]``: speed figures measured in one run, on one core.

* ``parse``: each reader's records/s on real record files (repeated in memory),
  beside the ``orjson.loads`` ceiling on the same lines (JSON formats).
* ``features``: feature extraction alone (``extract``) on the real records, batch
  1/8/64/1024: p50/p99 per-call latency and flows/s (follow mode's small batches).
* ``model``: the engine alone on real feature rows, batch 1/64/1024: p50/p99 per-call
  latency and flows/s, for each engine and two paths: ``run`` (both stages on every row)
  and ``cascade`` (``engine.run_cascade`` with the scorer's screen: stage 2 only on the
  rows the screen flags, what ``score`` and the service run; ``stage2_frac`` of them).
* ``e2e``: lines in → verdict JSON lines out, beside the reader alone on the same input.
* ``rss``: peak RSS while scoring, each engine in its own fresh child process.

The process pins itself to one CPU first (children inherit it) and BLAS/OpenMP
use one thread. Throughput is computed from CPU time (see sidecar/bench/common.py),
so a shared machine slows the wall clock more than the figures; the load average
is printed with them. A benchmark, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import os

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")  # before numpy is imported: one core, one thread

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import orjson  # noqa: E402

from sidecar.bench.common import MODEL, default_inputs, hot_inputs, machine, pin_one_core  # noqa: E402

WHATS = ("parse", "features", "model", "e2e", "rss")
COLUMNS: dict[str, tuple[str, ...]] = {
    "parse": ("input", "format", "records", "reader_rec_per_s", "orjson_lines_per_s", "ratio_vs_orjson",
              "reader_rec_per_s_wall"),
    "features": ("input", "format", "batch", "calls", "p50_us", "p99_us", "flows_per_s", "flows_per_s_cpu"),
    "model": ("engine", "path", "batch", "calls", "p50_us", "p99_us", "flows_per_s", "flows_per_s_cpu", "stage2_frac"),
    "e2e": ("engine", "rate_rule", "guess_rule", "input", "format", "flows", "e2e_flows_per_s", "parse_rec_per_s", "ratio_vs_parse",
            "e2e_flows_per_s_wall"),
    "rss": ("engine", "input", "flows", "peak_rss_mb", "rss_after_load_mb", "onnxruntime_loaded"),
}  # fmt: skip


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", choices=[*WHATS, "all"], nargs="?", default="all")
    p.add_argument("--input", "-i", nargs="+", metavar="PATH", help="record files (default: bundled samples)")
    p.add_argument("--engine", "-e", choices=["onnx", "numpy", "both"], default="both")
    p.add_argument("--model", "-m", default=str(MODEL), help="ONNX model (sha256-checked; numpy uses its pack)")
    p.add_argument("--min-records", type=int, default=100_000, help="input lines per timed pass (input repeated)")
    p.add_argument("--repeat", type=int, default=3, help="timed passes; the best is reported")
    p.add_argument("--seconds", type=float, default=1.0, help="model/features: seconds per engine or input, and batch size")
    p.add_argument("--rss-records", type=int, default=200_000, help="rss: input lines each child streams and scores")
    p.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the first allowed)")
    p.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """All requested sections as a JSON-ready dict (``machine`` + one list of rows per section)."""
    cpu = None if args.no_pin else pin_one_core(args.cpu)
    paths = [Path(p) for p in args.input] if args.input else default_inputs()
    inputs = hot_inputs(paths)
    engines = ["onnx", "numpy"] if args.engine == "both" else [args.engine]
    model = Path(args.model)
    whats = WHATS if args.what == "all" else (args.what,)
    out: dict[str, Any] = {"machine": {**machine(), "pinned_cpu": cpu}}
    if not inputs:
        out["error"] = "no Zeek/eve record files among the inputs"
        return out
    if "parse" in whats:
        from sidecar.bench.parse import bench_parse

        out["parse"] = bench_parse(inputs, args.min_records, args.repeat)
    if "features" in whats:
        from sidecar.bench.features import bench_features

        out["features"] = bench_features(inputs, args.seconds)
    if "model" in whats:
        from sidecar.bench.model import bench_model

        out["model"] = bench_model(inputs, engines, model, args.seconds)
    if "e2e" in whats:
        from sidecar.bench.e2e import bench_e2e

        out["e2e"] = bench_e2e(inputs, engines, model, args.min_records, args.repeat)
    if "rss" in whats:
        from sidecar.bench.rss import bench_rss

        rss_in = next((i for i in inputs if i.fmt == "eve"), inputs[0])
        out["rss"] = bench_rss(engines, rss_in.path, args.rss_records, model)
    out["machine"]["loadavg_1m_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return out


def format_tables(res: dict[str, Any]) -> str:
    lines = ["machine: " + ", ".join(f"{k}={v}" for k, v in res["machine"].items() if k != "timing"),
             f"timing: {res['machine'].get('timing', '')}"]  # fmt: skip
    if "error" in res:
        lines.append(f"error: {res['error']}")
    for what in WHATS:
        rows = res.get(what)
        if rows is None:
            continue
        cols = COLUMNS[what]
        lines += ["", f"## {what}", " | ".join(cols)]
        for r in rows:
            if "error" in r and what != "rss":
                lines.append(f"{r.get('engine', '')} | error: {r['error']}")
                continue
            lines.append(" | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols))
            if what == "rss" and r.get("error"):
                lines.append(f"  error: {r['error']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    res = run_bench(args)
    if args.json:
        sys.stdout.write(orjson.dumps(res, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(format_tables(res))
    return 1 if "error" in res else 0
