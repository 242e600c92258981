"""Format detection and the ``flows`` command, end to end on real records."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from sidecar.errors import FormatDetectionError, InputError
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import detect_bytes, detect_path, read_path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sidecar" / "data" / "samples"


@pytest.mark.parametrize(
    ("rel", "fmt"),
    [
        ("zeek/slips/horizontal-portscan.conn.log", "zeek-tsv"),
        ("zeek/slips/test10-mixed.conn.log", "zeek-tsv"),  # starts with a TAB before #separator
        ("zeek/slips/vertical-portscan.conn.json.log", "zeek-json"),
        ("zeek/slips/test9-mixed.conn.json.log", "zeek-json"),
        ("suricata/eve/slips-test6-malicious.eve.json.gz", "eve"),
        ("suricata/eve/magnc-honeypot-ssh.eve.json", "eve"),
        ("cic-ids2018/SQL Injection.csv.gz", "cic-csv"),
        ("cic-ids2017-improved/Botnet_736.csv.gz", "cic-csv"),
        ("zeek-labeled/iot-23/CTU-Honeypot-Capture-4-1/conn.log.labeled.gz", "zeek-tsv"),
    ],
)
def test_detects_real_files(shared: Path, rel: str, fmt: str) -> None:
    assert detect_path(shared / rel) == fmt


def test_detect_rejects_garbage() -> None:
    with pytest.raises(FormatDetectionError):
        detect_bytes(b"\x00\x01\x02garbage\xff")
    with pytest.raises(FormatDetectionError):
        detect_bytes(b'{"hello": 1}\n')


def test_missing_file_is_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        read_path(tmp_path / "nope.log", "auto", ReadStats())


def _flows(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli.main", "flows", *args], capture_output=True, timeout=120
    )


def test_flows_cli_on_bundled_samples(tmp_path: Path) -> None:
    out = tmp_path / "flows.jsonl"
    files = sorted(str(p) for p in SAMPLES.iterdir() if p.name != "README.md")
    r = _flows("--input", *files, "--out", str(out))
    assert r.returncode == 0, r.stderr.decode()
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    # 41 + 50 + 766 Zeek records and 3512 eve flow events, all real.
    assert len(rows) == 41 + 50 + 766 + 3512
    assert {r["source"] for r in rows} == {"zeek-tsv", "zeek-json", "eve"}
    total = next(ln for ln in r.stderr.decode().splitlines() if ln.startswith("total:"))
    summary = orjson.loads(total.split(":", 1)[1])
    assert summary["emitted"] == len(rows)


def test_flows_cli_nothing_readable_is_nonzero(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.bin"
    bad.write_bytes(b"\x00\xff" * 100)
    r = _flows("--input", str(bad), "--no-records")
    assert r.returncode != 0
    assert b"unknown record format" in r.stderr


def test_runtime_import_pulls_no_heavy_modules() -> None:
    code = (
        "import sys, sidecar.cli.main, sidecar.sources.detect, sidecar.flow;"
        "bad=[m for m in ('torch','pandas','matplotlib','sklearn','onnx') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout
