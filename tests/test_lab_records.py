"""The traffic lab's committed records (tests/data/lab, built by scripts/lab/build.sh).

Real Suricata 7 eve ``flow`` events and real PyPI cicflowmeter 0.5.0 CSV rows of the same
pcaps. Checks: the sidecar readers read every record (no silent loss), the labels file's
independent per-label counts match what the readers yield, and the cicflowmeter dialect
conversion (seconds -> microseconds, duplicated first packet, frame -> payload bytes) makes
the CSV records agree with Suricata's view of the same flows.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import detect_path, read_path

LAB = Path(__file__).parent / "data" / "lab"
CAPTURES: list[dict[str, Any]] = json.loads((LAB / "labels.json").read_text())["captures"]
IDS = [c["capture"] for c in CAPTURES]


def _read(path: Path) -> tuple[FlowBatch, ReadStats]:
    st = ReadStats()
    bs = list(read_path(path, "auto", st))
    return (FlowBatch.concat(bs) if bs else FlowBatch.empty()), st


def _label(a: Any, b: Any, cap: dict[str, Any]) -> str:
    if a in cap["attackers"] or b in cap["attackers"]:
        return str(cap["attack"])
    if (a in cap["benign_clients"] and b == cap["victim"]) or (b in cap["benign_clients"] and a == cap["victim"]):
        return "benign"
    return "other"


def test_lab_covers_the_issue_scenarios() -> None:
    fams = Counter(c["family"] for c in CAPTURES)
    assert set(fams) == {"benign", "scan", "bruteforce", "dos", "ddos"}
    assert {"scan-syn", "scan-connect", "bruteforce-ssh", "bruteforce-ftp", "dos-slowloris", "dos-synflood"} <= set(IDS)
    ddos = next(c for c in CAPTURES if c["family"] == "ddos")
    assert len(ddos["attackers"]) >= 4
    total = sum((LAB / c[k]).stat().st_size for c in CAPTURES for k in ("pcap", "eve", "csv"))
    assert total < 4_000_000  # small committed fixtures


@pytest.mark.parametrize("cap", CAPTURES, ids=IDS)
def test_pcap_is_the_one_labelled(cap: dict[str, Any]) -> None:
    raw = gzip.decompress((LAB / cap["pcap"]).read_bytes())
    assert raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")  # libpcap
    assert hashlib.sha256(raw).hexdigest() == cap["pcap_sha256"]


@pytest.mark.parametrize("cap", CAPTURES, ids=IDS)
@pytest.mark.parametrize("src,fmt", [("eve", "eve"), ("csv", "cic-csv")])
def test_every_record_read_and_labelled(cap: dict[str, Any], src: str, fmt: str) -> None:
    path = LAB / cap[src]
    assert detect_path(path) == fmt
    batch, st = _read(path)
    want: dict[str, int] = cap["counts"][src]
    assert not st.skipped, st.skipped
    assert st.read == st.emitted == len(batch) == sum(want.values())
    got = Counter(_label(a, b, cap) for a, b in zip(batch["orig_h"].tolist(), batch["resp_h"].tolist(), strict=True))
    assert dict(got) == want
    assert got["other"] == 0
    attack = cap["attack"]
    assert got[attack] > 0
    if cap["family"] != "benign":  # an attack capture has only attack records
        assert got[attack] == len(batch)


def _by_pair(b: FlowBatch) -> dict[tuple[Any, ...], int]:
    keys: dict[tuple[Any, ...], int] = {}
    dup: set[tuple[Any, ...]] = set()
    for i in range(len(b)):
        if b["proto"][i] not in ("tcp", "udp"):
            continue
        k = (b["proto"][i], b["orig_h"][i], int(b["orig_p"][i]), b["resp_h"][i], int(b["resp_p"][i]))
        if k in keys:
            dup.add(k)
        keys[k] = i
    return {k: v for k, v in keys.items() if k not in dup}


@pytest.mark.parametrize("cap", CAPTURES, ids=IDS)
def test_cicflowmeter_dialect_agrees_with_suricata(cap: dict[str, Any]) -> None:
    """Same flows, two tools: after the reader's conversion the CSV matches eve."""
    eve, _ = _read(LAB / cap["eve"])
    csv, _ = _read(LAB / cap["csv"])
    ke, kc = _by_pair(eve), _by_pair(csv)
    both = sorted(set(ke) & set(kc))
    assert len(both) >= 0.9 * len(kc) > 0
    ie = np.asarray([ke[k] for k in both])
    ic = np.asarray([kc[k] for k in both])
    # packets: exact (cicflowmeter 0.5 counts the first packet twice; the reader removes it)
    assert np.array_equal(eve["orig_pkts"][ie], csv["orig_pkts"][ic])
    assert np.array_equal(eve["resp_pkts"][ie], csv["resp_pkts"][ic])
    raw_fwd = csv.extra["Tot Fwd Pkts"][ic]
    assert np.array_equal(raw_fwd, csv["orig_pkts"][ic] + 1)
    # duration: seconds in both (the tool writes seconds, the reader keeps them)
    assert np.allclose(eve["duration"][ie], csv["duration"][ic], atol=2e-6)
    # time columns in extra are microseconds, as in CSE-CIC-IDS2018
    dur_us = csv["duration"][ic] * 1e6
    iat_max = csv.extra["Flow IAT Max"][ic]
    assert np.all(iat_max <= dur_us + 1.0)
    long = dur_us > 1000
    if long.any():
        assert np.max(iat_max[long]) > 100.0  # would be < 1 if still in seconds
    # bytes: whole frames -> IP bytes -> payload; equal to eve's estimate up to the
    # duplicated first frame's TCP options (<= 20 bytes)
    for side in ("orig", "resp"):
        assert np.all(np.abs(eve[f"{side}_bytes"][ie] - csv[f"{side}_bytes"][ic]) <= 20)
        assert np.all(np.abs(eve[f"{side}_ip_bytes"][ie] - csv[f"{side}_ip_bytes"][ic]) <= 20)
    # per-direction TCP flags, where the counts prove them (one forward packet, at most one backward):
    # exactly Suricata's tcp_flags_ts / tcp_flags_tc, except where Suricata tracked no TCP state
    # (a packet after the connection ended: flow state "new", flags written as "00" both ways)
    known = csv["orig_flags"][ic] >= 0
    untracked = (eve["orig_flags"][ie] == 0) & (eve["resp_flags"][ie] == 0) & (csv["orig_flags"][ic] > 0)
    assert all(s == "new" for s in eve["flow_state"][ie][untracked])
    cmp = known & ~untracked
    assert np.array_equal(eve["orig_flags"][ie][cmp], csv["orig_flags"][ic][cmp])
    assert np.array_equal(eve["resp_flags"][ie][cmp], csv["resp_flags"][ic][cmp])
    assert np.all((csv["orig_flags"] >= 0) == (csv["resp_flags"] >= 0))
    if cap["capture"] in ("scan-connect", "scan-syn"):
        assert known.mean() > 0.99  # single-SYN probes: the case the derivation is for


