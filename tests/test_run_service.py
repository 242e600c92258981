"""``bnn-sidecar run`` end to end as a real child process on a followed real conn.log.

* grows the log while it runs, scrapes ``/metrics`` over HTTP, rotates the sink files
  and sends SIGHUP, has one sink on ``/dev/full`` (every write fails for real: ENOSPC)
  that must not disturb the others, and stops with SIGTERM: every record exactly once
  in the JSON-lines output, with the same verdicts as the in-process scorer;
* SIGTERM while a micro-batch is still open (``batch_ms`` = 30 s) drains it into the
  sinks and saves the checkpoint; a restart with ``--once`` continues exactly there.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

REAL = "zeek/slips/ctu-sme-11.conn.log.labeled"  # 766 real Zeek TSV conn records, unique uids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _real(shared: Path) -> tuple[list[bytes], list[bytes]]:
    lines = (shared / REAL).read_bytes().lstrip().splitlines(keepends=True)
    header = [ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")]
    body = [ln for ln in lines if not ln.startswith(b"#")]
    assert len(body) == 766
    return header, body


def _append(path: Path, lines: list[bytes]) -> None:
    with open(path, "ab") as fh:
        fh.write(b"".join(lines))


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for ln in text.splitlines():
        m = re.match(r"^(bnn_sidecar_\w+)(\{[^}]*\})? (\S+)$", ln)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def _total(m: dict[str, float], name: str) -> float:
    return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))


def _wait_metrics(child: subprocess.Popen[bytes], port: int, ok: Any, timeout: float = 60) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    last: dict[str, float] = {}
    while time.monotonic() < deadline:
        assert child.poll() is None, child.stderr.read().decode()[-3000:] if child.stderr else ""
        try:
            last = _scrape(port)
        except OSError:
            last = {}
        if last and ok(last):
            return last
        time.sleep(0.1)
    raise AssertionError(f"metrics never reached the expected state: {last}")


def _start(cfg: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "sidecar.cli.main", "-v", "run", "--config", str(cfg), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _summary(stderr: bytes) -> dict[str, Any]:
    text = stderr.decode()
    assert "summary: " in text, text[-3000:]
    out: dict[str, Any] = orjson.loads(text.rsplit("summary: ", 1)[1].splitlines()[0])
    return out


def _rows(*paths: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for p in paths if p.exists() for x in p.read_bytes().splitlines()]


def test_run_follow_metrics_sighup_broken_sink_sigterm(shared: Path, tmp_path: Path) -> None:
    header, body = _real(shared)
    log, port = tmp_path / "conn.log", _free_port()
    out, notice = tmp_path / "verdicts.jsonl", tmp_path / "notice.log"
    log.write_bytes(b"".join(header + body[:300]))
    cfg = tmp_path / "sidecar.toml"
    cfg.write_text(f"""
