"""Suricata eve and CICFlowMeter CSV readers, on the real files under shared/data."""

from __future__ import annotations

import csv
import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest

from sidecar.flow import ACK, FIN, PSH, RST, SYN, FlowBatch
from sidecar.sources import cic_csv, eve
from sidecar.sources.base import ReadStats


def _eve(path: Path) -> tuple[FlowBatch, ReadStats]:
    st = ReadStats()
    return FlowBatch.concat(list(eve.read_path(path, st))), st


def _cic(path: Path) -> tuple[FlowBatch, ReadStats]:
    st = ReadStats()
    return FlowBatch.concat(list(cic_csv.read_path(path, st))), st


def _one_line(path: Path) -> bytes:
    return orjson.dumps(orjson.loads(path.read_bytes()))


# ---------------------------------------------------------------- eve


def test_eve_slips(shared: Path) -> None:
    b, st = _eve(shared / "suricata/eve/slips-test6-malicious.eve.json.gz")
    assert len(b) == 3512 and st.emitted == 3512 and not st.skipped
    assert st.ignored == Counter(
        {
            "event:alert": 745,
            "event:dns": 680,
            "event:http": 56,
            "event:fileinfo": 3,
            "event:anomaly": 3,
            "event:tls": 1,
        }
    )
    assert b.source == "eve"
    assert Counter(b["flow_state"].tolist()) == {"closed": 1980, "new": 995, "established": 537}
    assert Counter(b["flow_reason"].tolist()) == {"shutdown": 3339, "timeout": 173}
    ports = Counter(b["resp_p"].tolist())
    assert ports[1900] == 447 and ports[80] == 374 and ports[445] == 269 and ports[23] == 89
    assert np.all(b["duration"] >= 0)
    # one day, 2021-06-06 15:57 +0200 .. 2021-06-07 15:56 +0200
    assert b["ts"].min() >= 1622987820 - 60 and b["ts"].max() <= 1623074160 + 60
    udp = b["proto"] == "udp"
    assert np.all(b["orig_flags"][udp] == -1)
    assert np.all(b["orig_ip_bytes"] >= 20 * b["orig_pkts"])
    assert np.all(b["orig_bytes"] >= 0)


def test_eve_magnc(shared: Path) -> None:
    b, st = _eve(shared / "suricata/eve/magnc-honeypot-ssh.eve.json")
    assert len(b) == 215 and not st.skipped
    assert st.ignored == Counter({"event:ssh": 13, "event:tls": 12, "event:stats": 13})
    protos = Counter(b["proto"].tolist())
    assert protos["icmp6"] == 8
    # app_proto "failed" -> None
    assert "failed" not in set(b["service"].tolist())
    new_syn = (b["flow_state"] == "new") & (b["orig_flags"] == SYN)
    assert new_syn.sum() > 0
    icmp = b["proto"] == "icmp6"
    assert np.all(b["orig_p"][icmp] >= 0)  # icmp_type


def test_eve_doc_flow_example(shared: Path) -> None:
    st = ReadStats()
    line = _one_line(shared / "suricata/docs-examples/flow-event.json")
    (b,) = list(eve.read_lines([line], st))
    r = next(b.iter_rows())
    assert r["uid"] == "1676750115612680"
    assert r["proto"] == "tcp" and r["service"] == "http"
    assert (r["orig_h"], r["orig_p"], r["resp_h"], r["resp_p"]) == (
        "192.168.100.237",
        49175,
        "142.11.240.191",
        35361,
    )
    assert r["orig_flags"] == 0x1E == SYN | RST | PSH | ACK
    assert r["resp_flags"] == 0x1A and not r["resp_flags"] & FIN
    assert r["duration"] == pytest.approx(40.427537, abs=1e-5)
    assert r["ts"] == pytest.approx(1695017613.324862, abs=1e-5)
    assert r["orig_pkts"] == 3869 and r["resp_pkts"] == 1523
    assert r["orig_ip_bytes"] == 3536402 - 14 * 3869
    assert r["orig_bytes"] == 3536402 - 14 * 3869 - 40 * 3869
    assert (r["flow_state"], r["flow_reason"]) == ("closed", "shutdown")


def test_eve_bypassed_and_netflow_examples(shared: Path) -> None:
    ex = shared / "suricata/docs-examples"
    obj = orjson.loads((ex / "flow-object-bypassed.json").read_bytes())
    obj.update(
        event_type="flow",
        flow_id=7,
        src_ip="10.0.0.1",
        src_port=1234,
        dest_ip="10.0.0.2",
        dest_port=22,
        proto="TCP",
    )
    nf = orjson.loads((ex / "netflow-object.json").read_bytes())
    nf.update(event_type="netflow", src_ip="10.0.0.1", dest_ip="10.0.0.2", proto="UDP")
    st = ReadStats()
    (b,) = list(eve.read_lines([orjson.dumps(obj), orjson.dumps(nf)], st))
    assert len(b) == 1 and st.ignored == Counter({"event:netflow": 1})
    r = next(b.iter_rows())
    assert r["flow_state"] == "bypassed" and r["orig_flags"] is None
    assert r["ts"] == pytest.approx(1559079149.025256, abs=1e-5)  # +0200 honoured
    assert r["duration"] == pytest.approx(179.046025, abs=1e-5)


