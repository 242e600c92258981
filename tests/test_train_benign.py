"""``train --benign``: a site's own benign records join the training part (sidecar.train.benign)."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sidecar.features.schema import FEATURE_NAMES
from sidecar.train.benign import load_benign

IOT34 = "zeek-labeled/iot-23/CTU-IoT-Malware-Capture-34-1/conn.log.labeled.gz"
EVE = "suricata/eve/magnc-honeypot-ssh.eve.json"


def _zeek_labels(path: Path) -> list[str]:
    """The label column of a labelled conn log, parsed with plain csv (independent of the reader)."""
    out: list[str] = []
    fields: list[str] = []
    with gzip.open(path, "rt", newline="") as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if row and row[0] == "#fields":
                fields = row[1:]
            elif row and not row[0].startswith("#"):
                rec = dict(zip(fields, row, strict=False))
                if "label" in rec:
                    out.append(rec["label"])
                else:  # IoT-23 quirk: the last three columns are joined by three spaces
                    out.append(row[-1].split("   ")[1])
    return out


def test_labelled_zeek_log_gives_only_its_benign_rows(shared: Path) -> None:
    p = shared / IOT34
    labels = _zeek_labels(p)
    r = load_benign([p])
    f = r.report["files"][0]
    assert f["read"] == len(labels) == 23145
    n_benign = sum(1 for x in labels if x.lower().startswith("benign"))
    assert n_benign == 1923  # the dataset's published count
    assert f["kept"] + f["no_packets"] == n_benign and f["not_benign"] == len(labels) - n_benign
    assert r.X.shape[1] == len(FEATURE_NAMES)
    assert len(r.X) == r.report["rows"] == f["kept"] - r.report["duplicates_removed"]


def test_unlabelled_eve_every_flow_with_packets_is_kept(shared: Path) -> None:
    p = shared / EVE
    flows = [json.loads(line) for line in p.read_text().splitlines() if '"event_type":"flow"' in line.replace(" ", "")]
    empty = sum(1 for e in flows if e["flow"].get("pkts_toserver", 0) == 0 and e["flow"].get("pkts_toclient", 0) == 0)
    r = load_benign([p])
    f = r.report["files"][0]
    assert f["read"] == len(flows) > 0
    assert f["no_packets"] == empty and f["kept"] == len(flows) - empty
    assert f["not_benign"] == f["no_ground_truth"] == 0


def test_folder_skips_files_that_are_not_flow_records(shared: Path) -> None:
    base = shared / "zeek-labeled"
    files = [q for q in base.rglob("*") if q.is_file()]
    conn = [q for q in files if "conn" in q.name]
    r = load_benign([base])
    assert len(r.report["files"]) == len(conn) == 9
    assert r.report["files_skipped"] == {"not_flow_records": len(files) - len(conn)}


def test_rows_equal_to_cic_rows_and_duplicates_are_removed(shared: Path) -> None:
    p = shared / IOT34
    first = load_benign([p])
    assert first.report["duplicates_removed"] > 0
    u8 = first.X.view(np.uint32)
    assert len({r.tobytes() for r in u8}) == len(u8)  # no duplicate left (NaN-safe byte compare)
    cic = first.X[::3]
    second = load_benign([p], cic_X=cic)
    assert second.report["equal_to_cic_row_removed"] == len(cic)
    assert len(second.X) == len(first.X) - len(cic)


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    from sidecar.errors import InputError

    with pytest.raises(InputError, match="no such file"):
        load_benign([tmp_path / "nope.log"])


@pytest.mark.slow
def test_train_cli_adds_benign_rows_to_training_only(shared: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    data = tmp_path / "data"
    data.mkdir()
    (data / "sqli.csv.gz").symlink_to(shared / "cic-ids2018" / "SQL Injection.csv.gz")
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "sidecar.cli.main", "-q", "train", "--data", str(data), "--out", str(out),
         "--epochs", "1", "--no-progress", "--benign", str(shared / IOT34), "--benign-weight", "3"],
        capture_output=True, timeout=600,
    )
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    rep = json.loads((out / "data_report.json").read_text())
    m = json.loads((out / "metrics.json").read_text())["metrics"]["headline"]
    extra = rep["benign_extra"]["rows"]
    assert extra > 500 and m["extra_benign_rows"] == extra
    # held-out rows are CIC rows only: 20 % of the 286-row file minus duplicates
    # each extra row counts 3 times in training (--benign-weight 3)
    assert m["n_test"] < rep["rows"] and m["n_train"] == rep["rows"] - m["n_test"] + 3 * extra
    assert m["extra_benign_weight"] == 3
    assert "benign extra rows" in r.stdout.decode()
    bad = subprocess.run(
        [sys.executable, "-m", "sidecar.cli.main", "-q", "train", "--data", str(data), "--out", str(tmp_path / "x"),
         "--benign", str(shared / IOT34), "--benign-weight", "0"], capture_output=True, timeout=120,
    )
    assert bad.returncode != 0 and b"--benign-weight" in bad.stderr
