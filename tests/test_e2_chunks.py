"""The chunked msgspec readers (eve, Zeek JSON) give exactly the line-by-line reference output.

Reference = ``read_lines(..., use_msgspec=False)`` (orjson + the per-record code the
golden files pin). Compared: every row, every origin (file:line), the stats, and the
logged skip locations, on real fixtures with hostile lines spliced in at fixed
pseudo-random places (so they land inside chunks, at chunk edges and inside batches).
"""

from __future__ import annotations

import gzip
import logging
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst

from sidecar.flow import FlowBatch
from sidecar.sources import eve, eve_chunks, zeek_json, zeek_json_chunks
from sidecar.sources.base import ReadStats

pytest.importorskip("msgspec")


def _lines(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.splitlines(keepends=True)


def _render(
    mod: Any, lines: list[bytes], fast: bool, batch_size: int, caplog: pytest.LogCaptureFixture
) -> tuple[bytes, list[str], dict[str, Any], list[str], list[int]]:
    caplog.clear()
    st = ReadStats()
    with caplog.at_level(logging.WARNING, logger="sidecar.sources.base"):
        batches = list(mod.read_lines(lines, st, where="f", batch_size=batch_size, use_msgspec=fast))
    rows = b"\n".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for b in batches for r in b.iter_rows())
    origins = [o for b in batches if b.origin is not None for o in b.origin.tolist()]
    logged = sorted(r.getMessage() for r in caplog.records)  # bad-flow is logged when its batch converts
    return rows, origins, st.as_dict(), logged, [len(b) for b in batches]


def _same(
    mod: Any, lines: list[bytes], caplog: pytest.LogCaptureFixture, batch_size: int = 4096
) -> dict[str, Any]:
    fast = _render(mod, lines, True, batch_size, caplog)
    ref = _render(mod, lines, False, batch_size, caplog)
    assert fast[:4] == ref[:4]
    assert all(n <= batch_size for n in fast[4])
    return fast[2]


def _splice(real: list[bytes], odd: list[bytes], seed: int) -> list[bytes]:
    out = list(real)
    rng = random.Random(seed)
    for line in odd:
        out.insert(rng.randrange(len(out) + 1), line)
    return out


EVE_FLOW = {
    "timestamp": "2021-06-06T15:57:02.500000+0200",
    "flow_id": 1234567890123,
    "event_type": "flow",
    "src_ip": "1.2.3.4",
    "src_port": 40000,
    "dest_ip": "5.6.7.8",
    "dest_port": 443,
    "proto": "TCP",
    "app_proto": "tls",
    "flow": {
        "pkts_toserver": 5,
        "pkts_toclient": 4,
        "bytes_toserver": 700,
        "bytes_toclient": 3000,
        "start": "2021-06-06T15:57:01.000000+0200",
        "end": "2021-06-06T15:57:02.500000+0200",
        "state": "closed",
        "reason": "timeout",
    },
    "tcp": {"tcp_flags": "1b", "tcp_flags_ts": "1b", "tcp_flags_tc": "1b"},
}


def _eve_odd() -> list[bytes]:
    f = EVE_FLOW
    fl: dict[str, Any] = f["flow"]  # type: ignore[assignment]
    d = orjson.dumps
    return [
        b"",  # blank line
        b"\n",
        b"not json\n",
        b"\xff\xfe garbage\n",  # invalid UTF-8
        d({**f, "src_ip": "\u00e9t\u00e9"}) + b"\n",  # valid UTF-8, non-ASCII
        d({**f, "flow": {k: v for k, v in fl.items() if k != "pkts_toclient"}}) + b"\n",  # None number
        d({**f, "flow": {k: v for k, v in fl.items() if k != "end"}}) + b"\n",  # no end: NaN duration
        d({**f, "flow": None}) + b"\n",
        d({k: v for k, v in f.items() if k != "flow"}) + b"\n",
        d({k: v for k, v in f.items() if k != "src_ip"}) + b"\n",
        d({**f, "src_port": 70000}) + b"\n",
        d({**f, "dest_port": True}) + b"\n",
        d({**f, "proto": "ICMP", "icmp_type": 8, "icmp_code": 0, "src_port": None}) + b"\n",
        d({**f, "proto": 17}) + b"\n",
        d({**f, "event_type": 7}) + b"\n",  # non-string event type
        d({k: v for k, v in f.items() if k != "event_type"}) + b"\n",
        d({**f, "event_type": "netflow"}) + b"\n",
        d({**f, "flow": {**fl, "start": "2021-06-06 15:57:01+02:00"}}) + b"\n",  # other ISO variant
        d({**f, "flow": {**fl, "start": "yesterday"}}) + b"\n",
        d({**f, "tcp": {"tcp_flags_ts": 27}}) + b"\n",
        d(f)[:-1] + b',"x":[1\n',  # an object cut in two lines (a string cannot span lines)
        b"2]}\n",
        b'{"event_type":"flow","a":"}\n',  # each line starts with { and ends with }, yet is not JSON alone
        b'{"}\n',
        b'{"event_type":"dns"},{"event_type":"dns"}\n',  # two values on one line
        d(f) + b" " + d(f) + b"\n",
        b'{"event_type":"dns",' + d(f)[1:] + b"\n",  # event_type twice: the quick check reads the first
        d(f)[:-1] + b',"event_type":"dns"}\n',
        d({**f, "event_type": "flow", "x": {"event_type": "dns"}}) + b"\n",
        b'{ "event_type": "dns" }\n',  # not compact: a full parse
        b"[1,2]\n",
        b"{" + b" " * (10 << 20) + b"\n",  # a 10 MB line
    ]


