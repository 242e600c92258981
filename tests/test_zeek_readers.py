"""Zeek conn.log readers (TSV and JSON) on real files from shared/data/zeek*."""

from __future__ import annotations

import gzip
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sidecar.flow import ACK, FIELDS, RST, SYN, FlowBatch
from sidecar.sources import zeek_json, zeek_tsv
from sidecar.sources.base import ReadStats


def _tsv(path: Path) -> tuple[FlowBatch, ReadStats]:
    st = ReadStats()
    b = FlowBatch.concat(list(zeek_tsv.read_path(path, st, batch_size=7)))
    return b, st


def _json(path: Path) -> tuple[FlowBatch, ReadStats]:
    st = ReadStats()
    b = FlowBatch.concat(list(zeek_json.read_path(path, st, batch_size=7)))
    return b, st


def _data_rows(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return sum(1 for ln in f if ln.strip() and not ln.lstrip().startswith(b"#"))


def _conn_logs(shared: Path) -> list[Path]:
    z = shared / "zeek"
    out = sorted((z / "version-series").glob("*.log"))
    out += sorted((z / "btest-3.2.4").glob("*.conn.log"))
    out += sorted((z / "btest-9.1-dev").glob("*.conn.log"))
    return out


def test_all_btest_and_version_conn_logs(shared: Path) -> None:
    files = _conn_logs(shared)
    assert len(files) >= 8 + 16 + 20
    for p in files:
        b, st = _tsv(p)
        n = _data_rows(p)
        assert n > 0
        assert len(b) == n == st.read == st.emitted, p
        assert not st.skipped, p
        assert b.source == "zeek-tsv"
        for f in FIELDS:
            assert b[f.name].dtype == f.dtype
        assert all(isinstance(h, str) for h in b["orig_h"].tolist())
        assert (b["orig_p"] >= 0).all() and (b["resp_p"] >= 0).all()


def test_version_series_same_records(shared: Path) -> None:
    files = sorted((shared / "zeek" / "version-series").glob("*.log"))
    assert len(files) == 8
    ref = None
    for p in files:
        b, _ = _tsv(p)
        key = sorted(zip(b["resp_p"].tolist(), b["conn_state"].tolist(), b["history"].tolist(), strict=True))
        if ref is None:
            ref = key
        assert key == ref, p
    real, _ = _tsv(shared / "zeek" / "version-series" / "ssh-basic.conn.v2.6.4.log")
    assert np.isfinite(real["ts"]).all() and real["ts"].min() > 1.3e9
    masked, _ = _tsv(shared / "zeek" / "version-series" / "ssh-basic.conn.v9.1.0-dev.log")
    assert np.isnan(masked["ts"]).all()  # XXXXXXXXXX.XXXXXX -> missing, not 0


def test_scope_sep_names(shared: Path) -> None:
    b, st = _tsv(shared / "zeek" / "btest-3.2.4" / "scripts.base.frameworks.logging.scope_sep.conn.log")
    assert len(b) == 34 and not st.skipped
    assert all(h is not None for h in b["orig_h"].tolist())
    assert (b["resp_p"] >= 0).all()


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("horizontal-portscan.conn.log", 41),
        ("test10-mixed.conn.log", 141),
        ("ctu-sme-11.conn.log.labeled", 766),
    ],
)
def test_slips_tsv_counts(shared: Path, name: str, rows: int) -> None:
    b, st = _tsv(shared / "zeek" / "slips" / name)
    assert len(b) == rows == st.emitted == st.read
    assert not st.skipped
    assert st.ignored["header"] >= 7


def test_horizontal_portscan_details(shared: Path) -> None:
    b, _ = _tsv(shared / "zeek" / "slips" / "horizontal-portscan.conn.log")
    assert Counter(b["conn_state"].tolist()) == {"SF": 26, "S0": 11, "RSTR": 3, "RSTO": 1}
    s0 = b["conn_state"] == "S0"
    # '-' duration / bytes are missing (NaN), never 0
    assert np.isnan(b["duration"][s0]).all()
    assert np.isnan(b["orig_bytes"][s0]).all()
    assert (b["orig_pkts"][s0] >= 1).all()
    assert b.label is None
    hist_s = (b["history"] == "S") & (b["proto"] == "tcp")
    assert hist_s.any()
    assert (b["orig_flags"][hist_s] == SYN).all() and (b["resp_flags"][hist_s] == 0).all()
    assert 928 < np.nanmin(b["ts"]) < np.nanmax(b["ts"]) < 1000


