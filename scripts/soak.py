#!/usr/bin/env python3
"""Soak and latency benchmark of ``bnn-sidecar run`` in follow mode.

A writer appends real Zeek conn records (replayed from a real labelled conn.log, with
``uid`` made unique and ``ts`` rewritten to the write time) to a followed ``conn.log``
at a paced rate (default 10 000 records/s, written every 10 ms), rotating the file
Zeek-style (rename + new header) every ``--rotate-s`` seconds. ``bnn-sidecar run``
follows it and writes notice.log + JSON-lines verdicts. At the end the service is
stopped with SIGTERM and its accounting summary is compared with what was written.

Reports (JSON on stdout): records written / in / scored / skipped / unaccounted, RSS at
start (after warm-up) and end (and max), achieved rate, and with ``--latency`` the
record-to-verdict latency percentiles (verdict ``t_out`` stamp minus the time the
record's line was written).

    .venv/bin/python scripts/soak.py --minutes 10 --out-dir /tmp/soak
    .venv/bin/python scripts/soak.py --minutes 1 --latency --out-dir /tmp/lat
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = REPO / "sidecar" / "data" / "samples" / "ctu-sme-11.conn.log.labeled.gz"


def read_records(path: Path) -> tuple[list[bytes], list[list[bytes]]]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    lines = data.lstrip().splitlines(keepends=True)
    header = [ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")]
    body = [ln.rstrip(b"\r\n").split(b"\t") for ln in lines if ln.strip() and not ln.startswith(b"#")]
    return header, body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> int:
    try:
        for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1])
    except OSError:
        pass
    return -1


def cpu_s(pid: int) -> float:
    """user + system CPU seconds of ``pid``."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return -1.0


