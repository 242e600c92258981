"""The label audit's entries rest on facts in the real files; the mask selects exactly those records."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.sources.zeek_tsv import read_path
from sidecar.train.label_audit import SUSPECTS, suspect_mask


def _capture(shared: Path, name: str, path: Path | None = None) -> tuple[FlowBatch, np.ndarray]:
    p = path or shared / "zeek-labeled" / name / "conn.log.labeled.gz"
    batches = list(read_path(p, ReadStats()))
    b = FlowBatch.concat(batches)
    assert b.label is not None
    return b, np.asarray([str(v) for v in b.label.tolist()], dtype=object)


def _mask(b: FlowBatch, lab: np.ndarray, name: str) -> np.ndarray:
    return suspect_mask(name, lab, np.asarray(b["resp_h"], dtype=object), np.asarray(b["resp_p"]))


def test_iot23_42_1_beacon_to_one_host_after_the_download(shared: Path) -> None:
    name = "iot-23/CTU-IoT-Malware-Capture-42-1"
    b, lab = _capture(shared, name)
    m = _mask(b, lab, name)
    assert m.sum() == 1947 and set(lab[m].tolist()) == {"Benign"}
    assert set(np.asarray(b["orig_h"], dtype=object)[m].tolist()) == {"192.168.1.197"}  # the infected Pi
    ts = np.asarray(b["ts"])
    download = ts[lab == "Malicious/C&C-FileDownload"]
    assert len(download) == 3
    # the beacon starts within a minute after the first labelled C&C download, never before it
    assert 0 < ts[m].min() - download.min() < 60
    assert int((np.asarray(b["conn_state"], dtype=object)[m] == "S0").sum()) >= 900  # unanswered SYN retries
    # same /24 as the C&C server of capture 34-1 (next test)
    assert SUSPECTS[0].resp_h.rsplit(".", 1)[0] == SUSPECTS[1].resp_h.rsplit(".", 1)[0]


def test_iot23_34_1_benign_records_to_its_own_cc_server(shared: Path) -> None:
    name = "iot-23/CTU-IoT-Malware-Capture-34-1"
    b, lab = _capture(shared, name)
    m = _mask(b, lab, name)
    assert m.sum() == 65 and set(np.asarray(b["resp_p"])[m].tolist()) == {80}
    same_host = np.asarray(b["resp_h"], dtype=object) == SUSPECTS[1].resp_h
    assert int((same_host & (lab == "Malicious/C&C")).sum()) == 6706  # the same host, labelled C&C
    assert int((same_host & ~m).sum()) == 6706


def test_other_captures_and_labels_are_untouched(shared: Path) -> None:
    for p in sorted((shared / "zeek-labeled").rglob("*conn.log*.gz")):
        name = p.parent.relative_to(shared / "zeek-labeled").as_posix()
        b, lab = _capture(shared, name, p)
        m = _mask(b, lab, name)
        if name not in {s.capture for s in SUSPECTS}:
            assert not m.any(), name
        assert not (m & (lab != "Benign")).any(), name  # only records labelled Benign are ever suspect


def test_training_loader_carries_the_audit(shared: Path) -> None:
    # evaluate's Zeek protocol reads captures through load_zeek_capture; its suspect mask is the audit's
    from sidecar.train.data import load_zeek_capture

    n = {}
    for name in ("iot-23/CTU-IoT-Malware-Capture-42-1", "iot-23/CTU-IoT-Malware-Capture-34-1",
                 "iot-23/CTU-Honeypot-Capture-4-1"):
        c = load_zeek_capture(shared / "zeek-labeled" / name / "conn.log.labeled.gz", shared)
        assert c.suspect is not None and len(c.suspect) == len(c.y)
        assert (c.y[c.suspect] == 0).all()  # only records labelled benign
        n[name.split("-")[-2]] = int(c.suspect.sum())
    assert n == {"42": 1947, "34": 65, "4": 0}