def test_pypi_flag_split_only_where_the_counts_prove_it() -> None:
    """``2 * fwd + bwd`` per flag count: one forward packet and at most one backward packet only."""
    from sidecar.flow import ACK, RST, SYN
    from sidecar.sources.cic_csv import _PYPI_FLAG_BITS, _pypi_direction_flags

    # rows: SYN then RST-ACK | SYN, no answer | 2 forward packets | SYN count 3 with one backward packet
    # (SYN-ACK back) | count 1 of a flag with no backward packet (fits no split) | UDP
    counts = {"SYN Flag Cnt": [2, 2, 2, 3, 2, 0], "RST Flag Cnt": [1, 0, 0, 0, 0, 0], "ACK Flag Cnt": [1, 0, 0, 1, 1, 0]}
    extra = {c: np.asarray(counts.get(c, [0] * 6), dtype=np.float64) for c, _ in _PYPI_FLAG_BITS}
    cols = {"orig_pkts": np.array([1, 1, 2, 1, 1, 1.0]), "resp_pkts": np.array([1, 0, 1, 1, 0, 0.0])}
    _pypi_direction_flags(cols, extra, np.array([6, 6, 6, 6, 6, 17.0]))
    assert cols["orig_flags"].tolist() == [SYN, SYN, -1, SYN, -1, -1]
    assert cols["resp_flags"].tolist() == [RST | ACK, 0, -1, SYN | ACK, -1, -1]
