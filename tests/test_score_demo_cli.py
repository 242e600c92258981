"""``score`` and ``demo`` end to end with the shipped model, on real records, both engines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sidecar" / "data" / "samples"
MODEL = REPO / "sidecar" / "data" / "model" / "bnn.onnx"


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "sidecar.cli.main", *args], capture_output=True, timeout=300)


def test_score_both_engines_identical_on_real_records(tmp_path: Path) -> None:
    files = sorted(str(p) for p in SAMPLES.iterdir() if p.name != "README.md")
    outs = {}
    for eng in ("onnx", "numpy"):
        out = tmp_path / f"{eng}.jsonl"
        r = _cli("score", "--input", *files, "--engine", eng, "--out", str(out))
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        outs[eng] = out.read_bytes()
    assert outs["onnx"] == outs["numpy"]
    rows = [orjson.loads(x) for x in outs["onnx"].splitlines()]
    assert len(rows) == 41 + 50 + 766 + 3512
    need = {"ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "score", "malicious",
            "class", "stage", "model"}
    assert need <= set(rows[0])
    assert all(0.0 <= r["score"] <= 1.0 for r in rows)
    assert all((r["class"] == "benign") != r["malicious"] for r in rows)


def test_score_rejects_tampered_model(tmp_path: Path) -> None:
    bad = tmp_path / "bnn.onnx"
    data = bytearray(MODEL.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    (tmp_path / "bnn.onnx.sha256").write_text((MODEL.parent / "bnn.onnx.sha256").read_text())
    r = _cli("score", "--input", str(SAMPLES / "horizontal-portscan.conn.log"), "--model", str(bad), "--out",
             str(tmp_path / "o.jsonl"))
    assert r.returncode != 0
    assert b"sha256" in r.stderr.lower()


def test_demo_writes_notice_and_eve_alerts(tmp_path: Path) -> None:
    r = _cli("demo", "--out-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert b"flagged per class" in r.stdout
    notice = (tmp_path / "notice.log").read_text()
    assert notice.startswith("#separator") and "BNN::Malicious_Flow" in notice and "#close" in notice
    alerts = [orjson.loads(x) for x in (tmp_path / "eve-alerts.json").read_bytes().splitlines()]
    assert alerts and all(a["event_type"] == "alert" for a in alerts)