[sidecar]
batch_ms = 20
checkpoint_dir = "{tmp_path}/ckpt"
[metrics]
listen = "127.0.0.1:{port}"
[[source]]
kind = "follow"
name = "conn"
path = "{log}"
poll_ms = 50
[[sink]]
kind = "notice_log"
path = "{notice}"
[[sink]]
kind = "jsonl"
name = "broken"
path = "/dev/full"
[[sink]]
kind = "jsonl"
name = "out"
path = "{out}"
""")
    child = _start(cfg)
    try:
        _wait_metrics(child, port, lambda m: m.get('bnn_sidecar_records_in_total{source="conn"}') == 300)
        _append(log, body[300:500])
        _wait_metrics(child, port, lambda m: m.get("bnn_sidecar_records_scored_total") == 500)
        # log rotation of the outputs: rename, SIGHUP, the sinks reopen their paths
        os.rename(out, tmp_path / "verdicts.jsonl.1")
        os.rename(notice, tmp_path / "notice.log.1")
        child.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while not (out.exists() and notice.exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.exists() and notice.exists()
        _append(log, body[500:])
        m = _wait_metrics(child, port, lambda m: m.get("bnn_sidecar_records_scored_total") == 766
                          and m.get("bnn_sidecar_records_inflight") == 0)
        assert _total(m, "bnn_sidecar_verdicts_total") == 766
        assert m["bnn_sidecar_flood_rule_flagged_total"] == 0  # the sample holds no flood (`score` says the same)
        assert m["bnn_sidecar_family_agreement_vetoed_total"] == 0  # sidecar.family_agreement is off by default
        assert m['bnn_sidecar_sink_errors_total{sink="broken"}'] > 0
        assert m['bnn_sidecar_sink_errors_total{sink="out"}'] == 0
        assert m['bnn_sidecar_sink_errors_total{sink="notice_log"}'] == 0
        assert m["bnn_sidecar_batch_latency_seconds_count"] >= 2  # the reopen separates two at least
        assert "bnn_sidecar_queue_depth" in m and m["bnn_sidecar_queue_capacity"] == 64
        assert m['bnn_sidecar_reconnects_total{source="conn"}'] == 0
        assert any(k.startswith("bnn_sidecar_model_info{") and "sha256=" in k for k in m)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err.decode()[-3000:]
    summ = _summary(err)
    assert summ["records_in"] == 766 and summ["scored"] == 766 and summ["unaccounted"] == 0
    assert summ["sink_errors"]["broken"] > 0
    before, after = _rows(tmp_path / "verdicts.jsonl.1"), _rows(out)
    assert len(before) == 500 and len(after) == 266  # nothing written to the renamed file after SIGHUP
    uids = [ln.split(b"\t")[1].decode() for ln in body]
    assert [r["uid"] for r in before + after] == uids  # every record exactly once, in order

    # the verdicts are the model's: same as scoring the same records in process
    from sidecar.scorer import make_scorer
    from sidecar.sources.base import ReadStats
    from sidecar.sources.detect import read_path

    full = tmp_path / "all.conn.log"
    full.write_bytes(b"".join(header + body))
    from sidecar.cli.score import DEFAULT_MODEL

    sc = make_scorer(DEFAULT_MODEL, "onnx")
    want = [r for b in read_path(full, "auto", ReadStats()) for r in sc.score(b).iter_json()]
    assert [(r["uid"], r["class"], r["score"]) for r in before + after] == [
        (r["uid"], r["class"], r["score"]) for r in want]
    assert summ["verdicts"] == dict(Counter(r["class"] for r in want))
    # both notice files are complete Zeek logs
    for p in (tmp_path / "notice.log.1", notice):
        text = p.read_text()
        assert text.startswith("#separator") and text.rstrip().splitlines()[-1].startswith("#close")
    notices = [ln for p in (tmp_path / "notice.log.1", notice) for ln in p.read_text().splitlines()
               if not ln.startswith("#")]
    assert notices and all("BNN::Malicious_Flow" in ln for ln in notices)


def test_sigterm_drains_open_batch_and_resumes_exactly(shared: Path, tmp_path: Path) -> None:
    header, body = _real(shared)
    log, port, out = tmp_path / "conn.log", _free_port(), tmp_path / "v.jsonl"
    log.write_bytes(b"".join(header + body[:400]))
    cfg = tmp_path / "sidecar.toml"
    cfg.write_text(f"""
[sidecar]
engine = "numpy"
batch_max = 100000
batch_ms = 30000
close_when_idle = false
checkpoint_dir = "{tmp_path}/ckpt"
[metrics]
listen = "127.0.0.1:{port}"
[[source]]
kind = "follow"
path = "{log}"
poll_ms = 20
batch_size = 64
[[sink]]
kind = "jsonl"
path = "{out}"
""")
    child = _start(cfg)
    try:
        # all 400 read, none scored yet: they sit in the open micro-batch (closes after 30 s)
        m = _wait_metrics(child, port, lambda m: _total(m, "bnn_sidecar_records_in_total") == 400)
        assert m["bnn_sidecar_records_scored_total"] == 0 and m["bnn_sidecar_records_inflight"] == 400
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err.decode()[-3000:]
    summ = _summary(err)
    assert summ["scored"] == 400 and summ["unaccounted"] == 0 and summ["batches"] == 1
    assert len(_rows(out)) == 400
    assert list((tmp_path / "ckpt").glob("*.ckpt.json"))
    # the sensor keeps logging while we are down; the restart continues at the checkpoint
    _append(log, body[400:])
    r = subprocess.run([sys.executable, "-m", "sidecar.cli.main", "run", "--config", str(cfg), "--once",
                        "--metrics-listen", "", "--batch-ms", "20"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    assert _summary(r.stderr)["scored"] == 366
    got = [row["uid"] for row in _rows(out)]
    assert got == [ln.split(b"\t")[1].decode() for ln in body]


@pytest.mark.parametrize("bad", ["[[source]]\nkind = 'follow'\npath = 'x'\npoll = 1\n", "[sidecar]\n"])
def test_run_refuses_bad_config(tmp_path: Path, bad: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(bad)
    r = subprocess.run([sys.executable, "-m", "sidecar.cli.main", "run", "--config", str(cfg)],
                       capture_output=True, timeout=120)
    assert r.returncode == 1
    assert b"'poll'" in r.stderr or b"no [[source]]" in r.stderr


def test_metrics_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[metrics]\nlisten = "127.0.0.1:{port}"\n[[source]]\nkind = "follow"\n'
                       f'path = "{tmp_path}/conn.log"\n[[sink]]\nkind = "jsonl"\npath = "{tmp_path}/o.jsonl"\n')
        r = subprocess.run([sys.executable, "-m", "sidecar.cli.main", "run", "--config", str(cfg)],
                           capture_output=True, timeout=120)
    assert r.returncode == 1 and f"cannot serve metrics on 127.0.0.1:{port}".encode() in r.stderr
