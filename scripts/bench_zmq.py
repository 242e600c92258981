#!/usr/bin/env python3
"""Throughput of the ZeroMQ pipeline (ship → N workers → collector) vs one process, same input, same run.

Input: real labelled Zeek conn logs (IoT-23, ``shared/data/zeek-labeled/iot-23``), the
file list repeated ``--repeat`` times. Both variants read, score and write every verdict
as a JSON line:

* ``single``: one process: read → score → write (what ``bnn-sidecar score`` does);
* ``zmq-N``: ``bnn-sidecar ship`` (subprocess) → N ``zmq_worker`` processes → collector
  in this process (ZmqVerdictSource → JSON lines), with acks. Time = ship's own
  summary seconds (first read to last ack), workers started and warm beforehand.

The variants run interleaved for ``--rounds`` rounds (median reported), because a shared
box's load changes under a benchmark. Besides wall-clock rate, each variant reports the
CPU seconds all its processes used (``getrusage``), so ``records per CPU-second`` shows the
transport's overhead and ``cpus x records/CPU-s`` the ceiling on an otherwise idle machine.

    .venv/bin/python scripts/bench_zmq.py --workers 1 2 3 --repeat 4 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sidecar.scorer import make_scorer  # noqa: E402
from sidecar.sources.base import ReadStats  # noqa: E402
from sidecar.sources.detect import read_path  # noqa: E402
from sidecar.transports.zmq_flow import ZmqVerdictSource  # noqa: E402

SHARED = Path(os.environ.get("BNN_SHARED_DATA", REPO.parent / "shared" / "data"))
MODEL = REPO / "sidecar" / "data" / "model" / "bnn.onnx"
PY = sys.executable


def inputs(repeat: int) -> list[str]:
    files = sorted(str(p) for p in (SHARED / "zeek-labeled" / "iot-23").glob("*/conn.log.labeled.gz"))
    if not files:
        sys.exit(f"no input under {SHARED}/zeek-labeled/iot-23")
    return files * repeat


def cpu_s() -> float:
    """CPU seconds of this process, all threads (the collector and its ZeroMQ I/O thread)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def single(files: list[str], out: Path, engine: str, batch: int) -> dict[str, float]:
    scorer = make_scorer(MODEL, engine)
    c0 = cpu_s()
    t1 = time.perf_counter()
    n = 0
    with open(out, "wb") as fh:
        for p in files:
            for b in read_path(p, "auto", ReadStats(), batch_size=batch):
                v = scorer.score(b)
                fh.write(b"".join(orjson.dumps(r) + b"\n" for r in v.iter_json()))
                n += len(v)
    dt = time.perf_counter() - t1
    return {"records": n, "seconds": round(dt, 3), "rate": round(n / dt), "cpu_s": round(cpu_s() - c0, 2)}


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        p: int = s.getsockname()[1]
        return p


