"""EveAlertSink: alert lines shaped like the real Suricata alerts in the Slips eve file."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from conftest import TESTDATA
from test_suricata_config import need_suricata, run_offline, write_include

from sidecar.features.labels import FAMILIES
from sidecar.flow import FlowBatch
from sidecar.sinks.base import Sink
from sidecar.sinks.eve_alert import EveAlertSink, flow_id_for
from sidecar.sources.base import ReadStats
from sidecar.sources.eve import read_path
from sidecar.verdict import STAGE_CASCADE, VerdictBatch

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d{4}$")
TOP_KEYS = ("timestamp", "flow_id", "event_type", "src_ip", "src_port", "dest_ip", "dest_port", "proto")
ALERT_KEYS = ("action", "gid", "signature_id", "rev", "signature", "category", "severity")
ATTACKS = [f for f in FAMILIES if f != "benign"]


@pytest.fixture(scope="module")
def eve(shared: Path) -> Path:
    return shared / "suricata" / "eve" / "slips-test6-malicious.eve.json.gz"


@pytest.fixture(scope="module")
def flows(eve: Path) -> FlowBatch:
    return FlowBatch.concat(list(read_path(eve, ReadStats())))


def _real_alerts(eve: Path) -> list[dict[str, Any]]:
    with gzip.open(eve, "rb") as fh:
        events = [orjson.loads(line) for line in fh if line.strip()]
    return [e for e in events if e.get("event_type") == "alert"]


def _verdicts(flows: FlowBatch) -> VerdictBatch:
    """Test input only: every 3rd flow malicious, families cycling over the attack families."""
    n = len(flows)
    mal = np.arange(n) % 3 == 0
    cls = np.empty(n, dtype=object)
    cls[:] = [ATTACKS[i % len(ATTACKS)] if mal[i] else "benign" for i in range(n)]
    score = np.where(mal, 0.9, 0.1)
    score2 = np.where(mal, 0.8, np.nan)
    stage = np.where(mal, STAGE_CASCADE, 1).astype(np.int8)
    return VerdictBatch(flows, score, score2, mal, cls, stage, "abc123def456")


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_alerts_match_real_suricata_alerts(tmp_path: Path, eve: Path, flows: FlowBatch) -> None:
    real = _real_alerts(eve)
    assert real
    ref = next(a for a in real if a["proto"] == "TCP" and "src_port" in a)
    for a in real:  # the keys we promise are ones real Suricata alerts carry
        if "src_port" in a:
            assert set(TOP_KEYS) <= set(a)
        assert set(ALERT_KEYS) <= set(a["alert"])

    v = _verdicts(flows)
    out = tmp_path / "alerts.json"
    sink = EveAlertSink(out, host="stratosphere.org")
    assert isinstance(sink, Sink)
    # two batches, like the service would write them
    half = len(v) // 2
    sink.write(v.take(np.arange(half)))
    sink.write(v.take(np.arange(half, len(v))))
    sink.flush()
    sink.close()

    got = _lines(out)
    mal_idx = np.flatnonzero(v.malicious)
    assert len(got) == len(mal_idx) == sink.written
    # jq 'select(.event_type=="alert")' equivalent
    assert [e for e in got if e.get("event_type") == "alert"] == got

    uids = flows["uid"][mal_idx].tolist()
    ports = flows["orig_p"][mal_idx].tolist(), flows["resp_p"][mal_idx].tolist()
    protos = flows["proto"][mal_idx].tolist()
    for i, ev in enumerate(got):
        assert TS_RE.match(ev["timestamp"]), ev["timestamp"]
        assert ev["timestamp"].endswith("+0000")
        assert ev["flow_id"] == int(uids[i])
        assert ev["bnn"]["uid"] == uids[i]
        assert ev["host"] == "stratosphere.org"
        keys = [k for k in TOP_KEYS if k in ref]
        if protos[i] in ("icmp", "icmp6") or ports[0][i] < 0 or ports[1][i] < 0:
            keys = [k for k in keys if not k.endswith("_port")]
        else:
            assert ev["src_port"] == ports[0][i] and ev["dest_port"] == ports[1][i]
        for k in keys:
            assert k in ev, k
            assert type(ev[k]) is type(ref[k]), k
        for k in ALERT_KEYS:
            assert type(ev["alert"][k]) is type(ref["alert"][k]), k
        assert ev["proto"] in ("TCP", "UDP", "ICMP", "IPv6-ICMP")
        assert ev["proto"] == {"tcp": "TCP", "udp": "UDP", "icmp": "ICMP", "icmp6": "IPv6-ICMP"}[protos[i]]
        cls = ev["bnn"]["class"]
        assert cls != "benign"
        assert ev["alert"]["signature_id"] == 9_100_000 + FAMILIES.index(cls)
        assert 9_100_000 <= ev["alert"]["signature_id"] <= 9_100_099
        assert ev["alert"]["signature"] == f"BNN-SIDECAR {cls} flow (stage 2)"
        assert 1 <= ev["alert"]["severity"] <= 3
        assert ev["alert"]["action"] == "allowed" and ev["alert"]["gid"] == 1 and ev["alert"]["rev"] == 1
        assert ev["bnn"]["score"] == 0.9 and ev["bnn"]["score2"] == 0.8
        assert ev["bnn"]["model"] == "abc123def456"
    # some real flow ids also appear on the real alerts: same id space
    assert {a["flow_id"] for a in real} & {e["flow_id"] for e in got}


def test_benign_not_written(tmp_path: Path, flows: FlowBatch) -> None:
    v = _verdicts(flows)
    benign = v.take(np.flatnonzero(~v.malicious))
    out = tmp_path / "a.json"
    sink = EveAlertSink(out)
    sink.write(benign)
    sink.close()
    assert out.read_bytes() == b""


def test_reopen_after_rename_writes_new_file(tmp_path: Path, flows: FlowBatch) -> None:
    v = _verdicts(flows)
    first, second = v.take(np.arange(0, 30)), v.take(np.arange(30, 60))
    out = tmp_path / "alerts.json"
    sink = EveAlertSink(out)
    sink.write(first)
    sink.flush()
    rotated = tmp_path / "alerts.json.1"
    out.rename(rotated)
    sink.reopen()
    sink.write(second)
    sink.close()
    old, new = _lines(rotated), _lines(out)
    assert len(old) == int(first.malicious.sum()) > 0
    assert len(new) == int(second.malicious.sum()) > 0
    assert {e["flow_id"] for e in new} == {int(u) for u in second.flows["uid"][second.malicious]}


def test_non_suricata_uid_missing_ts_and_ports(tmp_path: Path) -> None:
    flows = FlowBatch.from_columns(
        {
            "ts": [None, 1622987821.5],
            "uid": ["CHhAvVGS1DHFjwGM9", "Cabc"],
            "orig_h": ["10.0.0.1", "fe80::1"],
            "orig_p": [None, 128],
            "resp_h": ["10.0.0.2", "fe80::2"],
            "resp_p": [None, 0],
            "proto": ["udp", "icmp6"],
        },
        "zeek-json",
    )
    v = VerdictBatch(
        flows,
        np.array([0.7, 0.95]),
        np.array([np.nan, 0.5]),
        np.array([True, True]),
        np.array(["scan", "weird"], dtype=object),
        np.array([1, 2], dtype=np.int8),
        "m",
    )
    out = tmp_path / "z.json"
    sink = EveAlertSink(out, sid_base=9_100_000)
    sink.write(v)
    sink.close()
    a, b = _lines(out)
    assert "src_port" not in a and "dest_port" not in a
    assert TS_RE.match(a["timestamp"])
    assert a["flow_id"] == flow_id_for("CHhAvVGS1DHFjwGM9") < 2**51
    assert a["bnn"]["uid"] == "CHhAvVGS1DHFjwGM9" and a["bnn"]["score2"] is None
    assert a["alert"]["category"] == "Detection of a Network Scan"
    assert b["timestamp"] == "2021-06-06T13:57:01.500000+0000"
    assert b["proto"] == "IPv6-ICMP" and b["icmp_type"] == 128 and b["icmp_code"] == 0
    assert b["alert"]["signature_id"] == 9_100_099
    assert flow_id_for("Cabc") == flow_id_for("Cabc") != flow_id_for("Cabd")


# -- against alerts a real Suricata 7 writes -------------------------------------------

#: keys Suricata adds for the packet that fired (not applicable to a flow verdict)
PACKET_KEYS = {"pcap_cnt", "pkt_src", "tx_id", "vlan", "ether", "http", "dns", "tls", "ssh", "in_iface"}


@pytest.mark.suricata
def test_alerts_match_suricata7_alerts_key_sets_types_order(tmp_path: Path, shared: Path) -> None:
    need_suricata()
    pcaps = tmp_path / "pcaps"
    pcaps.mkdir()
    for p in sorted((shared / "suricata" / "pcap").glob("*.pcap")):
        shutil.copyfile(p, pcaps / p.name)
    inc = write_include(tmp_path / "inc.yaml")
    run_offline(pcaps, tmp_path, inc, rules=TESTDATA / "suricata" / "alert-test.rules")
    eve = tmp_path / "eve.json"
    events = _lines(eve)
    real = [e for e in events if e["event_type"] == "alert"]
    assert len(real) >= 20
    by_flow: dict[int, dict[str, Any]] = {}
    for a in real:
        by_flow.setdefault(a["flow_id"], a)
    flows = FlowBatch.concat(list(read_path(eve, ReadStats())))
    idx = np.flatnonzero(np.isin(np.array([int(u) for u in flows["uid"]]), list(by_flow)))
    assert len(idx) == len(by_flow)
    v = _verdicts(flows.take(idx))
    v.malicious[:] = True
    v.cls[:] = ["scan"] * len(idx)
    out = tmp_path / "ours.json"
    sink = EveAlertSink(out)
    sink.write(v)
    sink.close()
    ours = _lines(out)
    assert len(ours) == len(by_flow)
    protos = set()
    for ev in ours:
        ref = by_flow[ev["flow_id"]]
        protos.add(ref["proto"])
        assert TS_RE.match(ref["timestamp"]) and TS_RE.match(ev["timestamp"])
        mine = set(ev) - {"bnn", "host"}
        theirs = set(ref) - PACKET_KEYS
        assert mine - {"app_proto"} == theirs - {"app_proto"}, (sorted(mine), sorted(theirs))
        common = [k for k in ref if k in ev]
        assert [k for k in ev if k in ref] == common  # same relative key order
        for k in common:
            assert type(ev[k]) is type(ref[k]), k
        assert list(ev["alert"]) == list(ref["alert"])
        assert all(type(ev["alert"][k]) is type(ref["alert"][k]) for k in ref["alert"])
        assert list(ev["flow"]) == list(ref["flow"])
        assert all(type(ev["flow"][k]) is type(ref["flow"][k]) for k in ref["flow"])
        assert ev["flow"]["start"] == ref["flow"]["start"]
        assert (ev["src_ip"], ev["dest_ip"], ev["proto"]) == (ref["src_ip"], ref["dest_ip"], ref["proto"])
        assert ev["direction"] == ref["direction"] == "to_server"
    assert {"TCP", "UDP", "ICMP"} <= protos
    print(f"\ncompared {len(ours)} alerts with {len(real)} real Suricata 7 alerts; protos {sorted(protos)}")
