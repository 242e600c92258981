"""``bnn-sidecar demo``: score the bundled real records end to end with the shipped model.

Reads the real Zeek conn logs and Suricata eve flows bundled in
``sidecar/data/samples``, scores them, writes ``notice.log`` (Zeek format) and
``eve-alerts.json`` (Suricata alert format) into the output folder, and prints a
table: flows scored, flagged per class, top flagged sources, throughput. With
``--html`` it also writes ``report.html``: the tables, a score histogram and a timeline of
flows and flagged flows per input (inline SVG, one self-contained page).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sidecar.cli.score import DEFAULT_MODEL
from sidecar.errors import SinkError
from sidecar.sinks.base import Sink
from sidecar.sinks.eve_alert import EveAlertSink
from sidecar.sinks.notice_log import NoticeLogSink
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path

if TYPE_CHECKING:
    from sidecar.scorer import Scorer

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out-dir", default="demo-out", help="folder for notice.log and eve-alerts.json")
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--engine", default="onnx", choices=["onnx", "numpy"])
    p.add_argument("--html", action="store_true",
                   help="also write report.html (score histogram, timeline, tables) into the out dir")


def _bar(done: int, total: int, width: int = 30) -> str:
    k = int(width * done / max(1, total))
    return f"[{'#' * k}{'.' * (width - k)}] {done}/{total} files"


def run(args: argparse.Namespace) -> int:
    from sidecar.scorer import make_scorer

    scorer = make_scorer(args.model, args.engine)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sinks: list[Sink] = [NoticeLogSink(out / "notice.log"), EveAlertSink(out / "eve-alerts.json")]
    files = sorted(p for p in SAMPLES.iterdir() if p.name != "README.md")
    per_file: list[tuple[str, int, int]] = []
    series: list[tuple[str, list[np.ndarray], list[np.ndarray], list[np.ndarray]]] = []
    sources: Counter[str] = Counter()
    stats_all = ReadStats()
    t0 = time.perf_counter()
    for i, path in enumerate(files):
        st = ReadStats()
        n = flagged = 0
        ts_l: list[np.ndarray] = []
        sc_l: list[np.ndarray] = []
        mal_l: list[np.ndarray] = []
        for batch in read_path(path, "auto", st):
            v = scorer.score(batch)
            if args.html:
                ts_l.append(np.asarray(v.flows["ts"], dtype=np.float64))
                sc_l.append(v.score)
                mal_l.append(v.malicious)
            for s in sinks:
                s.write(v)
            n += len(v)
            flagged += int(v.malicious.sum())
            sources.update(v.flows["orig_h"][v.malicious].tolist())
        per_file.append((path.name, n, flagged))
        series.append((path.name, ts_l, sc_l, mal_l))
        stats_all.merge(st)
        print(_bar(i + 1, len(files)), file=sys.stderr)
    dt = time.perf_counter() - t0
    for s in sinks:
        s.close()
    print(f"\nmodel {scorer.model_id} ({args.engine} engine)\n")
    print(f"{'input':45} {'flows':>7} {'flagged':>8}")
    for name, n, f in per_file:
        print(f"{name:45} {n:>7} {f:>8}")
    print(f"{'total':45} {scorer.scored:>7} {sum(f for _, _, f in per_file):>8}\n")
    print("flagged per class:", ", ".join(f"{c}={k}" for c, k in scorer.flagged.most_common()) or "none")
    print("top flagged sources:", ", ".join(f"{a} ({k})" for a, k in sources.most_common(5)) or "none")
    print(f"skipped records: {sum(stats_all.skipped.values())}  throughput: {scorer.scored / dt:,.0f} flows/s "
          f"(whole pipeline incl. parsing and output)")
    print(f"\nwrote {out / 'notice.log'} and {out / 'eve-alerts.json'}")
    if args.html:
        page = _write_html(args, scorer, out, series, sources, sum(stats_all.skipped.values()),
                           scorer.scored / dt)
        print(f"wrote {page}")
    return 0


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


def _write_html(args: argparse.Namespace, scorer: Scorer, out: Path,
                series: list[tuple[str, list[np.ndarray], list[np.ndarray], list[np.ndarray]]],
                sources: Counter[str], skipped: int, flows_per_s: float) -> Path:
    from sidecar.report_html import DemoReport, InputSeries, render

    rep = DemoReport(
        model_id=scorer.model_id,
        engine=args.engine,
        inputs=[InputSeries(name, _cat(ts, np.float64), _cat(sc, np.float64), _cat(mal, bool))
                for name, ts, sc, mal in series],
        flagged_per_class=scorer.flagged.most_common(),
        top_sources=sources.most_common(5),
        skipped=skipped,
        flows_per_s=flows_per_s,
        threshold=scorer.meta.threshold1,
        outputs=[str(out / "notice.log"), str(out / "eve-alerts.json")],
    )
    page = out / "report.html"
    try:
        page.write_text(render(rep), encoding="utf-8")
    except OSError as exc:
        raise SinkError(f"cannot write {page}: {exc}") from exc
    return page