def scrape(port: int) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return out
    for ln in text.splitlines():
        m = re.match(r"^(bnn_sidecar_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", ln)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=10_000, help="records per second")
    ap.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="real Zeek TSV conn.log to replay")
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--engine", default="onnx", choices=["onnx", "numpy"])
    ap.add_argument("--poll-ms", type=int, default=200)
    ap.add_argument("--batch-ms", type=float, default=50.0)
    ap.add_argument("--no-inotify", action="store_true", help="follow by polling only (the fallback path)")
    ap.add_argument("--rotate-s", type=float, default=60.0)
    ap.add_argument("--latency", action="store_true", help="write every verdict with a t_out stamp and report latency")
    ap.add_argument("--warmup-s", type=float, default=15.0, help="RSS 'start' is taken after this many seconds")
    a = ap.parse_args()

    out = a.out_dir
    out.mkdir(parents=True, exist_ok=True)
    for p in out.glob("*"):
        if p.is_file():
            p.unlink()
    header, body = read_records(a.input)
    log, port = out / "conn.log", free_port()
    log.write_bytes(b"".join(header))
    verdicts = out / "verdicts.jsonl"
    cfg = out / "soak.toml"
    cfg.write_text(
        f'[sidecar]\nengine = "{a.engine}"\nbatch_ms = {a.batch_ms}\ncheckpoint_dir = "{out}/ckpt"\n'
        f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
        f'[[source]]\nkind = "follow"\npath = "{log}"\npoll_ms = {a.poll_ms}\n'
        f'inotify = {"false" if a.no_inotify else "true"}\n'
        f'[[sink]]\nkind = "notice_log"\npath = "{out}/notice.log"\n'
        f'[[sink]]\nkind = "jsonl"\npath = "{verdicts}"\nonly_malicious = {"false" if a.latency else "true"}\n'
        f'stamp_field = "t_out"\n'
    )
    child = subprocess.Popen([sys.executable, "-m", "sidecar.cli.main", "run", "--config", str(cfg)],
                             stdout=subprocess.DEVNULL, stderr=open(out / "run.stderr", "wb"))  # noqa: SIM115
    seconds = a.minutes * 60.0
    total = int(a.rate * seconds)
    t_write = np.zeros(total, dtype=np.float64)
    samples: list[tuple[float, int]] = []
    written = rotations = 0
    rss_start = -1
    time.sleep(1.5)  # model load
    t0 = time.monotonic()
    next_rot = t0 + a.rotate_s
    next_sample = t0 + 5.0
    fh = open(log, "ab")  # noqa: SIM115
    nb = len(body)
    try:
        while written < total:
            now = time.monotonic()
            target = min(total, int((now - t0) * a.rate))
            if target > written:
                chunk = []
                for seq in range(written, target):
                    parts = list(body[seq % nb])
                    parts[0] = b"%.6f" % time.time()
                    parts[1] = b"S%d" % seq
                    chunk.append(b"\t".join(parts) + b"\n")
                fh.write(b"".join(chunk))
                fh.flush()
                t_write[written:target] = time.time()
                written = target
            if now >= next_rot:
                next_rot += a.rotate_s
                rotations += 1
                fh.close()
                os.rename(log, out / f"conn.{rotations}.log")
                old = out / f"conn.{rotations - 2}.log"
                if rotations >= 2 and old.exists():
                    old.unlink()  # the follower finished it long ago (its fd keeps it alive if not)
                log.write_bytes(b"".join(header))
                fh = open(log, "ab")  # noqa: SIM115
            if now >= next_sample:
                next_sample += 5.0
                samples.append((now - t0, rss_kb(child.pid)))
                if rss_start < 0 and now - t0 >= a.warmup_s:
                    rss_start = samples[-1][1]
            if child.poll() is not None:
                print("service exited early", file=sys.stderr)
                break
            time.sleep(0.01)
    finally:
        fh.close()
    t_end = time.monotonic()
    deadline = time.monotonic() + 60
    m: dict[str, float] = {}
    while time.monotonic() < deadline and child.poll() is None:
        m = scrape(port)
        if m.get("bnn_sidecar_records_in_total", 0) >= written and m.get("bnn_sidecar_records_inflight", 1) == 0:
            break
        time.sleep(0.5)
    rss_end = rss_kb(child.pid)
    cpu = cpu_s(child.pid)
    load = os.getloadavg()
    child.send_signal(signal.SIGTERM)
    rc = child.wait(timeout=60)
    err = (out / "run.stderr").read_text()
    summ = json.loads(err.rsplit("summary: ", 1)[1].splitlines()[0]) if "summary: " in err else {}
    report: dict[str, object] = {
        "minutes": a.minutes, "target_rate": a.rate, "achieved_rate": round(written / max(t_end - t0, 1e-9)),
        "engine": a.engine, "inotify": not a.no_inotify, "poll_ms": a.poll_ms, "batch_ms": a.batch_ms,
        "rotations": rotations,
        "written": written, "records_in": summ.get("records_in"), "scored": summ.get("scored"),
        "skipped": summ.get("skipped"), "verdicts": summ.get("verdicts"), "batches": summ.get("batches"),
        "exit_code": rc,
        "unaccounted": None if not summ else written - summ["scored"] - sum(summ["skipped"].values()),
        "rss_start_kb": rss_start, "rss_end_kb": rss_end, "rss_max_kb": max((r for _, r in samples), default=-1),
        "rss_samples": samples[:: max(1, len(samples) // 20)],
        "service_cpu_s": round(cpu, 1), "service_cpu_pct_of_one_core": round(100 * cpu / max(t_end - t0, 1e-9), 1),
        "loadavg_1_5_15_at_end": [round(x, 2) for x in load], "cpus": os.cpu_count(),
    }
    for name, key in (("batch_latency_seconds", "mean_batch_in_to_written_ms"), ("score_seconds", "mean_score_ms")):
        cnt = m.get(f"bnn_sidecar_{name}_count", 0.0)
        if cnt:  # from /metrics: where the time goes inside the service, per micro-batch
            report[key] = round(1000 * m[f"bnn_sidecar_{name}_sum"] / cnt, 2)
    if a.latency:
        import orjson

        lat, seqs = [], []
        with open(verdicts, "rb") as vf:
            for line in vf:
                r = orjson.loads(line)
                seq = int(r["uid"][1:])
                seqs.append(seq)
                lat.append(r["t_out"] - t_write[seq])
        arr = np.asarray(lat)
        report["verdict_rows"] = len(arr)
        if len(arr):
            report["latency_ms"] = {q: round(float(np.percentile(arr, p)) * 1000, 1)
                                    for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))}
            sec = np.asarray(seqs) // a.rate
            per_s = np.asarray([np.percentile(arr[sec == s], 99) for s in np.unique(sec)]) * 1000
            report["latency_p99_ms_per_second"] = {  # how much of the tail is a few busy seconds
                "min": round(float(per_s.min()), 1), "median": round(float(np.median(per_s)), 1),
                "max": round(float(per_s.max()), 1), "share_le_20ms": round(float(np.mean(per_s <= 20)), 2)}
            minute = np.asarray(seqs) // (a.rate * 60)
            report["latency_p99_ms_by_minute"] = [round(float(np.percentile(arr[minute == m], 99)) * 1000, 1)
                                                  for m in np.unique(minute)]
    print(json.dumps(report, indent=1))
    return 0 if report["unaccounted"] == 0 and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