def test_eve_icmp_and_garbage() -> None:
    good = {
        "event_type": "flow",
        "flow_id": 1,
        "src_ip": "1.2.3.4",
        "dest_ip": "5.6.7.8",
        "proto": "ICMP",
        "icmp_type": 8,
        "icmp_code": 0,
        "app_proto": "failed",
        "flow": {
            "pkts_toserver": 2,
            "pkts_toclient": 0,
            "bytes_toserver": 196,
            "bytes_toclient": 0,
            "start": "2021-06-06T15:57:01.000000+0000",
            "end": "2021-06-06T15:57:02.500000+0000",
            "state": "new",
            "reason": "timeout",
        },
    }
    no_flow = {k: v for k, v in good.items() if k != "flow"}
    bad_type = dict(good, flow=dict(good["flow"], pkts_toserver="2"))  # type: ignore[arg-type]
    lines = [
        orjson.dumps(good),
        b"not json",
        orjson.dumps(no_flow),
        orjson.dumps(bad_type),
        orjson.dumps(good)[:40],
        b"[1,2]",
        b"",
        b"\xff\xfe",
        orjson.dumps(good),
    ]
    st = ReadStats()
    (b,) = list(eve.read_lines(lines, st, where="x"))
    assert len(b) == 2 and st.emitted == 2
    assert sum(st.skipped.values()) == 6 and st.read == 8
    r = next(b.iter_rows())
    assert (r["proto"], r["orig_p"], r["resp_p"], r["service"]) == ("icmp", 8, 0, None)
    assert r["ts"] == 1622995021.0 and r["duration"] == 1.5
    assert r["orig_ip_bytes"] == 196 - 28 and r["orig_bytes"] == 196 - 28 - 56
    assert b.origin is not None and b.origin[0] == "x:1"