def pipeline(files: list[str], n_workers: int, out: Path, engine: str, batch: int, tmp: Path) -> dict[str, object]:
    flows, verdicts, acks = (f"tcp://127.0.0.1:{port()}" for _ in range(3))
    src = ZmqVerdictSource(verdicts, acks=acks)
    written = [0]

    def collect() -> None:
        with open(out, "wb") as fh:
            for v in src:
                fh.write(b"".join(orjson.dumps(r) + b"\n" for r in v.iter_json()))
                written[0] += len(v)

    coll = threading.Thread(target=collect, daemon=True)
    coll.start()
    logs = [tmp / f"worker{i}.err" for i in range(n_workers)]
    workers = [subprocess.Popen([PY, "-m", "sidecar.transports.zmq_worker", "--pull", flows, "--push", verdicts,
                                 "--engine", engine], cwd=REPO, stderr=open(lg, "wb"))  # noqa: SIM115
               for lg in logs]
    try:
        end = time.monotonic() + 60
        while not all("worker ready" in lg.read_text() for lg in logs):
            if time.monotonic() > end:
                raise SystemExit("workers did not start")
            time.sleep(0.1)
        c0 = cpu_s()
        r = subprocess.run([PY, "-m", "sidecar.cli.main", "ship", "--input", *files, "--push", flows, "--acks", acks,
                            "--batch", str(batch), "--window", str(16 * n_workers), "--resend-after", "30"],
                           cwd=REPO, capture_output=True, timeout=900)
        text = r.stderr.decode()
        if r.returncode != 0 or "ship summary: " not in text:
            raise SystemExit(f"ship failed ({r.returncode}): {text[-2000:]}")
        s = json.loads(text.split("ship summary: ", 1)[1].splitlines()[0])
        c_coll = cpu_s() - c0
    finally:
        src.close()
        coll.join(timeout=10)
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(timeout=10)
            except subprocess.TimeoutExpired:
                w.kill()
    c_workers = 0.0
    for lg in logs:  # each worker's CPU from "ready" to exit (model load excluded)
        text = lg.read_text()
        if "worker summary: " in text:
            c_workers += float(json.loads(text.split("worker summary: ", 1)[1].splitlines()[0])["cpu_s"])
    dt = float(s["seconds"])
    # CPU = ship (after its imports) + workers (after model load) + collector (this process)
    cpu = float(s["cpu_s"]) + c_workers + c_coll
    return {"records": s["scored_records"], "written": written[0], "seconds": dt,
            "rate": round(s["scored_records"] / dt), "cpu_s": round(cpu, 2), "cpu_ship": s["cpu_s"],
            "cpu_workers": round(c_workers, 2), "cpu_collector": round(c_coll, 2), "resent": s["resent"],
            "duplicates": src.duplicates, "unacked": s["unacked_batches"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--repeat", type=int, default=4, help="repeat the IoT-23 file list this many times")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--engine", default="onnx", choices=["onnx", "numpy"])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--tmp", default="/tmp/bench_zmq")
    a = ap.parse_args()
    tmp = Path(a.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    files = inputs(a.repeat)
    cpus = os.cpu_count() or 1
    res: dict[str, object] = {"cpus": cpus, "engine": a.engine, "batch": a.batch, "files": len(files),
                              "rounds": a.rounds, "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    runs: dict[str, list[dict[str, object]]] = {}
    n_records = None
    for rnd in range(a.rounds):
        for name in ["single", *(f"zmq-{n}" for n in a.workers)]:
            if name == "single":
                r: dict[str, object] = dict(single(files, tmp / "out.jsonl", a.engine, a.batch))
            else:
                r = pipeline(files, int(name[4:]), tmp / "out.jsonl", a.engine, a.batch, tmp)
                if r["records"] != n_records or r["written"] != n_records or r["unacked"]:
                    print(f"ACCOUNTING MISMATCH in {name}: {r} (single: {n_records})", file=sys.stderr)
                    return 1
            n_records = n_records if n_records is not None else r["records"]
            runs.setdefault(name, []).append(r)
            print(f"round {rnd + 1} {name:7s}: {r['records']} records, {r['seconds']} s, {r['rate']} rec/s, "
                  f"{r['cpu_s']} CPU-s", file=sys.stderr, flush=True)
    base = statistics.median(float(x["rate"]) for x in runs["single"])  # type: ignore[arg-type]
    print(f"{'variant':8s} {'median rec/s':>12s} {'x single':>8s} {'rec/CPU-s':>10s} {'ceiling':>8s}")
    for name, rs in runs.items():
        rate = statistics.median(float(x["rate"]) for x in rs)  # type: ignore[arg-type]
        eff = statistics.median(float(x["records"]) / float(x["cpu_s"]) for x in rs)  # type: ignore[arg-type]
        res[name] = {"median_rate": round(rate), "vs_single": round(rate / base, 2),
                     "records_per_cpu_s": round(eff), "idle_ceiling": round(eff * cpus), "runs": rs}
        print(f"{name:8s} {rate:12.0f} {rate / base:8.2f} {eff:10.0f} {eff * cpus:8.0f}")
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