def test_ctu_sme_11_labels(shared: Path) -> None:
    b, _ = _tsv(shared / "zeek" / "slips" / "ctu-sme-11.conn.log.labeled")
    assert b.label is not None
    labels = Counter(b.label.tolist())
    assert labels["Malicious/From_malicious-To_malicious-Malware_data_exfiltration-RemcosRAT"] == 719
    assert sum(labels.values()) == 766
    assert Counter(b["conn_state"].tolist())["REJ"] == 718
    rej = (b["conn_state"] == "REJ") & (b["history"] == "Sr")
    assert (b["orig_flags"][rej] == SYN).all() and (b["resp_flags"][rej] == RST).all()


def test_zeek_labeled_iot23_gz(shared: Path) -> None:
    p = shared / "zeek-labeled" / "iot-23" / "CTU-IoT-Malware-Capture-42-1" / "conn.log.labeled.gz"
    b, st = _tsv(p)
    assert len(b) == 4426 == st.emitted == st.read and not st.skipped
    assert b.label is not None
    assert Counter(b.label.tolist()) == {
        "Benign": 4420,
        "Malicious/FileDownload": 3,
        "Malicious/C&C-FileDownload": 3,
    }
    assert Counter(b["uid"].tolist()).most_common(1)[0][1] == 1


@pytest.mark.parametrize(
    ("name", "rows"), [("test9-mixed.conn.json.log", 576), ("vertical-portscan.conn.json.log", 50)]
)
def test_slips_json_counts(shared: Path, name: str, rows: int) -> None:
    b, st = _json(shared / "zeek" / "slips" / name)
    assert len(b) == rows == st.emitted == st.read and not st.skipped
    assert b.source == "zeek-json"


def test_json_details(shared: Path) -> None:
    b, _ = _json(shared / "zeek" / "slips" / "test9-mixed.conn.json.log")
    assert Counter(b["conn_state"].tolist()) == {
        "SF": 287,
        "RSTO": 157,
        "S1": 85,
        "S0": 35,
        "OTH": 6,
        "SHR": 4,
        "S3": 2,
    }
    v, _ = _json(shared / "zeek" / "slips" / "vertical-portscan.conn.json.log")
    assert Counter(v["conn_state"].tolist())["REJ"] == 43
    assert all(s is None for s in v["service"][v["conn_state"] == "REJ"].tolist())  # absent -> None
    assert v["ts"].min() > 1.7e9
    sr = v["history"] == "Sr"
    assert (v["orig_flags"][sr] == SYN).all() and (v["resp_flags"][sr] == RST).all()


def test_json_iso_ts_and_aliases() -> None:
    lines = [
        b'{"ts":"2018-03-24T17:15:20.629574Z","id.orig_h":"1.2.3.4","id.orig_p":1,'
        b'"id.resp_h":"5.6.7.8","id.resp_p":80,"proto":"tcp","history":"ShAdDaFf"}\n',
        b'{"ts":"2018-03-24T17:15:20+00:00","id_orig_h":"1.2.3.4","id_resp_p":53,"proto":"udp","duration":0.5}',
        b'{"ts":"2018-03-24T17:15:20Z","id.orig_h":"::1"}\r\n',
    ]
    st = ReadStats()
    b = FlowBatch.concat(list(zeek_json.read_lines(lines, st)))
    assert len(b) == 3 and not st.skipped
    assert b["ts"][0] == pytest.approx(1521911720.629574)
    assert b["ts"][1] == b["ts"][2] == 1521911720.0
    assert b["orig_flags"][0] == SYN | ACK | 8 | 1
    assert b["resp_flags"][0] == SYN | ACK | 8 | 1
    assert b["orig_flags"][1] == -1 and b["orig_p"][1] == -1 and b["resp_p"][1] == 53
    assert math.isnan(b["duration"][0]) and b["duration"][1] == 0.5


@pytest.mark.parametrize(
    "rel",
    [
        "zeek/slips/test10-mixed.notice.log",
        "zeek/btest-9.1-dev/scripts.policy.protocols.ssh.detect-bruteforcing.notice.log",
        "zeek/wrccdc-2018/tsv-notice.log.gz",
    ],
)
def test_notice_log_yields_nothing(shared: Path, rel: str) -> None:
    b, st = _tsv(shared / rel)
    assert len(b) == 0 and st.emitted == 0
    assert st.skipped["not-conn-log"] == st.read > 0


def test_json_notice_yields_nothing(shared: Path) -> None:
    b, st = _json(shared / "zeek" / "wrccdc-2018" / "json-notice.json.gz")
    assert len(b) == 0 and st.skipped["not-conn-log"] == st.read == 207


HEADER = [
    b"#separator \\x09\n",
    b"#set_separator\t,\n",
    b"#empty_field\t(empty)\n",
    b"#unset_field\t-\n",
    b"#path\tconn\n",
    b"#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tduration\thistory\n",
    b"#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tinterval\tstring\n",
]


