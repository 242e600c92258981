"""E4: the per-batch fast paths give the same output as the plain paths (real samples, real scorer)."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from sidecar.cli.score import DEFAULT_MODEL
from sidecar.scorer import Scorer, make_scorer
from sidecar.service.follow_source import FollowSource
from sidecar.service.pipeline import Service
from sidecar.sinks.notice_log import NoticeLogSink
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path
from sidecar.verdict import VerdictBatch

SAMPLES = Path(__file__).resolve().parent.parent / "sidecar" / "data" / "samples"
MIXED = SAMPLES / "ctu-sme-11.conn.log.labeled.gz"  # 766 records, benign and malicious


@pytest.fixture(scope="module")
def verdicts() -> list[VerdictBatch]:
    sc: Scorer = make_scorer(DEFAULT_MODEL, "numpy")
    return [sc.score(b) for b in read_path(MIXED, "auto", ReadStats(), batch_size=100)]


def _body(p: Path) -> list[str]:
    return [ln for ln in p.read_text().splitlines() if not ln.startswith("#")]


@pytest.mark.parametrize("fmt", ["tsv", "json"])
def test_notice_only_malicious_equals_all_rows_filtered(verdicts: list[VerdictBatch], tmp_path: Path,
                                                        fmt: str) -> None:
    """Malicious rows are picked before the row loop: same lines as writing every row and keeping
    the malicious ones. Suppression is per (orig_h, class); no key is shared by a benign and a
    malicious row here, so the benign rows cannot change which malicious rows are written."""
    mal_keys: set[tuple[str, str]] = set()
    ben_keys: set[tuple[str, str]] = set()
    mal_uids: set[str] = set()
    for v in verdicts:
        m = v.malicious.astype(bool)
        pairs = list(zip(v.flows["orig_h"].tolist(), v.cls.tolist(), strict=True))
        mal_keys |= {p for p, f in zip(pairs, m, strict=True) if f}
        ben_keys |= {p for p, f in zip(pairs, m, strict=True) if not f}
        mal_uids |= set(v.flows["uid"][m].tolist())
    assert mal_keys and ben_keys and not mal_keys & ben_keys
    mal = NoticeLogSink(tmp_path / "mal.log", fmt=fmt)
    every = NoticeLogSink(tmp_path / "all.log", fmt=fmt, only_malicious=False)
    for v in verdicts:
        mal.write(v)
        every.write(v)
    mal.close()
    every.close()
    n = sum(len(v) for v in verdicts)
    n_mal = sum(int(v.malicious.sum()) for v in verdicts)

    def uid(line: str) -> str:
        return str(json.loads(line)["uid"]) if fmt == "json" else line.split("\t")[1]

    got = _body(tmp_path / "mal.log")
    assert got and got == [ln for ln in _body(tmp_path / "all.log") if uid(ln) in mal_uids]
    assert mal.stats["benign_ignored"] == n - n_mal
    assert mal.stats["written"] + mal.stats["suppressed"] == n_mal


def test_notice_suppression_still_per_source_and_class(verdicts: list[VerdictBatch], tmp_path: Path) -> None:
    sink = NoticeLogSink(tmp_path / "n.log")  # default: only malicious, 1 h suppression
    for v in verdicts:
        sink.write(v)
    sink.close()
    keys = set()
    for v in verdicts:
        m = v.malicious.astype(bool)
        keys |= set(zip(v.flows["orig_h"][m].tolist(), v.cls[m].tolist(), strict=True))
    total_mal = sum(int(v.malicious.sum()) for v in verdicts)
    assert sink.stats["written"] == len(keys) == len(_body(tmp_path / "n.log"))
    assert sink.stats["suppressed"] == total_mal - len(keys)


def test_service_verdict_counts_match_the_scorer(verdicts: list[VerdictBatch], tmp_path: Path) -> None:
    log = tmp_path / "conn.log"
    log.write_bytes(gzip.decompress(MIXED.read_bytes()))
    src = FollowSource(str(log), poll_ms=20, batch_size=100)
    src.once = True
    acc = Service([("conn", src)], [], make_scorer(DEFAULT_MODEL, "numpy")).run()
    want = Counter(c for v in verdicts for c in v.cls.tolist())
    assert acc["verdicts"] == dict(sorted(want.items())) and acc["scored"] == 766
