"""``bnn-sidecar evaluate`` end to end on a small real-data layout (every protocol, plots, Markdown)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from sidecar.train import metrics

pytestmark = pytest.mark.slow  # one evaluate run of all protocols: ~25-35 s on a busy 2-core box

CIC = (
    "cic-ids2018/SQL Injection.csv.gz",
    "cic-ids2018/Brute Force -XSS.csv.gz",
    "cic-ids2017-improved/Botnet_736.csv.gz",
    "cic-ids2017-improved/Infiltration_36.csv.gz",
)
ZEEK = (
    "zeek-labeled/iot-23/CTU-Honeypot-Capture-4-1/conn.log.labeled.gz",
    "zeek-labeled/slips-ctu-sme-11/test18-malicious-ctu-sme-11-win/conn.log.labeled.gz",
)


@pytest.fixture(scope="module")
def report(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for rel in CIC + ZEEK:
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(shared / rel)
    out = tmp_path_factory.mktemp("report")
    r = subprocess.run(
        [sys.executable, "-m", "sidecar.cli.main", "-q", "evaluate", "--data", str(root), "--out", str(out),
         "--protocols", "heldout,cv3,lodo,loday,zeek", "--epochs", "1", "--no-progress"],
        capture_output=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    return out


def test_report_files(report: Path) -> None:
    res = json.loads((report / "metrics.json").read_text())
    assert res["protocols"] == ["heldout", "cv3", "lodo", "loday", "zeek"]
    for name in res["plots"]:
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"heldout_confusion.png", "cv3_roc_pr.png", "cv3_score_hist.png"} <= set(res["plots"])
    md = (report / "README.md").read_text()
    for head in ("## Held-out", "## Stratified 3-fold", "## Leave-one-dataset-out", "## Leave-one-day-out",
                 "## Cross-source"):
        assert head in md


def test_cv_covers_every_row_once_and_counts_add_up(report: Path) -> None:
    res = json.loads((report / "metrics.json").read_text())
    cv = res["cv3"]
    assert sum(f["n_test"] for f in cv["folds"]) == cv["rows"] == res["rows"]
    assert cv["duplicates_removed_before_split"] >= 6  # README: 3 (SQLi) + 3 (XSS) duplicate CSV rows
    for m in ("bnn", "bnn_screen", "mlp", "tree"):
        b = cv["pooled"][m]["binary"]
        assert b["tp"] + b["fp"] + b["fn"] + b["tn"] == cv["rows"]
        assert np.array(cv["pooled"][m]["confusion_family"]).sum() == cv["rows"]


def test_leave_one_out_groups(report: Path) -> None:
    res = json.loads((report / "metrics.json").read_text())
    assert {f["name"] for f in res["lodo"]["folds"]} == {"cse-cic-ids2018", "cic-ids2017-improved"}
    days = {f["name"] for f in res["loday"]["folds"]}
    assert days and all(d.startswith("cic-ids2017-improved@2017-07-0") for d in days)
    assert sum(f["n_test"] for f in res["lodo"]["folds"]) == res["rows"]


def test_zeek_cross_source_per_capture_and_label(report: Path) -> None:
    z = json.loads((report / "metrics.json").read_text())["zeek"]
    caps = {c["capture"]: c for c in z["captures"]}
    assert set(caps) == {"iot-23/CTU-Honeypot-Capture-4-1", "slips-ctu-sme-11/test18-malicious-ctu-sme-11-win"}
    hue = caps["iot-23/CTU-Honeypot-Capture-4-1"]
    assert hue["rows"] == 452 and hue["per_label"]["benign"]["n"] == 452  # zeek-labeled README
    slips = caps["slips-ctu-sme-11/test18-malicious-ctu-sme-11-win"]
    assert slips["dropped_no_ground_truth"] == 3  # the 3 "Unknown" rows
    assert sum(v["n"] for v in slips["per_label"].values()) == slips["rows"] == 763
    rat = slips["per_label"]["Malicious/From_malicious-To_malicious-Malware_data_exfiltration-RemcosRAT"]
    assert rat["n"] == 719
    b = slips["models"]["bnn"]["binary"]
    assert b["tp"] + b["fn"] == 719 and abs(rat["bnn"]["flagged"] - b["recall"]) < 1e-9


def test_metrics_binary_and_per_family() -> None:
    y = np.array([0, 0, 0, 1, 1, 3])
    pred = np.array([0, 1, 0, 1, 0, 3])
    b = metrics.binary((y != 0).astype(int), (pred != 0).astype(int))
    assert (b["tp"], b["fp"], b["fn"], b["tn"]) == (2, 1, 1, 2)
    assert b["fpr"] == pytest.approx(1 / 3) and b["recall"] == pytest.approx(2 / 3)
    pf = metrics.per_family(y, pred)
    assert pf["scan"]["support"] == 2 and pf["scan"]["recall"] == 0.5 and pf["dos"]["recall"] == 1.0
    assert "ddos" not in pf
