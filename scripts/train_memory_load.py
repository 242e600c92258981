"""Memory load test of ``bnn-sidecar train --stream`` at CSE-CIC-IDS2018 scale (up to its 16 M rows).

LOAD-TEST DATA, NOT FOR ACCURACY. The full per-day dataset is not stored here, so this builds a
stand-in in the original per-day layout from the *real* CSE-CIC-IDS2018 rows of
``shared/data/cic-ids2018`` (its 79-column files, ~9.9 k distinct rows), replicated: each output row
is a real row whose ``Flow Duration`` is rewritten to a distinct integer (microseconds: row number
+ 1), so the loader's (feature row, family) de-duplication keeps the copies, and whose duration
rates (``Flow Byts/s``, ``Flow/Fwd/Bwd Pkts/s``) are recomputed; everything else is the real row
(labels are not on their real days). Imitated per-day quirks: the ten
``*_TrafficForML_CICFlowMeter.csv`` names with their real share of the 16.23 M rows, a
``Timestamp`` column, repeated header lines inside three files, ~0.2 % zero-duration rows with
``Infinity``/``NaN`` rates (skipped by the reader).

    python scripts/train_memory_load.py 16000000 /tmp/load16m --run /tmp/load16m-out

``--run OUT`` then runs ``bnn-sidecar -v train --data DIR --out OUT --stream --no-progress`` and
prints its peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``, as ``/usr/bin/time -v``), wall and
CPU time; ``OUT/rss_trace.tsv`` has the child's VmRSS/RssAnon/RssFile every second (RssFile counts
the memory-mapped feature file: page cache, reclaimable).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

DATA = Path(os.environ.get("BNN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "cic-ids2018"
#: the original per-day files and their row counts (16,233,002 rows in all)
DAYS = (("Wednesday-14-02-2018", 1048575), ("Thursday-15-02-2018", 1048575), ("Friday-16-02-2018", 1048575),
        ("Thuesday-20-02-2018", 7948748), ("Wednesday-21-02-2018", 1048575), ("Thursday-22-02-2018", 1048575),
        ("Friday-23-02-2018", 1048575), ("Wednesday-28-02-2018", 613104), ("Thursday-01-03-2018", 331125),
        ("Friday-02-03-2018", 1048575))
REPEATED_HEADER = {"Friday-16-02-2018": 400_000, "Wednesday-28-02-2018": 25_000, "Thursday-01-03-2018": 25_000}
INF_EVERY = 499  # one row in 499: zero duration, Infinity/NaN rates


def real_rows(root: Path) -> tuple[list[str], list[list[str]]]:
    """Header and distinct rows of every 79-column original-layout CSV below ``root``."""
    files = sorted(root.glob("*.csv.gz")) + sorted(root.glob("more/*/*.csv.gz"))
    header: list[str] = []
    seen: set[tuple[str, ...]] = set()
    rows: list[list[str]] = []  # distinct real rows, first occurrence order
    for p in files:
        with gzip.open(p, "rt", newline="") as fh:
            r = csv.reader(fh)
            h = next(r)
            if h[0] != "Dst Port" or "Timestamp" in h or (header and h != header):
                continue
            header = h
            for row in r:
                if len(row) == len(h) and tuple(row) not in seen:
                    seen.add(tuple(row))
                    rows.append(row)
    if not rows:
        sys.exit(f"no original-layout CSE-CIC-IDS2018 rows under {root}")
    return header, rows


def build(n_rows: int, out: Path, root: Path = DATA) -> int:
    """Write ``n_rows`` data rows as ten per-day CSVs into ``out``; returns the bytes written."""
    header, rows = real_rows(root)
    c = {k: header.index(k) for k in ("Flow Duration", "Tot Fwd Pkts", "Tot Bwd Pkts", "TotLen Fwd Pkts",
                                      "TotLen Bwd Pkts", "Flow Byts/s", "Flow Pkts/s", "Fwd Pkts/s", "Bwd Pkts/s")}
    amounts = [(float(r[c["Tot Fwd Pkts"]]), float(r[c["Tot Bwd Pkts"]]),
                float(r[c["TotLen Fwd Pkts"]]) + float(r[c["TotLen Bwd Pkts"]])) for r in rows]
    ts_at = header.index("Protocol") + 1  # the original 80-column layout: Timestamp after Protocol
    out_header = ",".join([*header[:ts_at], "Timestamp", *header[ts_at:]])
    out.mkdir(parents=True, exist_ok=True)
    total = sum(k for _, k in DAYS)
    i = size = 0
    for d, (day, count) in enumerate(DAYS):
        n_day = n_rows - i if d == len(DAYS) - 1 else round(n_rows * count / total)
        dd, mm, yy = day.split("-")[1:]
        every = REPEATED_HEADER.get(day, 0)
        path = out / f"{day}_TrafficForML_CICFlowMeter.csv"
        with open(path, "w", newline="") as fh:
            fh.write(out_header + "\n")
            for k in range(n_day):
                r, dur = list(rows[i % len(rows)]), i + 1
                fp, bp, byts = amounts[i % len(rows)]
                if i % INF_EVERY == INF_EVERY - 1:
                    r[c["Flow Duration"]], r[c["Flow Byts/s"]], r[c["Flow Pkts/s"]] = "0", "NaN", "Infinity"
                else:
                    s = dur / 1e6
                    r[c["Flow Duration"]] = str(dur)
                    r[c["Flow Byts/s"]] = f"{byts / s:.4f}"
                    r[c["Flow Pkts/s"]] = f"{(fp + bp) / s:.4f}"
                    r[c["Fwd Pkts/s"]], r[c["Bwd Pkts/s"]] = f"{fp / s:.4f}", f"{bp / s:.4f}"
                sec = 8 * 3600 + k * 36000 // max(n_day, 1)  # 08:00 to 18:00
                r.insert(ts_at, f"{dd}/{mm}/{yy} {sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}")
                fh.write(",".join(r) + "\n")
                if every and k % every == every - 1:
                    fh.write(out_header + "\n")
                i += 1
        size += path.stat().st_size
        print(f"{path.name}: {n_day} rows", flush=True)
    return size


def run_train(data: Path, out: Path, epochs: int, seed: int) -> int:
    """``bnn-sidecar train --stream`` on ``data``; prints peak RSS, wall and CPU time."""
    exe = Path(sys.executable).with_name("bnn-sidecar")
    cmd = [str(exe), "-v", "train", "--data", str(data), "--out", str(out), "--stream", "--no-progress",
           "--epochs", str(epochs), "--seed", str(seed)]
    print("$ " + " ".join(cmd), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd)
    trace: list[str] = ["seconds\tVmRSS_kB\tRssAnon_kB\tRssFile_kB"]

    def sample() -> None:
        while proc.poll() is None:
            try:
                st = dict(ln.split(":", 1) for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
                v = [st.get(k, "0 kB").split()[0] for k in ("VmRSS", "RssAnon", "RssFile")]
                trace.append(f"{time.monotonic() - t0:.0f}\t" + "\t".join(v))
            except (OSError, ValueError):
                pass
            time.sleep(1.0)

    (th := threading.Thread(target=sample, daemon=True)).start()
    rc = proc.wait()
    th.join()
    wall = time.monotonic() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    (out / "rss_trace.tsv").write_text("\n".join(trace) + "\n")
    anon = max((int(t.split("\t")[2]) for t in trace[1:]), default=0)
    print(f"exit {rc}; peak RSS {ru.ru_maxrss / 1024:.0f} MiB (sampled peak RssAnon {anon / 1024:.0f} MiB); "
          f"wall {wall:.0f} s; CPU user {ru.ru_utime:.0f} s sys {ru.ru_stime:.0f} s", flush=True)
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("rows", type=int, help="data rows to write (Infinity/NaN rows included)")
    ap.add_argument("dir", type=Path, help="output folder of the per-day CSVs (reused if it has them)")
    ap.add_argument("--run", type=Path, metavar="OUT", help="then train on it into OUT and report the memory")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", type=Path, default=DATA, help="folder of the real rows (default: %(default)s)")
    a = ap.parse_args()
    if not any(a.dir.glob("*_TrafficForML_CICFlowMeter.csv")):
        t0 = time.monotonic()
        size = build(a.rows, a.dir, a.data_root)
        print(f"wrote {size / 1e9:.2f} GB to {a.dir} in {time.monotonic() - t0:.0f} s", flush=True)
    return run_train(a.dir, a.run, a.epochs, a.seed) if a.run else 0


if __name__ == "__main__":
    sys.exit(main())
