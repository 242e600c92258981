"""Capture health (sidecar/features/capture.py): a sensor that sees every packet twice, on real logs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from zeek_cut import cut

from sidecar.features.capture import MIN_ATTEMPTS, DuplicateCheck
from sidecar.features.schema import extract
from sidecar.flow import FlowBatch
from sidecar.scorer import make_scorer
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "sidecar" / "data" / "model" / "bnn.onnx"
CTU = "zeek-labeled/stratosphere-security-datasets-for-testing/{}-zeek-mixed/conn.log.labeled.gz"
IOT = "zeek-labeled/iot-23/{}/conn.log.labeled.gz"


def _batches(path: Path, size: int = 1024) -> list[FlowBatch]:
    assert path.is_file(), path
    return list(read_path(path, "auto", ReadStats(), batch_size=size))


def _raw_twins(path: Path) -> tuple[int, int]:
    """Independent count from the raw conn.log text (tests/zeek_cut.py): (unanswered 1-2 packet SYN
    attempts, twins)."""
    import gzip

    att = twins = 0
    cols = ("proto", "history", "orig_pkts", "resp_pkts", "duration")
    with gzip.open(path, "rt") as fh:
        for line in cut(fh, cols):
            proto, hist, op, rp, dur = line.split("\t")
            syn_only = "S" in hist and not set(hist) & set("HhAaDdFfRr")  # e.g. "S", "Sc" (bad checksum)
            if proto != "tcp" or not syn_only or rp != "0" or op not in ("1", "2"):
                continue
            att += 1
            # Zeek leaves the duration unset ("-") when both packets carry the same timestamp: 0
            twins += op == "2" and (dur == "-" or float(dur) < 1e-4)
    return att, twins


@pytest.mark.parametrize("cap", ["008", "011"])
def test_ctu_mixed_captures_are_reported_as_duplicating(cap: str, shared: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = shared / CTU.format(cap)
    sc = make_scorer(MODEL, "onnx")
    with caplog.at_level(logging.WARNING, logger="sidecar.features.capture"):
        for b in _batches(path):
            sc.score(b)
    t = sc.capture.sources["zeek-tsv"]
    assert (t.attempts, t.twins) == _raw_twins(path)
    assert t.duplicating and t.share > 0.9, (t.attempts, t.twins)
    warnings = [r for r in caplog.records if "every packet twice" in r.getMessage()]
    assert len(warnings) == 1  # once per source, not per batch


@pytest.mark.parametrize("cap", ["CTU-IoT-Malware-Capture-34-1", "CTU-IoT-Malware-Capture-42-1"])
def test_clean_captures_are_not(cap: str, shared: Path) -> None:
    path = shared / IOT.format(cap)
    check = DuplicateCheck()
    for b in _batches(path):
        check.update(b.source, extract(b))
    t = check.sources["zeek-tsv"]
    assert (t.attempts, t.twins) == _raw_twins(path)
    assert t.attempts >= MIN_ATTEMPTS and t.twins == 0 and not t.duplicating


def test_counts_do_not_depend_on_batch_size(shared: Path) -> None:
    path = shared / CTU.format("012")
    totals = []
    for size in (7, 1024, 1 << 20):
        check = DuplicateCheck()
        for b in _batches(path, size):
            check.update(b.source, extract(b))
        totals.append(check.summary())
    assert totals[0] == totals[1] == totals[2]


def test_too_few_attempts_say_nothing(shared: Path) -> None:
    b = FlowBatch.concat(_batches(shared / CTU.format("010")))
    x = extract(b)
    check = DuplicateCheck()
    i = 0
    while check.sources.get("zeek-tsv") is None or check.sources["zeek-tsv"].attempts < MIN_ATTEMPTS - 1:
        check.update("zeek-tsv", x[i : i + 1])  # one row at a time, up to one attempt short
        i += 1
        assert i < len(x)
    t = check.sources["zeek-tsv"]
    assert t.attempts == MIN_ATTEMPTS - 1 and t.share > 0.9 and not t.duplicating
    check.update("zeek-tsv", x[i:])
    assert check.sources["zeek-tsv"].duplicating


def test_lab_eve_raises_no_alarm() -> None:
    check = DuplicateCheck()
    for f in sorted((REPO / "tests" / "data" / "lab" / "eve").glob("*.gz")):
        for b in _batches(f):
            check.update(b.source, extract(b))
    assert all(not t.twins for t in check.sources.values())


def test_score_cli_summary_and_warning(shared: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    import orjson

    path = shared / CTU.format("012")
    r = subprocess.run([sys.executable, "-m", "sidecar.cli.main", "score", "--input", str(path), "--out", str(tmp_path / "v.jsonl")],
                       capture_output=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr.decode()[-1500:]
    err = r.stderr.decode()
    line = [x for x in err.splitlines() if x.startswith("summary: ")][-1]
    got = orjson.loads(line.split(" ", 1)[1])["duplicate_packet_check"]["zeek-tsv"]
    assert (got["unanswered_syn"], got["twin_syn"]) == _raw_twins(path) and got["duplicating"] is True
    assert err.count("every packet twice") == 1
