"""Feature schema: one extraction for every source, on real data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from conftest import SHARED

from sidecar.features.schema import (
    FEATURE_SCHEMA_VERSION,
    FEATURES,
    extract,
    schema_markdown,
)
from sidecar.flow import ACK, PSH, RST, SYN, FlowBatch
from sidecar.sources import cic_csv, eve, zeek_json, zeek_tsv
from sidecar.sources.base import ReadStats

IDX = {f.name: j for j, f in enumerate(FEATURES)}

Reader = Callable[[Path, ReadStats], Iterator[FlowBatch]]

REAL: dict[str, tuple[Reader, Path]] = {
    "zeek_tsv": (zeek_tsv.read_path, SHARED / "zeek/slips/test10-mixed.conn.log"),
    "zeek_json": (zeek_json.read_path, SHARED / "zeek/slips/test9-mixed.conn.json.log"),
    "eve": (eve.read_path, SHARED / "suricata/eve/slips-test6-malicious.eve.json.gz"),
    "cic_csv": (cic_csv.read_path, SHARED / "cic-ids2018/SQL Injection.csv.gz"),
}


def _load(kind: str) -> FlowBatch:
    reader, path = REAL[kind]
    if not path.exists():
        pytest.skip(f"{path} not available")
    batches = list(reader(path, ReadStats()))
    assert batches, f"no records from {path}"
    return FlowBatch.concat(batches)


@pytest.mark.parametrize("kind", sorted(REAL))
def test_extract_real_data(kind: str) -> None:
    batch = _load(kind)
    x = extract(batch)
    assert x.dtype == np.float32
    assert x.shape == (len(batch), len(FEATURES))
    assert not np.isinf(x).any()
    # some features must be present for real flows
    assert np.isfinite(x[:, IDX["log_orig_pkts"]]).all()
    # flag features: known for every TCP row of each source (CIC via extra flag counts)
    tcp = batch["proto"] == "tcp"
    if kind != "zeek_json" and tcp.any():
        assert np.isfinite(x[tcp, IDX["flag_syn"]]).any()
    if kind == "cic_csv":
        assert (batch["orig_flags"] == -1).all()
        assert np.isfinite(x[:, IDX["flag_ack"]]).all()


def test_zeek_unset_duration_is_zero_when_packets_counted() -> None:
    # Zeek's conn.log writes duration/orig_bytes/resp_bytes only when duration > 0 (conn/main.zeek,
    # set_conn); an unset duration with packet counts is an instant flow, duration 0 - not missing
    batch = _load("zeek_tsv")
    unset = np.isnan(batch["duration"])
    assert unset.any(), "test file should contain '-' durations"
    assert np.isfinite(batch["orig_pkts"][unset]).all()
    x = extract(batch)
    assert (x[unset, IDX["log_duration"]] == 0.0).all()
    assert np.isfinite(x[unset, IDX["log_pkts_per_s"]]).all()
    # one-datagram UDP: payload from IP bytes minus the IP header (20, or 40 for IPv6) and 8 (UDP)
    udp1 = unset & (batch["proto"] == "udp") & (batch["orig_pkts"] == 1)
    v6 = np.array([":" in a for a in batch["orig_h"]])
    assert (udp1 & v6).any() and (udp1 & ~v6).any()  # the file has both families
    want = np.log1p(batch["orig_ip_bytes"][udp1] - np.where(v6[udp1], 40.0, 20.0) - 8.0)
    np.testing.assert_allclose(x[udp1, IDX["log_orig_bytes"]], want, rtol=1e-6)


def test_zeek_rule_only_for_zeek_and_only_with_counts() -> None:
    cols = {"proto": ["tcp", "tcp"], "orig_pkts": [1.0, np.nan], "resp_pkts": [0.0, np.nan],
            "orig_ip_bytes": [60.0, 60.0], "resp_ip_bytes": [0.0, 0.0], "orig_flags": [2, 2], "resp_flags": [-1, -1]}
    z = extract(FlowBatch.from_columns(cols, "zeek-tsv", n=2))
    assert z[0, IDX["log_duration"]] == 0.0
    assert z[0, IDX["log_orig_bytes"]] == 0.0  # a SYN without ACK carries no payload (not 60-40=20)
    assert np.isnan(z[1, IDX["log_duration"]])  # no packet counts: still missing
    other = extract(FlowBatch.from_columns(cols, "eve", n=2))
    assert np.isnan(other[:, IDX["log_duration"]]).all()  # other sources: missing stays NaN


def test_missing_inputs_give_nan() -> None:
    b = FlowBatch.from_columns({"orig_pkts": [3.0]}, "test", n=1)
    x = extract(b)[0]
    assert x[IDX["log_orig_pkts"]] == pytest.approx(np.log1p(3.0))
    for name in (
        "log_duration",
        "no_response",
        "proto_tcp",
        "log_resp_port",
        "flag_syn",
        "resp_bytes_per_pkt",
    ):
        assert np.isnan(x[IDX[name]]), name


def test_zero_duration_uses_floor() -> None:
    b = FlowBatch.from_columns({"orig_pkts": [1.0], "resp_pkts": [0.0], "duration": [0.0]}, "test", n=1)
    x = extract(b)[0]
    assert x[IDX["log_pkts_per_s"]] == pytest.approx(np.log1p(1.0 / 1e-6), rel=1e-5)
    assert x[IDX["no_response"]] == 1.0
    assert np.isnan(x[IDX["resp_bytes_per_pkt"]])


def test_same_flow_zeek_vs_eve() -> None:
    op, rp, opay, rpay, dur = 10, 8, 500, 3000, 1.5
    hist = "ShADadFf"
    of, rf = zeek_tsv.flags_from_history(hist, "tcp")
    zeek = FlowBatch.from_columns(
        {
            "ts": [1600000000.0],
            "orig_h": ["10.0.0.1"],
            "orig_p": [40000],
            "resp_h": ["10.0.0.2"],
            "resp_p": [80],
            "proto": ["tcp"],
            "duration": [dur],
            "orig_pkts": [float(op)],
            "resp_pkts": [float(rp)],
            "orig_bytes": [float(opay)],
            "resp_bytes": [float(rpay)],
            "orig_ip_bytes": [float(opay + 40 * op)],
            "resp_ip_bytes": [float(rpay + 40 * rp)],
            "history": [hist],
            "orig_flags": [of],
            "resp_flags": [rf],
        },
        "zeek-tsv",
        n=1,
    )
    # eve counts whole Ethernet frames: payload + 14 (eth) + 20 (ip) + 20 (tcp) per packet
    ev = {
        "timestamp": "2020-09-13T12:26:41.500000+0000",
        "event_type": "flow",
        "flow_id": 1,
        "src_ip": "192.168.1.9",
        "src_port": 51000,
        "dest_ip": "192.168.1.10",
        "dest_port": 80,
        "proto": "TCP",
        "app_proto": "http",
        "flow": {
            "pkts_toserver": op,
            "pkts_toclient": rp,
            "bytes_toserver": opay + 54 * op,
            "bytes_toclient": rpay + 54 * rp,
            "start": "2020-09-13T12:26:40.000000+0000",
            "end": "2020-09-13T12:26:41.500000+0000",
            "state": "closed",
            "reason": "timeout",
        },
        "tcp": {"tcp_flags": "1b", "tcp_flags_ts": "1b", "tcp_flags_tc": "1b", "syn": True, "fin": True},
    }
    eb = FlowBatch.concat(list(eve.read_lines([orjson.dumps(ev)], ReadStats())))
    assert len(eb) == 1
    xz, xe = extract(zeek), extract(eb)
    assert not np.isnan(xz).any()
    np.testing.assert_allclose(xe, xz, rtol=1e-5, atol=1e-5)
    # with the usual 12-byte TCP timestamp option the eve payload estimate is off
    # by <= 12 bytes/packet; the log-scaled byte features stay close
    ev["flow"]["bytes_toserver"] += 12 * op  # type: ignore[index]
    ev["flow"]["bytes_toclient"] += 12 * rp  # type: ignore[index]
    xo = extract(FlowBatch.concat(list(eve.read_lines([orjson.dumps(ev)], ReadStats()))))
    for name in ("log_orig_bytes", "log_resp_bytes"):
        assert abs(xo[0, IDX[name]] - xz[0, IDX[name]]) < 0.25, name


def test_no_identity_or_time_features() -> None:
    batch = _load("zeek_tsv")
    x = extract(batch)
    n = len(batch)
    cols = dict(batch.cols)
    cols["ts"] = batch["ts"] + 12345.0
    cols["orig_p"] = np.full(n, 1234, dtype=np.int32)
    cols["uid"] = np.full(n, "Cxyz", dtype=object)
    # other addresses of the same family (the family sets the IP header size of payload estimates)
    for k, v4, v6 in (("orig_h", "203.0.113.7", "2001:db8::7"), ("resp_h", "198.51.100.9", "2001:db8::9")):
        a = np.empty(n, dtype=object)
        a[:] = [v6 if ":" in h else v4 for h in batch[k]]
        assert a.tolist() != batch[k].tolist()
        cols[k] = a
    mutated = FlowBatch(cols, batch.source, batch.label, dict(batch.extra), batch.origin)
    np.testing.assert_array_equal(extract(mutated), x)


def test_schema_markdown_lists_every_feature() -> None:
    md = schema_markdown()
    assert FEATURE_SCHEMA_VERSION == "1"
    assert len({f.name for f in FEATURES}) == len(FEATURES)
    for f in FEATURES:
        assert f"`{f.name}`" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| #")]
    assert len(rows) == len(FEATURES)
    assert all(ln.count(" | ") == 7 for ln in rows)


def _one(proto: str | None, of: int, rf: int, ob: float, rb: float, op: float = 1.0, rp: float = 1.0) -> np.ndarray:
    return extract(
        FlowBatch.from_columns(
            {"proto": [proto], "orig_flags": [of], "resp_flags": [rf], "orig_bytes": [ob], "resp_bytes": [rb],
             "orig_pkts": [op], "resp_pkts": [rp], "duration": [0.001], "resp_p": [80]},
            "test",
            n=1,
        )
    )[0]


def test_syn_without_ack_direction_has_no_payload() -> None:
    # eve/PyPI-CSV estimate for a SYN -> RST/ACK probe: the SYN's 20 option bytes look like payload
    x = _one("tcp", SYN, RST | ACK, 20.0, 0.0)
    assert x[IDX["log_orig_bytes"]] == 0.0
    assert x[IDX["orig_bytes_per_pkt"]] == 0.0
    # the same estimate with the handshake completed (ACK seen) is kept
    y = _one("tcp", SYN | ACK | PSH, SYN | ACK, 20.0, 0.0)
    assert y[IDX["log_orig_bytes"]] == pytest.approx(np.log1p(20.0))
    # SYN-only on the responder side (e.g. simultaneous open) too; missing bytes stay missing
    z = _one("tcp", SYN, SYN, np.nan, 7.0)
    assert np.isnan(z[IDX["log_orig_bytes"]])
    assert z[IDX["log_resp_bytes"]] == 0.0
    # unknown flags (CIC rows): payload as reported
    w = _one("tcp", -1, -1, 20.0, 5.0)
    assert w[IDX["log_orig_bytes"]] == pytest.approx(np.log1p(20.0))
    # not TCP: untouched
    u = _one("udp", -1, -1, 20.0, 5.0)
    assert u[IDX["log_orig_bytes"]] == pytest.approx(np.log1p(20.0))


def test_flags_are_zero_for_known_non_tcp_and_nan_when_unknown() -> None:
    for proto in ("udp", "icmp", "icmp6", "47"):
        x = _one(proto, -1, -1, 10.0, 10.0)
        for f in ("flag_syn", "flag_fin", "flag_rst", "flag_psh", "flag_ack"):
            assert x[IDX[f]] == 0.0, (proto, f)
    tcp = _one("tcp", -1, -1, 10.0, 10.0)
    none = _one(None, -1, -1, 10.0, 10.0)
    assert np.isnan(tcp[IDX["flag_syn"]]) and np.isnan(none[IDX["flag_syn"]])
