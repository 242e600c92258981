"""``bnn-sidecar bench``: one run with tiny sizes prints every section with the right shape.

Speeds are not checked (they depend on the machine); the structure, the counts and
the RSS isolation facts are.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from sidecar.cli.bench import COLUMNS, WHATS

REPO = Path(__file__).resolve().parent.parent
TINY = ["--min-records", "600", "--repeat", "1", "--seconds", "0.02", "--rss-records", "600"]


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli.main", "bench", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    p = _bench("all", *TINY, "--json")
    assert p.returncode == 0, p.stderr
    res: dict[str, Any] = orjson.loads(p.stdout)
    return res


def test_all_sections_present(result: dict[str, Any]) -> None:
    assert set(WHATS) <= set(result)
    m = result["machine"]
    assert m["pinned_cpu"] is not None and m["loadavg_1m"] is not None and m["onnxruntime"]


def test_parse_rows(result: dict[str, Any]) -> None:
    rows = {r["format"]: r for r in result["parse"]}
    assert set(rows) == {"zeek-tsv", "zeek-json", "eve"}
    for r in result["parse"]:
        assert set(COLUMNS["parse"]) - {"orjson_lines_per_s", "ratio_vs_orjson"} <= set(r)
        assert r["records"] >= 1 and r["reader_rec_per_s"] > 0
    for fmt in ("zeek-json", "eve"):
        assert rows[fmt]["orjson_lines_per_s"] > 0 and rows[fmt]["ratio_vs_orjson"] > 0
    assert "ratio_vs_orjson" not in rows["zeek-tsv"]


def test_model_rows(result: dict[str, Any]) -> None:
    got = [(r["engine"], r["path"], r["batch"]) for r in result["model"]]
    # one run: engine.run and the scorer's cascade path, each engine, each batch size
    assert sorted(got) == sorted((e, p, b) for e in ("onnx", "numpy") for p in ("run", "cascade") for b in (1, 64, 1024))
    for r in result["model"]:
        assert r["calls"] >= 20 and 0 < r["p50_us"] <= r["p99_us"] and r["flows_per_s"] > 0
        if r["path"] == "cascade":
            assert 0.0 < r["stage2_frac"] < 1.0  # the bundled samples have flows on both sides of the screen


def test_e2e_rows(result: dict[str, Any]) -> None:
    rows = result["e2e"]
    assert {r["engine"] for r in rows} == {"onnx", "numpy"}
    assert {r["format"] for r in rows} == {"zeek-tsv", "zeek-json", "eve"}
    # with the flood rule as shipped and without it, same passes: every engine x input twice
    from sidecar.features.rate import RateRule

    assert sorted((r["engine"], r["input"], str(r["rate_rule"])) for r in rows) == sorted(
        (r["engine"], r["input"], v) for r in rows for v in (str(RateRule().threshold), "off") if r["rate_rule"] == "off")
    # the guessing rule is on and off in the same rows as the flood rule
    assert all((r["rate_rule"] == "off") == (r["guess_rule"] == "off") for r in rows)
    for r in rows:
        assert r["flows"] > 0 and r["e2e_flows_per_s"] > 0 and r["ratio_vs_parse"] > 0
        assert r["verdict_bytes_per_pass"] > 100 * r["flows"]


def test_rss_rows_isolated(result: dict[str, Any]) -> None:
    rows = {r["engine"]: r for r in result["rss"]}
    assert set(rows) == {"onnx", "numpy"}
    for r in rows.values():
        assert r["exit"] == 0 and r["flows"] > 0 and 5 < r["peak_rss_mb"] < 2048
    assert rows["numpy"]["onnxruntime_loaded"] is False  # the numpy engine never imports onnxruntime
    assert rows["onnx"]["onnxruntime_loaded"] is True


def test_table_output_and_single_section() -> None:
    p = _bench("parse", *TINY, "--input", str(REPO / "sidecar/data/samples/horizontal-portscan.conn.log"))
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    assert out[0].startswith("machine: ") and "## parse" in out
    i = out.index("## parse")
    assert out[i + 1].split(" | ") == list(COLUMNS["parse"])
    assert out[i + 2].startswith("horizontal-portscan.conn.log | zeek-tsv | ")
    assert "## model" not in out


def test_no_usable_input_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("Dst Port,Protocol,Timestamp,Flow Duration,Tot Fwd Pkts,Label\n80,6,01/01/2018 00:00:00,1,1,Benign\n")
    p = _bench("parse", *TINY, "--input", str(f))
    assert p.returncode == 1 and "no Zeek/eve record files" in p.stdout