def test_tsv_bad_rows_counted() -> None:
    good = b"1.5\tC1\t1.1.1.1\t1\t2.2.2.2\t80\ttcp\t-\tS\n"
    lines = [
        *HEADER,
        good,
        b"1.5\tC2\t1.1.1.1\t1\t2.2.2.2\t80\ttcp\t0.1\n",  # truncated
        b"1.5\tC3\t1.1.1.1\t99999\t2.2.2.2\t80\ttcp\t0.1\tS\n",  # bad port
        b"1.5\tC4\t1.1.1.1\t1\t2.2.2.2\t80\ttcp\t-3\tS\n",  # negative duration
        b"abc\tC5\t1.1.1.1\t1\t2.2.2.2\t80\ttcp\t1\tS\n",  # bad ts
        b"\xff\xfe\x00garbage\x80\n",
        b"x" * (2 * 1024 * 1024) + b"\n",
        *HEADER,  # a second header block
        good,
    ]
    st = ReadStats()
    b = FlowBatch.concat(list(zeek_tsv.read_lines(lines, st, where="mem")))
    assert len(b) == 2 == st.emitted
    assert st.read == 8
    assert sum(st.skipped.values()) == 6
    assert st.skipped["line-too-long"] == 1
    assert math.isnan(b["duration"][0])


def test_json_bad_lines_counted() -> None:
    lines = [
        b'{"id.orig_h":"1.1.1.1","ts":1.0}',
        b"not json",
        b"[1,2]",
        b'{"id.orig_h":"1.1.1.1","ts":1.0',
        b'{"id.orig_h":"1.1.1.1","id.orig_p":70000}',
        b'{"id.orig_h":"1.1.1.1","duration":-1}',
        b'{"id.orig_h":"1.1.1.1","ts":"yesterday"}',
        b"\xff\xfe\x00",
        b'{"a":"' + b"x" * (2 * 1024 * 1024) + b'"}',
    ]
    st = ReadStats()
    b = FlowBatch.concat(list(zeek_json.read_lines(lines, st)))
    assert len(b) == 1 and st.read == 9 and sum(st.skipped.values()) == 8


def test_tsv_leading_tab_and_crlf() -> None:
    lines = [b"\t" + HEADER[0], *[h.replace(b"\n", b"\r\n") for h in HEADER[1:]]]
    lines.append(b"1.5\tC1\t1.1.1.1\t1\t2.2.2.2\t80\ttcp\t2.0\tShAFaf\r\n")
    st = ReadStats()
    b = FlowBatch.concat(list(zeek_tsv.read_lines(lines, st)))
    assert len(b) == 1 and not st.skipped
    assert b["history"][0] == "ShAFaf" and b["duration"][0] == 2.0


def test_truncated_gz(tmp_path: Path, shared: Path) -> None:
    data = (shared / "zeek" / "slips" / "horizontal-portscan.conn.log").read_bytes()
    gz = gzip.compress(data)
    p = tmp_path / "t.log.gz"
    p.write_bytes(gz[: len(gz) // 2])
    st = ReadStats()
    n = sum(len(b) for b in zeek_tsv.read_path(p, st))
    assert n == st.emitted < 41
    assert sum(st.skipped.values()) >= 1


try:
    from hypothesis import given, settings
    from hypothesis import strategies as hst
except ImportError:  # pragma: no cover
    pass
else:

    @settings(max_examples=150, deadline=None)
    @given(hst.lists(hst.binary(max_size=200), max_size=20), hst.booleans())
    def test_random_bytes_never_raise(lines: list[bytes], with_header: bool) -> None:
        pre = HEADER if with_header else []
        st = ReadStats()
        n = sum(len(b) for b in zeek_tsv.read_lines([*pre, *lines], st))
        assert n == st.emitted <= st.read
        st2 = ReadStats()
        n2 = sum(len(b) for b in zeek_json.read_lines(lines, st2))
        assert n2 == st2.emitted <= st2.read
        assert st2.read == st2.emitted + sum(st2.skipped.values())


def test_inf_and_nan_ports_are_counted_skips_not_crashes(shared: Path) -> None:
    from sidecar.sources.zeek_tsv import read_lines

    lines = (shared / "zeek/slips/horizontal-portscan.conn.log").read_bytes().splitlines(keepends=True)
    head = [ln for ln in lines if ln.startswith(b"#")]
    body = [ln for ln in lines if not ln.startswith(b"#")]
    a, b = body[0].split(b"\t"), body[1].split(b"\t")
    a[3], b[5] = b"inf", b"nan"
    st = ReadStats()
    n = sum(len(x) for x in read_lines([*head, b"\t".join(a), b"\t".join(b), *body[2:]], st))
    assert n == len(body) - 2
    assert sum(st.skipped.values()) == 2
