"""Edge profile (docs/EDGE.md): numpy engine without onnxruntime, one pinned core, a 256 MB cap.

Runs ``scripts/edge-bench.sh`` small (real bundled records repeated to 20 k flows) and checks it
completes under the limits with every flow accounted for; checks the cap is really applied (a cap
too small for the interpreter makes the run fail); and that importing the runtime package pulls in
no torch / pandas / matplotlib / sklearn / onnx. Speed and RSS targets are reported by the script
(and docs/EDGE.md), never asserted here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "scripts" / "edge-bench.sh"
HEAVY = ("torch", "pandas", "matplotlib", "sklearn", "onnx")


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("taskset") is None or shutil.which("prlimit") is None:
        pytest.skip("taskset/prlimit (util-linux) not installed")
    return subprocess.run(
        ["bash", str(BENCH), "--python", sys.executable, *args],
        capture_output=True, text=True, timeout=300,
    )


def test_edge_bench_small_completes_under_the_cap() -> None:
    r = _bench("--flows", "20000", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["engine"] == "numpy" and res["core"] == 0 and res["cap_mb"] == 256
    # every flow of the repeated real input is scored and written once
    assert res["flows"] >= 20000
    assert res["flows"] == res["expected"] == res["verdict_lines"]
    assert res["heavy_modules_loaded"] == []
    assert 0 < res["peak_rss_mb"] < 256
    assert res["flows_per_s"] > 0
    assert set(res["targets"]) == {"flows_per_s>=50000", "peak_rss_mb<=64"}
    # the bundled records contain real scans and C2 attempts: the model flags some of them
    assert sum(res["flagged"].values()) > 0


def test_edge_cap_is_really_applied() -> None:
    r = _bench("--flows", "2000", "--cap-mb", "24")
    assert r.returncode != 0
    assert "under the 24 MB cap" in r.stderr


def test_onnx_engine_is_a_clean_error_without_onnxruntime() -> None:
    r = _bench("--flows", "2000", "--engine", "onnx")
    assert r.returncode != 0
    assert "onnxruntime is not installed" in r.stderr
    assert "Traceback" not in r.stderr


def test_runtime_import_pulls_no_heavy_modules() -> None:
    code = f"""
import importlib, pkgutil, sys, json
import sidecar
core = ["sidecar.cli.main", "sidecar.scorer", "sidecar.sources.detect", "sidecar.engines.numpy_engine",
        "sidecar.engines.load", "sidecar.sinks.notice_log", "sidecar.sinks.eve_alert", "sidecar.cli.demo",
        "sidecar.cli.score", "sidecar.cli.flows"]
for m in core:
    importlib.import_module(m)
core_loaded = sorted(m for m in {HEAVY!r} + ("onnxruntime",) if m in sys.modules)
skipped = {{}}
for info in pkgutil.walk_packages(sidecar.__path__, "sidecar."):
    name = info.name
    if name.startswith("sidecar.train") or name in ("sidecar.cli.train", "sidecar.cli.evaluate"):
        continue
    try:
        importlib.import_module(name)
    except Exception as exc:  # another module's optional dependency: reported, not checked
        skipped[name] = repr(exc)[:200]
all_loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)
print(json.dumps({{"core": core_loaded, "all": all_loaded, "skipped": skipped}}))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["core"] == [], f"core runtime modules import {res['core']}"
    assert res["all"] == [], f"runtime modules import {res['all']} (skipped: {res['skipped']})"
