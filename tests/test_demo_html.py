"""``bnn-sidecar demo --html``: one self-contained, well-formed page whose pictures match its tables."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from sidecar.report_html import HIST_BINS, TIME_BINS, DemoReport, InputSeries, render
from sidecar.scorer import make_scorer
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sidecar" / "data" / "samples"
MODEL = REPO / "sidecar" / "data" / "model" / "bnn.onnx"
NS = {"h": "http://www.w3.org/1999/xhtml", "s": "http://www.w3.org/2000/svg"}


def _parse(page: str) -> ET.Element:
    assert page.startswith("<!DOCTYPE html>")
    return ET.fromstring(page.split("\n", 1)[1])  # strict XML: every tag closed, text escaped


def _counts(root: ET.Element, cls: str) -> list[int]:
    return [int(r.attrib["data-count"]) for r in root.iter(f"{{{NS['s']}}}rect") if r.get("class") == cls]


def test_demo_html_report_is_self_contained_and_matches_the_table(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "sidecar.cli.main", "demo", "--out-dir", str(tmp_path), "--html",
                        "--engine", "numpy"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    page_path = tmp_path / "report.html"
    assert f"wrote {page_path}" in r.stdout
    page = page_path.read_text(encoding="utf-8")
    root = _parse(page)

    # nothing loaded from elsewhere: no scripts, no src/href attributes at all
    for el in root.iter():
        assert not el.tag.endswith("script")
        assert not ({"src", "href"} & set(el.attrib)), el.attrib

    # the summary table is the printed table
    printed = {m.group(1): (int(m.group(2)), int(m.group(3)))
               for m in re.finditer(r"^(\S+)\s+(\d+)\s+(\d+)$", r.stdout, re.M)}
    table = root.find(".//h:table[@class='summary']", NS)
    assert table is not None
    rows = {tr[0].text: (int(tr[1].text or ""), int(tr[2].text or ""))
            for tr in table.findall("h:tbody/h:tr", NS)}
    assert rows == printed
    n_total, n_flagged = rows["total"]
    assert n_total == 41 + 50 + 766 + 3512 and n_flagged > 0

    # the histogram holds every flow once, flagged ones in their own bars
    assert len(_counts(root, "hist-ok")) == len(_counts(root, "hist-flagged")) == HIST_BINS
    assert sum(_counts(root, "hist-ok")) + sum(_counts(root, "hist-flagged")) == n_total
    assert sum(_counts(root, "hist-flagged")) == n_flagged

    # one timeline per input; each covers that input's flows (all bundled records carry a ts)
    svgs = list(root.iter(f"{{{NS['s']}}}svg"))
    assert len(svgs) == 1 + len(rows) - 1
    for svg, (name, (n, f)) in zip(svgs[1:], [kv for kv in rows.items() if kv[0] != "total"], strict=True):
        assert name in (svg.get("aria-label") or "")
        assert len(_counts(svg, "tl-all")) == TIME_BINS
        assert sum(_counts(svg, "tl-all")) == n
        assert sum(_counts(svg, "tl-flagged")) == f

    # the per-class table is the printed "flagged per class" line
    line = next(x for x in r.stdout.splitlines() if x.startswith("flagged per class:"))
    printed_cls = dict(kv.split("=") for kv in line.split(":", 1)[1].strip().split(", "))
    cls_table = root.find(".//h:table[@class='classes']", NS)
    assert cls_table is not None
    got = {tr[0].text: tr[1].text for tr in cls_table.findall("h:tbody/h:tr", NS)}
    assert got == printed_cls


def test_render_escapes_names_and_handles_empty_input() -> None:
    scorer = make_scorer(MODEL, "numpy")
    vs = [scorer.score(b) for b in read_path(SAMPLES / "horizontal-portscan.conn.log", "auto", ReadStats())]
    ts = np.concatenate([np.asarray(v.flows["ts"], dtype=np.float64) for v in vs])
    score = np.concatenate([v.score for v in vs])
    mal = np.concatenate([v.malicious for v in vs])
    empty = InputSeries("empty <input>", np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool))
    rep = DemoReport(scorer.model_id, "numpy", [InputSeries('scan "<&>"', ts, score, mal), empty],
                     scorer.flagged.most_common(), [], 0, 1.0, threshold=scorer.meta.threshold1)
    page = render(rep)
    root = _parse(page)
    assert "scan &quot;&lt;&amp;&gt;&quot;" in page or 'scan "&lt;&amp;&gt;"' in page
    assert 'scan "<&>"' in "".join(root.itertext())
    assert sum(_counts(root, "hist-ok")) + sum(_counts(root, "hist-flagged")) == len(score) == 41
    # relative Zeek timestamps (this log starts near 0) are labelled in seconds, not as 1970 dates
    assert "1970" not in page
    assert "no record times" in page
    assert root.find(".//s:line[@class='threshold']", NS) is not None
