"""``scripts/benign_study.py`` (the site-adaptation study in the model card) runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_site_protocol_runs_and_reports_both_models(shared: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from sidecar.train.cascade import THRESHOLD1
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benign_study.py"), "--protocol", "site", "--seeds", "0",
         "--epochs", "1", "--extras-weight", "2", "--thresholds", str(THRESHOLD1), "0.05", "--out", str(tmp_path)],
        capture_output=True, timeout=900,
    )
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    res = json.loads((tmp_path / "benign_study.json").read_text())
    (run,) = res["runs"]
    assert run["extra_benign_rows"] > 7000  # first halves of the Zeek captures' benign records + lab eve
    for model in ("cic", "benign"):
        z, lab = run[model]["zeek"], run[model]["lab"]
        # the later half of the benign records is the test set; every attack record is tested
        assert 7000 < z["benign"]["n"] < 8000 and z["scan"]["n"] == 14675
        assert lab["eve:benign"]["n"] == 122 and lab["eve:scan-syn"]["n"] == 1000
        assert all(0.0 <= v["rate"] <= 1.0 for v in [*z.values(), *lab.values()] if v["rate"] is not None)
    assert "| 0 | all (time split) | benign |" in (tmp_path / "benign_study.md").read_text()
    assert res["extras_weight"] == 2
    # the sweep at the model's own threshold is the adapted model's verdict; a lower one flags a superset
    at, low = run["sweep"]
    assert at["threshold"] == THRESHOLD1 and at["benign"] == run["benign"]["zeek"]["benign"]["rate"]
    assert at["scan"] == run["benign"]["zeek"]["scan"]["rate"]
    assert all(low[k] >= at[k] for k in ("benign", "scan", "botnet"))
