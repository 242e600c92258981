"""One self-contained HTML page for ``bnn-sidecar demo --html``: tables plus hand-drawn SVG.

No plotting library (runtime code must not import matplotlib): the score histogram and the
per-input timelines are inline SVG built here. The page is XHTML-compatible (every element
closed, text escaped) so a strict XML parser accepts it; it loads nothing from elsewhere.
Every bar carries ``data-count`` (and the histogram ``data-lo``/``data-hi``) so the numbers
drawn can be checked against the numbers in the tables.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

import numpy as np

HIST_BINS = 20
TIME_BINS = 48
_W, _H = 720, 220  # plot area of each SVG, in px
_PAD_L, _PAD_B, _PAD_T, _PAD_R = 56, 36, 14, 12
_GREY, _RED = "#9aa5b1", "#d64545"


@dataclass
class InputSeries:
    """The verdicts of one input file: record time, screen score, final decision."""

    name: str
    ts: np.ndarray  # float64 record time (NaN = missing)
    score: np.ndarray  # float64 in [0, 1]
    malicious: np.ndarray  # bool


@dataclass
class DemoReport:
    model_id: str
    engine: str
    inputs: list[InputSeries]
    flagged_per_class: list[tuple[str, int]]
    top_sources: list[tuple[str, int]]
    skipped: int
    flows_per_s: float
    threshold: float | None = None
    outputs: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)


def _fmt_ts(t: float, relative: bool) -> str:
    if relative:
        return f"{t:.1f} s"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + " UTC"


def _yscale(counts: Sequence[int]) -> tuple[float, list[int]]:
    """log10(1 + n) scale (scores pile up near 0): the top value and the tick counts to label."""
    top = max(1, max(counts, default=0))
    ticks = [0] + [10**k for k in range(int(math.log10(top)) + 1)]
    return math.log10(1 + top), ticks


def _y(n: float, top: float) -> float:
    return _PAD_T + _H - (_H * math.log10(1 + n) / top if top > 0 else 0.0)


def _axes(top: float, ticks: list[int], xlabel: str) -> list[str]:
    x0, y0 = _PAD_L, _PAD_T + _H
    out = [
        f'<line x1="{x0}" y1="{_PAD_T}" x2="{x0}" y2="{y0}" stroke="#333" />',
        f'<line x1="{x0}" y1="{y0}" x2="{x0 + _W}" y2="{y0}" stroke="#333" />',
        f'<text x="{x0 + _W / 2:.0f}" y="{y0 + 32}" text-anchor="middle" font-size="12">{escape(xlabel)}</text>',
    ]
    for t in ticks:
        y = _y(t, top)
        out.append(f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x0}" y2="{y:.1f}" stroke="#333" />')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{t}</text>')
    return out


def _svg(body: list[str], title: str) -> str:
    w, h = _PAD_L + _W + _PAD_R, _PAD_T + _H + _PAD_B
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>' + "".join(body) + "</svg>"
    )


def histogram_svg(score: np.ndarray, malicious: np.ndarray, threshold: float | None) -> str:
    """Stacked histogram of screen scores: not flagged (grey) under flagged (red), log count axis."""
    edges = np.linspace(0.0, 1.0, HIST_BINS + 1)
    s = np.clip(np.asarray(score, dtype=np.float64), 0.0, 1.0)
    mal = np.asarray(malicious, dtype=bool)
    n_ok = np.histogram(s[~mal], bins=edges)[0].astype(int)
    n_bad = np.histogram(s[mal], bins=edges)[0].astype(int)
    tot = n_ok + n_bad
    top, ticks = _yscale(tot.tolist())
    body = _axes(top, ticks, "BNN screen score (bins of 0.05; count axis is log10(1 + n))")
    bw = _W / HIST_BINS
    for i in range(HIST_BINS):
        x = _PAD_L + i * bw
        lo, hi = f"{edges[i]:.2f}", f"{edges[i + 1]:.2f}"
        y_tot, y_ok = _y(int(tot[i]), top), _y(int(n_ok[i]), top)
        base = _PAD_T + _H
        body.append(
            f'<rect class="hist-ok" x="{x + 1:.1f}" y="{y_ok:.1f}" width="{bw - 2:.1f}" height="{base - y_ok:.1f}" '
            f'fill="{_GREY}" data-lo="{lo}" data-hi="{hi}" data-count="{int(n_ok[i])}"><title>{lo}-{hi}: '
            f"{int(n_ok[i])} not flagged</title></rect>"
        )
        body.append(
            f'<rect class="hist-flagged" x="{x + 1:.1f}" y="{y_tot:.1f}" width="{bw - 2:.1f}" '
            f'height="{max(0.0, y_ok - y_tot):.1f}" fill="{_RED}" data-lo="{lo}" data-hi="{hi}" '
            f'data-count="{int(n_bad[i])}"><title>{lo}-{hi}: {int(n_bad[i])} flagged</title></rect>'
        )
        if i % 4 == 0 or i == HIST_BINS - 1:
            body.append(f'<text x="{x:.1f}" y="{_PAD_T + _H + 14}" font-size="11">{lo}</text>')
    if threshold is not None and 0.0 <= threshold <= 1.0:
        x = _PAD_L + threshold * _W
        body.append(
            f'<line class="threshold" x1="{x:.1f}" y1="{_PAD_T}" x2="{x:.1f}" y2="{_PAD_T + _H}" '
            f'stroke="#222" stroke-dasharray="4 3" />'
            f'<text x="{x + 4:.1f}" y="{_PAD_T + 12}" font-size="11">screen threshold {threshold:.3f}</text>'
        )
    return _svg(body, "Score histogram: flagged flows in red")


def timeline_svg(series: InputSeries) -> str:
    """Flows (grey) and flagged flows (red) per record-time bin of one input."""
    ts = np.asarray(series.ts, dtype=np.float64)
    ok = ~np.isnan(ts)
    t, mal = ts[ok], np.asarray(series.malicious, dtype=bool)[ok]
    if len(t) == 0:
        return _svg([f'<text x="{_PAD_L}" y="{_PAD_T + 20}" font-size="12">no record times</text>'], series.name)
    t0, t1 = float(t.min()), float(t.max())
    span = max(t1 - t0, 1e-6)
    edges = np.linspace(t0, t0 + span, TIME_BINS + 1)
    n_all = np.histogram(t, bins=edges)[0].astype(int)
    n_bad = np.histogram(t[mal], bins=edges)[0].astype(int)
    top, ticks = _yscale(n_all.tolist())
    relative = t0 < 1e8  # e.g. Zeek logs written with relative timestamps
    body = _axes(top, ticks, f"record time, {span:.1f} s in {TIME_BINS} bins (count axis log10(1 + n))")
    bw = _W / TIME_BINS
    base = _PAD_T + _H
    for i in range(TIME_BINS):
        x = _PAD_L + i * bw
        for cls, n, color, inset in (("tl-all", n_all[i], _GREY, 1.0), ("tl-flagged", n_bad[i], _RED, bw / 4)):
            y = _y(int(n), top)
            body.append(
                f'<rect class="{cls}" x="{x + inset:.1f}" y="{y:.1f}" width="{max(0.5, bw - 2 * inset):.1f}" '
                f'height="{base - y:.1f}" fill="{color}" data-count="{int(n)}" />'
            )
    body.append(f'<text x="{_PAD_L}" y="{base + 14}" font-size="11">{escape(_fmt_ts(t0, relative))}</text>')
    body.append(
        f'<text x="{_PAD_L + _W}" y="{base + 14}" font-size="11" text-anchor="end">'
        f"{escape(_fmt_ts(t0 + span, relative))}</text>"
    )
    return _svg(body, f"Timeline of {series.name}")


def _table(head: Sequence[str], rows: Sequence[Sequence[object]], cls: str) -> str:
    th = "".join(f"<th>{escape(str(h))}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>'


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:800px;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px}"
    "td:not(:first-child){text-align:right}th{background:#f2f4f7}.note{color:#555;font-size:90%}"
)


def render(rep: DemoReport) -> str:
    """The whole page as one string (XHTML-compatible HTML5)."""
    n_total = sum(len(s.score) for s in rep.inputs)
    n_flag = sum(int(np.count_nonzero(s.malicious)) for s in rep.inputs)
    rows: list[list[object]] = [[s.name, len(s.score), int(np.count_nonzero(s.malicious))] for s in rep.inputs]
    rows.append(["total", n_total, n_flag])
    all_score = np.concatenate([s.score for s in rep.inputs]) if rep.inputs else np.zeros(0)
    all_mal = np.concatenate([s.malicious for s in rep.inputs]) if rep.inputs else np.zeros(0, dtype=bool)
    parts = [
        "<!DOCTYPE html>",
        '<html xmlns="http://www.w3.org/1999/xhtml" lang="en"><head><meta charset="utf-8" />',
        f"<title>bnn-sidecar demo report</title><style>{_CSS}</style></head><body>",
        "<h1>bnn-sidecar demo</h1>",
        f'<p class="note">model {escape(rep.model_id)} ({escape(rep.engine)} engine), '
        f"{escape(time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(rep.created)))} UTC. Real bundled records "
        "(Zeek conn logs and Suricata eve flows) scored end to end.</p>",
        "<h2>Flows scored</h2>",
        _table(["input", "flows", "flagged"], rows, "summary"),
        "<h2>Flagged per class</h2>",
        _table(["class", "flows"], rep.flagged_per_class or [("none", 0)], "classes"),
        "<h2>Top flagged sources</h2>",
        _table(["source address", "flagged flows"], rep.top_sources or [("none", 0)], "sources"),
        f'<p class="note">skipped records: {rep.skipped}; throughput {rep.flows_per_s:,.0f} flows/s '
        "(whole pipeline incl. parsing and output).</p>",
        "<h2>Score histogram</h2>",
        '<p class="note">The BNN screen score of every flow; red = flagged after the second stage.</p>',
        histogram_svg(all_score, all_mal, rep.threshold),
        "<h2>Timeline</h2>",
        '<p class="note">Flows (grey) and flagged flows (red) over each input\'s own record time.</p>',
    ]
    for s in rep.inputs:
        missing = int(np.count_nonzero(np.isnan(np.asarray(s.ts, dtype=np.float64))))
        extra = f" ({missing} without a timestamp)" if missing else ""
        parts.append(f"<h3>{escape(s.name)}{escape(extra)}</h3>")
        parts.append(timeline_svg(s))
    if rep.outputs:
        items = "".join(f"<li><code>{escape(o)}</code></li>" for o in rep.outputs)
        parts.append(f"<h2>Outputs</h2><ul>{items}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