def test_eve_truncated_gzip(tmp_path: Path, shared: Path) -> None:
    raw = gzip.decompress((shared / "suricata/eve/slips-test6-malicious.eve.json.gz").read_bytes())
    cut = raw[: len(raw) // 2]
    p = tmp_path / "cut.json"
    p.write_bytes(cut)
    b, st = _eve(p)
    assert len(b) > 100
    assert sum(st.skipped.values()) <= 1  # at most the truncated last line


# ---------------------------------------------------------------- CIC CSV

CIC18 = "cic-ids2018"
CIC_FILES = {
    f"{CIC18}/Brute Force -Web.csv.gz": 2073,
    f"{CIC18}/Brute Force -XSS.csv.gz": 734,
    f"{CIC18}/DDOS attack-LOIC-UDP.csv.gz": 5784,
    f"{CIC18}/SQL Injection.csv.gz": 286,
    f"{CIC18}/variants/improved-2022/toy_dataset.csv.gz": 5000,
    f"{CIC18}/secondary-cic-ids2017/web_attacks_balanced.csv.gz": 7267,
    f"{CIC18}/secondary-cic-ids2017/CICIDS2017_sample.csv.gz": 6311,
    "cic-ids2017-improved/Botnet_736.csv.gz": 736,
    "cic-ids2017-improved/Heartbleed_11.csv.gz": 11,
}


@pytest.mark.parametrize("rel,rows", sorted(CIC_FILES.items()))
def test_cic_row_accounting(shared: Path, rel: str, rows: int) -> None:
    b, st = _cic(shared / rel)
    assert st.read == rows
    assert len(b) + sum(st.skipped.values()) == rows
    assert b.source == "cic-csv" and b.label is not None
    assert "Tot Fwd Pkts" in b.extra and "Flow Duration" not in b.extra
    assert "FIN Flag Cnt" in b.extra and "Flow Byts/s" in b.extra
    assert np.all(b["orig_flags"] == -1) and np.all(np.isnan(b["orig_ip_bytes"]))
    assert set(st.skipped) <= {"inf-nan", "bad-number", "bad-columns", "repeated-header"}


def test_cic_labels_and_duration(shared: Path) -> None:
    p = shared / CIC18 / "Brute Force -Web.csv.gz"
    b, _ = _cic(p)
    assert b.label is not None
    assert Counter(b.label.tolist()) == {"Benign": 1462, "Brute Force -Web": 611}
    with gzip.open(p, "rt", newline="") as fh:
        rows = list(csv.reader(fh))
    hdr = rows[0]
    raw = rows[1]
    assert b["duration"][0] == pytest.approx(float(raw[hdr.index("Flow Duration")]) / 1e6)
    assert b["resp_p"][0] == int(raw[hdr.index("Dst Port")])
    assert b["orig_pkts"][0] == float(raw[hdr.index("Tot Fwd Pkts")])
    assert b["orig_bytes"][0] == float(raw[hdr.index("TotLen Fwd Pkts")])
    assert np.all(np.isnan(b["ts"]))  # no Timestamp column in this file
    assert set(b["proto"].tolist()) <= {"tcp", "udp", "0"}
    assert np.all(b["orig_p"] == -1) and all(h is None for h in b["orig_h"].tolist())


def test_cic_improved_dialect(shared: Path) -> None:
    b, _st = _cic(shared / CIC18 / "variants/improved-2022/toy_dataset.csv.gz")
    assert b.label is not None
    lab = Counter(b.label.tolist())
    assert lab["BENIGN"] == 2500 and lab["DoS Hulk"] == 1275 and lab["DDoS-HOIC"] == 765
    assert np.all(b.extra["Attempted Category"] == -1)
    assert "CWE Flag Count" in b.extra and "Fwd RST Flags" in b.extra
    assert not np.isnan(b["ts"]).any()
    assert all(u.count("-") >= 4 for u in b["uid"].tolist())


def test_cic_2017_improved_labels(shared: Path) -> None:
    b, _ = _cic(shared / "cic-ids2017-improved/Heartbleed_11.csv.gz")
    assert b.label is not None and set(b.label.tolist()) == {"Heartbleed"}
    assert set(b["resp_p"].tolist()) == {444}


def test_cic_dialects_and_cleanup(tmp_path: Path) -> None:
    # CIC-IDS2017 style with leading spaces, AM/PM timestamps, Infinity, repeated header, bad rows
    hdr = (
        "Flow ID, Source IP, Source Port, Destination IP, Destination Port, Protocol, Timestamp, Flow Duration,"
        " Total Fwd Packets, Total Backward Packets,Total Length of Fwd Packets, Total Length of Bwd Packets,"
        "Flow Bytes/s, FIN Flag Count, Label"
    )
    rows = [
        hdr,
        "a,1.1.1.1,1000,2.2.2.2,80,6,3/7/2017 8:55:58 AM,2000000,3,2,10,20,15,1,BENIGN",
        "b,1.1.1.1,1001,2.2.2.2,80,6,3/7/2017 1:00:00 PM,5,1,0,0,0,Infinity,0,BENIGN",
        hdr,
        "c,1.1.1.1,1002,2.2.2.2,53,17,2017-07-03 08:55:58,1,1,1,1,1,NaN,0,DDoS",
        "d,1.1.1.1,1003,2.2.2.2,53,17",
        "e,1.1.1.1,1004,2.2.2.2,53,1,15/02/2018 08:25:18,xx,1,1,1,1,1,0,DDoS",
        "f,1.1.1.1,1005,2.2.2.2,0,0,15/02/2018 08:25:18,7,1,0,5,0,1,0, Bot ",
    ]
    p = tmp_path / "x.csv"
    p.write_text("\n".join(rows) + "\n")
    b, st = _cic(p)
    assert st.read == 7 and len(b) == 2
    assert st.skipped == Counter({"inf-nan": 2, "repeated-header": 1, "bad-columns": 1, "bad-number": 1})
    assert b.label is not None and b.label.tolist() == ["BENIGN", "Bot"]
    assert b["ts"][0] == 1499072158.0  # 2017-07-03 08:55:58 UTC (dd/mm, AM)
    assert b["ts"][1] == 1518683118.0
    assert b["duration"][0] == 2.0 and b["proto"].tolist() == ["tcp", "0"]
    assert b["orig_p"][0] == 1000 and b["uid"][0] == "a"
    assert b.extra["FIN Flag Cnt"].tolist() == [1.0, 0.0]
    # PyPI cicflowmeter snake_case: flow_duration already in seconds
    snake = (
        "src_ip,dst_ip,src_port,dst_port,protocol,timestamp,flow_duration,tot_fwd_pkts,tot_bwd_pkts,"
        "totlen_fwd_pkts,totlen_bwd_pkts,flow_byts_s,fin_flag_cnt,cwr_flag_count\n"
        "1.1.1.1,2.2.2.2,5555,443,6,2020-01-01 00:00:00,1.5,4,3,100,200,200.0,1,0\n"
    )
    q = tmp_path / "s.csv.gz"
    q.write_bytes(gzip.compress(snake.encode()))
    b2, st2 = _cic(q)
    assert len(b2) == 1 and not st2.skipped and b2.label is None
    assert b2["duration"][0] == 1.5 and b2["resp_p"][0] == 443 and b2["orig_bytes"][0] == 100
    assert b2["ts"][0] == 1577836800.0 and b2["uid"][0] == "s.csv.gz:2"
    assert set(b2.extra) >= {"Flow Byts/s", "FIN Flag Cnt", "CWE Flag Count"}


def test_cic_garbage_not_raised(tmp_path: Path) -> None:
    p = tmp_path / "g.csv"
    p.write_bytes(b'Dst Port,Protocol,Flow Duration,Label\n80,6,1,a\n\x00\xff garbage\n"unterminated,1\n')
    b, st = _cic(p)
    assert len(b) == 1 and sum(st.skipped.values()) >= 1
    empty = tmp_path / "e.csv"
    empty.write_bytes(b"")
    assert list(cic_csv.read_path(empty, ReadStats())) == []