def test_eve_chunked_equals_reference_on_real_and_hostile_lines(
    shared: Path, caplog: pytest.LogCaptureFixture
) -> None:
    real = _lines(shared / "suricata/eve/slips-test6-malicious.eve.json.gz")
    real += _lines(shared / "suricata/eve/magnc-honeypot-ssh.eve.json")
    st = _same(eve, real, caplog)
    assert st["emitted"] > 3500 and not st["skipped"]
    mixed = _splice(real, _eve_odd(), seed=3)
    for bs in (4096, 1000, 7):
        st = _same(eve, mixed, caplog, batch_size=bs)
    assert st["skipped"]["bad-json"] >= 8 and st["skipped"]["bad-flow"] >= 5
    # the same lines without line ends (as the socket source passes them)
    _same(eve, [ln.rstrip(b"\n") for ln in mixed[:3000]], caplog, batch_size=512)


def test_eve_real_lines_take_the_chunked_path(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real eve (non-ASCII http events included) never falls back to the line reader."""
    real = _lines(shared / "suricata/eve/slips-test6-malicious.eve.json.gz")
    assert any(not ln.isascii() for ln in real)
    calls: list[int] = []

    def spy(*a: Any, **k: Any) -> Any:
        calls.append(1)
        return iter(())

    monkeypatch.setattr(eve, "read_lines_one_by_one", spy)
    st = ReadStats()
    n = sum(len(b) for b in eve.read_lines(real, st))
    assert not calls and n == st.emitted == 3512
    assert st.ignored["event:alert"] == 745 and st.ignored["event:dns"] == 680


ZEEK = {
    "ts": 1700828217.314165,
    "uid": "CfykLO1IT1nVRJhLA3",
    "id.orig_h": "192.168.1.9",
    "id.orig_p": 50820,
    "id.resp_h": "45.33.32.156",
    "id.resp_p": 443,
    "proto": "tcp",
    "duration": 0.2,
    "orig_bytes": 0,
    "resp_bytes": 0,
    "conn_state": "REJ",
    "history": "Sr",
    "orig_pkts": 1,
    "orig_ip_bytes": 60,
    "resp_pkts": 1,
    "resp_ip_bytes": 40,
}


def _zeek_odd() -> list[bytes]:
    z = ZEEK
    d = orjson.dumps
    return [
        b"",
        b"\n",
        b"garbage\n",
        b"\xc3\x28\n",
        d({**z, "uid": "C\u00e9"}) + b"\n",
        d({**z, "id.orig_p": -1}) + b"\n",  # out of range: caught by the batch range check
        d({**z, "id.resp_p": 65536}) + b"\n",
        d({**z, "orig_bytes": -5}) + b"\n",
        d({**z, "resp_pkts": 1e16}) + b"\n",
        d({**z, "duration": 1e12}) + b"\n",
        d(z)[:-1] + b',"orig_ip_bytes":1000000000000000000000000000000}\n',  # beyond 64 bits
        d({k: v for k, v in z.items() if k != "id.orig_p"})[:-1] + b',"id.orig_p":99999999999999999999}\n',
        d({**z, "ts": "2018-03-24T17:15:20.629574Z"}) + b"\n",
        d({**z, "ts": "bad"}) + b"\n",
        d({**z, "_path": "dns"}) + b"\n",
        d({**z, "_path": "conn"}) + b"\n",
        d({k: v for k, v in z.items() if k != "id.orig_h"}) + b"\n",
        d({**z, "id_orig_p": 5}) + b"\n",
        d({**z, "label": "Malicious"}) + b"\n",
        d({**z, "label": "-", "detailed-label": "C&C"}) + b"\n",
        d({**z, "proto": "TCP", "history": None}) + b"\n",
        b'{"ts":1,"x":"}\n',
        b'{"}\n',
        b"{}{}\n",
        b"{" + b" " * (2 << 20) + b"}\n",  # longer than MAX_LINE
    ]


def test_zeek_json_chunked_equals_reference(shared: Path, caplog: pytest.LogCaptureFixture) -> None:
    real = _lines(shared / "zeek/slips/test9-mixed.conn.json.log")
    real += _lines(shared / "zeek/slips/vertical-portscan.conn.json.log")
    real = real * 3
    st = _same(zeek_json, real, caplog)
    assert st["emitted"] > 1800
    mixed = _splice(real, _zeek_odd(), seed=5)
    for bs in (4096, 300, 7):
        st = _same(zeek_json, mixed, caplog, batch_size=bs)
    assert st["skipped"]["bad-json"] >= 3 and st["skipped"]["line-too-long"] == 1
    _same(zeek_json, [ln.rstrip(b"\n") for ln in mixed], caplog, batch_size=1000)


def test_zeek_json_labels_switching_between_chunks(shared: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Whole chunks of labelled rows after unlabelled ones: batches split, labels kept."""
    real = _lines(shared / "zeek/slips/vertical-portscan.conn.json.log")
    lab = [
        orjson.dumps({**orjson.loads(x), "label": "Malicious" if i % 3 else "-"}) + b"\n"
        for i, x in enumerate(real)
    ]
    lines = real * 12 + lab * 12 + real * 12
    _same(zeek_json, lines, caplog)
    batches = list(zeek_json.read_lines(lines, ReadStats()))
    b = batches[0]
    assert b.label is None
    labelled = [x for x in batches if x.label is not None]
    assert sum(map(len, labelled)) == len(lab) * 12
    assert labelled[0].label is not None and labelled[0].label[:3].tolist() == [
        None,
        "Malicious",
        "Malicious",
    ]


def test_zeek_json_real_lines_take_the_chunked_path(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = _lines(shared / "zeek/slips/vertical-portscan.conn.json.log") * 40
    calls: list[int] = []

    def spy(*a: Any, **k: Any) -> Any:
        calls.append(1)
        return iter(())

    monkeypatch.setattr(zeek_json, "read_lines_one_by_one", spy)
    st = ReadStats()
    sizes = [len(b) for b in zeek_json.read_lines(real, st, batch_size=512)]
    assert not calls and st.emitted == 2000 and sizes == [512, 512, 512, 464]


@pytest.mark.parametrize(
    ("chunk", "accepted"),
    [
        ([b'{"a":"}\n', b'{"}\n', b"{},{}\n"], False),  # starts/ends look right, values straddle lines
        ([b'{"a":[1\n', b"2]}\n"], False),
        ([b"{}\n", b"\n", b"{}\n"], False),  # blank line
        ([b"{} {}\n", b"{}\n"], False),  # two values on one line
        ([b'{"a":"\xff"}\n', b"{}\n"], False),  # invalid UTF-8
        ([b'{"a":1} \n', b"{}\n"], False),  # trailing blank: not provable cheaply, line by line instead
        ([b"{}\n", b"{}"], True),  # the last line may lack its newline
        ([b"{}", b'{"b":"x\\ny \xc3\xa9"}'], True),  # lines without line ends; escapes; UTF-8
        ([b'{"a":{"b":[1,{}]}}\n', b'{"c":"}"}\n'], True),
    ],
)
def test_decode_chunk_accepts_only_one_object_per_line(chunk: list[bytes], accepted: bool) -> None:
    import msgspec

    got = eve_chunks.decode_chunk(chunk, msgspec.json.Decoder().decode_lines)
    if accepted:
        assert got == [orjson.loads(ln) for ln in chunk]
    else:
        assert got is None


def test_coalesce_keeps_order_and_label_kinds() -> None:
    def mk(n: int, lab: bool, start: int) -> FlowBatch:
        cols = {"ts": [float(start + i) for i in range(n)]}
        return FlowBatch.from_columns(cols, "x", n=n, label=["l"] * n if lab else None)

    parts = [
        mk(3, False, 0),
        mk(2, False, 3),
        mk(10, False, 5),
        mk(1, True, 15),
        mk(1, True, 16),
        mk(2, False, 17),
    ]
    out = list(eve_chunks.coalesce(parts, 6))
    assert [len(b) for b in out] == [5, 10, 2, 2]
    assert [b.label is not None for b in out] == [False, False, True, False]
    assert FlowBatch.concat(out)["ts"].tolist() == [float(i) for i in range(19)]


def test_chunk_constants_sane() -> None:
    assert eve_chunks.MIN_SPLIT < eve_chunks.CHUNK and zeek_json_chunks.MIN_SPLIT < zeek_json_chunks.CHUNK


_CHARS = '{}[]",:\n\\ a'
_VALUE = hst.recursive(
    hst.none() | hst.booleans() | hst.integers(-5, 5) | hst.text(alphabet=_CHARS, max_size=4),
    lambda inner: (
        hst.lists(inner, max_size=3)
        | hst.dictionaries(hst.text(alphabet=_CHARS, max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
_OBJECTS = hst.lists(
    hst.dictionaries(hst.text(alphabet=_CHARS, max_size=3), _VALUE, max_size=3), min_size=1, max_size=5
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_OBJECTS, hst.integers(0, 3), hst.integers(0, 10**6), hst.booleans())
def test_decode_chunk_never_misaligns_lines(
    objs: list[dict[str, Any]], mode: int, pos: int, ends: bool
) -> None:
    """Property: JSON lines, then merged/split/re-cut; an accepted chunk always equals line-by-line decoding."""
    import msgspec

    nl = b"\n" if ends else b""
    lines = [orjson.dumps(o) + nl for o in objs]
    i = pos % len(lines)
    if mode == 1 and len(lines) > 1:  # two objects on one line
        i = pos % (len(lines) - 1)
        lines[i : i + 2] = [lines[i].rstrip(b"\n") + b" " + lines[i + 1]]
    elif mode >= 2:  # one line cut at an arbitrary byte; mode 3 also merges two others (same line count)
        ln = lines[i].rstrip(b"\n")
        k = pos % (len(ln) + 1)
        lines[i : i + 1] = [ln[:k] + nl, ln[k:] + nl]
        if mode == 3 and len(lines) > 3:
            j = (i + 2) % (len(lines) - 1)
            lines[j : j + 2] = [lines[j].rstrip(b"\n") + lines[j + 1]]
    got = eve_chunks.decode_chunk(lines, msgspec.json.Decoder().decode_lines)
    if mode == 0:
        assert got is not None  # plain JSON lines are always accepted
    if got is not None:
        assert got == [orjson.loads(ln) for ln in lines]


def test_chunks_bound_bytes_for_iterators_and_read_path_matches(
    tmp_path: Path, shared: Path, caplog: pytest.LogCaptureFixture
) -> None:
    big = b"{" + b" " * (3 << 20) + b"}\n"  # 3 MB lines: a file of them must not be held 512 at a time
    lines = [b'{"a":1}\n'] * 3 + [big] * 5 + [b'{"a":2}\n'] * 1000
    got = list(eve_chunks.chunks(iter(lines), eve_chunks.CHUNK))
    assert [ln for c in got for ln in c] == lines
    assert all(sum(map(len, c)) < eve_chunks.MAX_CHUNK_BYTES + len(big) for c in got)
    assert max(map(len, got)) == eve_chunks.CHUNK
    # a file read through read_path (an iterator, not a list) gives the reference output
    real = _lines(shared / "suricata/eve/magnc-honeypot-ssh.eve.json")
    mixed = _splice(real * 4, [big] * 3 + _eve_odd()[:6], seed=9)
    path = tmp_path / "eve.json"
    path.write_bytes(b"".join(mixed))
    st = ReadStats()
    rows = [r for b in eve.read_path(path, st) for r in b.iter_rows()]
    ref = _render(eve, [ln for ln in mixed if ln], False, 4096, caplog)  # b"" is no line of a file
    assert b"\n".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows) == ref[0]
    assert st.as_dict() == ref[2] and st.ignored["event:None"] >= 3  # the big lines are empty objects
