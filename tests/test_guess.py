"""The guessing rule (sidecar/features/guess.py) on real records: a third-party nmap ssh-brute run
(Suricata 7 eve of the Slips pcap, tests/data/thirdparty), the lab, the labelled Zeek logs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from conftest import REPO, require

from sidecar.config import load_config
from sidecar.errors import ConfigError
from sidecar.features.guess import GuessCounter, GuessRule, login_sessions
from sidecar.features.labels import zeek_family
from sidecar.features.rate import RateRule
from sidecar.flow import FlowBatch
from sidecar.scorer import make_scorer
from sidecar.sinks.eve_alert import EveAlertSink
from sidecar.sinks.notice_log import NoticeLogSink
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path
from sidecar.verdict import STAGE_GUESS

MODEL = REPO / "sidecar" / "data" / "model" / "bnn.onnx"
BRUTE = REPO / "tests" / "data" / "thirdparty" / "eve" / "slips-test19-ssh-bruteforce.eve.json.gz"
LAB_EVE = REPO / "tests" / "data" / "lab" / "eve"
OFF = GuessRule(threshold=0)


def _read(path: Path) -> FlowBatch:
    return FlowBatch.concat(list(read_path(path, "auto", ReadStats(), batch_size=65536)))


@pytest.fixture(scope="module")
def brute() -> FlowBatch:
    return _read(BRUTE)


def _score(batch: FlowBatch, size: int = 1024, **kw: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sc = make_scorer(MODEL, "onnx", **kw)  # type: ignore[arg-type]
    vs = [sc.score(batch.take(np.arange(i, min(i + size, len(batch))))) for i in range(0, len(batch), size)]
    return (np.concatenate([v.malicious for v in vs]), np.concatenate([v.cls for v in vs]),
            np.concatenate([v.stage for v in vs]))  # fmt: skip


def test_login_sessions_are_answered_tcp_to_a_login_service(brute: FlowBatch) -> None:
    s = login_sessions(brute)
    # 66 SSH sessions (app_proto ssh, port 902: the service, not the port, makes it a login) + 1 bare SYN probe
    assert s.sum() == 66 and len(brute) == 67
    probe = np.flatnonzero(~s)  # the one record Suricata named no application protocol for (a bare probe)
    assert brute["service"][probe].tolist() == [None] and brute["orig_pkts"][probe].tolist() == [2.0]
    # missing payload is not "payload both ways": never counted (missing is not zero, nor more than zero)
    gone = brute.take(np.arange(len(brute)))
    gone.cols["resp_bytes"] = np.full(len(gone), np.nan)
    assert not login_sessions(gone).any()
    # without a service name the port decides: 902 is not a login port, 22 is
    anon = brute.take(np.arange(len(brute)))
    anon.cols["service"] = np.full(len(anon), None, dtype=object)
    assert not login_sessions(anon).any()
    anon.cols["resp_p"] = np.full(len(anon), 22, dtype=np.int32)
    assert login_sessions(anon).sum() == 66
    # the probe (SYN + its retry, a RST back) "carries payload" both ways in eve's estimate (TCP options,
    # Ethernet padding); it is no session because it has too few packets each way
    assert (anon["orig_bytes"][probe] > 0).all() and (anon["resp_bytes"][probe] > 0).all()
    anon.cols["resp_pkts"] = anon["resp_pkts"].copy()
    anon.cols["resp_pkts"][probe] = 2.0
    assert not login_sessions(anon)[probe].any()  # still 2 packets from the client
    anon.cols["orig_pkts"] = anon["orig_pkts"].copy()
    anon.cols["orig_pkts"][probe] = 3.0
    assert login_sessions(anon)[probe].all()


def test_nmap_ssh_brute_is_found_from_the_tenth_session(brute: FlowBatch) -> None:
    model, _, _ = _score(brute, guess=OFF)
    mal, cls, stage = _score(brute)
    assert model.mean() < 0.2  # each session looks like a failed login (measured 0.119)
    assert mal.mean() >= 0.9  # measured 0.925
    assert (mal | ~model).all()
    by_rule = stage == STAGE_GUESS
    assert by_rule.any() and set(cls[by_rule].tolist()) == {"bruteforce"}
    # causal count: none of the first 9 sessions can reach 10
    first = np.flatnonzero(login_sessions(brute))[:9]
    assert not by_rule[first].any()
    # the model's own "scan" verdicts on sessions past the threshold are re-classed, not re-staged
    sc = make_scorer(MODEL, "onnx")
    sc.score(brute)
    assert sc.guess_flagged == int(by_rule.sum()) and sc.guess_relabelled >= 1
    counts = GuessCounter(60.0).update(brute)
    assert (counts[first] < 10).all() and not np.isin(cls[mal & (counts >= 10)], ["scan"]).any()


def test_counts_do_not_depend_on_batch_size(brute: FlowBatch) -> None:
    a = _score(brute, size=1024)
    b = _score(brute, size=7)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_rate_ignore_spares_guessing_clients(brute: FlowBatch) -> None:
    mal, _, stage = _score(brute, rate=RateRule(ignore=("147.32.80.40/32",)))
    assert not (stage == STAGE_GUESS).any()
    model, _, _ = _score(brute, guess=OFF)
    np.testing.assert_array_equal(mal, model)


def test_no_benign_record_is_flagged_by_the_rule(shared: Path) -> None:
    """The lab's benign capture (8 SSH logins + scp, FTP get/put: at most 5 sessions per key) and every
    labelled Zeek capture: the rule adds nothing to benign records (it was set with these in view)."""
    files = [LAB_EVE / "benign.eve.json.gz", *sorted((shared / "zeek-labeled").rglob("*conn.log*.gz"))]
    for p in files:
        batch = _read(p)
        mal, _, stage = _score(batch)
        model, _, _ = _score(batch, guess=OFF)
        added = mal & ~model
        if batch.label is None:  # the lab's benign capture: every record is benign
            assert not added.any(), p.name
        else:
            fams = np.asarray([zeek_family(x) for x in batch.label.tolist()], dtype=object)
            assert not (added & (fams == "benign")).any(), p.name
        assert (stage[added] == STAGE_GUESS).all()


def test_sinks_name_the_rule(brute: FlowBatch, tmp_path: Path) -> None:
    v = make_scorer(MODEL, "onnx").score(brute)
    rule = v.take(np.flatnonzero(v.stage == STAGE_GUESS))
    notice = NoticeLogSink(tmp_path / "notice.log", fmt="json", suppress_for=0.0)
    notice.write(rule)
    notice.close()
    rows = [orjson.loads(x) for x in (tmp_path / "notice.log").read_bytes().splitlines()]
    assert rows and {r["note"] for r in rows} == {"BNN::Password_Guessing"}
    assert all(r["msg"].startswith("guessing rule flagged login session as bruteforce") for r in rows)
    eve = EveAlertSink(tmp_path / "alerts.json")
    eve.write(rule)
    eve.close()
    alerts = [orjson.loads(x)["alert"] for x in (tmp_path / "alerts.json").read_bytes().splitlines()]
    assert {a["signature_id"] for a in alerts} == {9100051}
    assert {a["signature"] for a in alerts} == {"BNN-SIDECAR bruteforce password guessing (stage 4, guessing rule)"}


def test_config_and_cli(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text('[sidecar]\nguess_threshold = 20\n[[source]]\nkind = "follow"\npath = "/tmp/c.log"\n')
    assert load_config(p, env={}).sidecar.guess_threshold == 20
    assert load_config(p, env={"BNN_SIDECAR_SIDECAR_GUESS_THRESHOLD": "0"}).sidecar.guess_threshold == 0
    with pytest.raises(ConfigError, match="guess_threshold"):
        load_config(p, env={"BNN_SIDECAR_SIDECAR_GUESS_THRESHOLD": "-1"})
    with pytest.raises(ConfigError, match="guess_window_s"):
        load_config(p, env={"BNN_SIDECAR_SIDECAR_GUESS_WINDOW_S": "0"})
    summary = {}
    for extra in ([], ["--guess-threshold", "0"]):
        r = subprocess.run([sys.executable, "-m", "sidecar.cli.main", "score", "--input", str(BRUTE), "--out", "-",
                            *extra], capture_output=True, timeout=300, cwd=REPO)  # fmt: skip
        assert r.returncode == 0, r.stderr.decode()[-1500:]
        line = [x for x in r.stderr.decode().splitlines() if x.startswith("summary: ")][-1]
        summary[len(extra)] = orjson.loads(line[len("summary: ") :])
    assert summary[0]["flagged_by_guess_rule"] > 50 and summary[2]["flagged_by_guess_rule"] == 0


def test_committed_eve_is_what_suricata_7_writes(tmp_path: Path, shared: Path) -> None:
    """scripts/lab/thirdparty.py derive reproduces the committed records (same canonical flows)."""
    import shutil

    require(shutil.which("suricata") is not None, "Suricata 7", "BNN_REQUIRE_SURICATA")
    from script_loader import load_script

    tp = load_script("scripts/lab/thirdparty.py")
    for path in tp.derive(shared, tmp_path):
        new, old = _read(path), _read(REPO / "tests" / "data" / "thirdparty" / "eve" / path.name)
        assert len(new) == len(old) > 0
        # Suricata writes a flow when its flow manager ends it: the order of records may differ per run
        new, old = (b.take(np.lexsort((b["orig_p"], b["resp_h"], b["ts"]))) for b in (new, old))
        for name in ("orig_h", "resp_h", "resp_p", "proto", "service", "orig_pkts", "resp_pkts", "orig_bytes",
                     "resp_bytes", "duration", "orig_flags", "resp_flags"):  # fmt: skip
            np.testing.assert_array_equal(new[name], old[name], err_msg=f"{path.name}: {name}")


def test_odd_values_are_counted_or_not_never_fatal(brute: FlowBatch) -> None:
    """A plugin or a ZMQ shipper may send anything: unhashable or numeric services, ports out of range,
    missing counts. The session mask decides without crashing; a score() call over them works."""
    b = brute.take(np.arange(len(brute)))
    svc = b["service"].copy()
    svc[0], svc[1], svc[2], svc[3] = ["ssh"], 22, "SSH,ftp", "ssl,smb"
    b.cols["service"] = svc
    port = b["resp_p"].copy()
    port[4], port[5] = 70000, -1
    b.cols["resp_p"] = port
    b.cols["orig_pkts"] = b["orig_pkts"].copy()
    b.cols["orig_pkts"][6] = np.nan
    s = login_sessions(b)
    # a list or a number is no service name: the port decides (902: no); "SSH,ftp" and "ssl,smb" name a login
    assert s[:4].tolist() == [False, False, True, True]
    assert not s[6]  # a missing packet count is not "enough packets"
    assert bool(s[4]) and bool(s[5])  # app_proto ssh names the login whatever the port says
    v = make_scorer(MODEL, "onnx").score(b)
    assert len(v) == len(b)
