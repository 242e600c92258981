"""E8: streams that end, switch format or are followed: gzip cut mid-stream, BOM/CRLF/empty/
header-only files, the follower (``tail -F``) and Broker WebSocket messages, on REAL records.

Helpers and the mutation model are in :mod:`test_e8_mutations`. Checks: nothing raises (only the
``InputError`` family where a clear error is documented), every record is emitted or counted,
and the records around the damage come out exactly as from the intact input.
"""

from __future__ import annotations

import gzip
import logging
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from broker_peer import flow_events, read_conn_log
from test_e8_mutations import (
    CIC_REAL,
    EVE_REAL,
    JSON_REAL,
    SAMPLES,
    TSV_REAL,
    Mutated,
    _identity,
    _key,
    _lines,
    _raw,
    _rows,
    _tsv_is_record,
    mutate,
)

from sidecar.errors import InputError
from sidecar.sources import broker_ws, detect, zeek_tsv
from sidecar.sources.base import ReadStats


@pytest.mark.parametrize("fmt,rel", [("zeek-tsv", TSV_REAL), ("zeek-json", JSON_REAL), ("eve", EVE_REAL),
                                     ("cic-csv", CIC_REAL)])
def test_bom_crlf_empty_and_header_only(shared: Path, tmp_path: Path, fmt: str, rel: str | Path) -> None:
    raw = _raw(SAMPLES if fmt == "zeek-tsv" else shared, rel)
    full = ReadStats()
    p = tmp_path / "full"
    p.write_bytes(raw)
    n_full = sum(len(b) for b in detect.read_path(p, fmt, full))
    assert n_full > 0
    lf = raw.replace(b"\r\n", b"\n")  # the CIC file is CRLF already: "\r\r\n" would be a blank CSV row
    crlf = lf.replace(b"\n", b"\r\n")
    for name, data in (("lf", lf), ("crlf", crlf), ("bom", b"\xef\xbb\xbf" + raw), ("bom-crlf", b"\xef\xbb\xbf" + crlf)):
        p = tmp_path / name
        p.write_bytes(data)
        for f in (fmt, "auto"):  # a leading BOM is dropped (E9): exactly the records and counts without it
            st = ReadStats()
            n = sum(len(b) for b in detect.read_path(p, f, st))
            assert (n, st.as_dict()) == (n_full, full.as_dict()), (name, f)
    first = raw.splitlines(keepends=True)
    header = b"".join(ln for ln in first if ln.startswith(b"#")) if fmt == "zeek-tsv" else first[0] * (fmt == "cic-csv")
    for name, data in (("empty", b""), ("header-only", header), ("gz-empty", gzip.compress(b"")),
                       ("bom-only", b"\xef\xbb\xbf"), ("bom-header-only", b"\xef\xbb\xbf" + header),
                       ("gz-bom-only", gzip.compress(b"\xef\xbb\xbf"))):
        p = tmp_path / name
        p.write_bytes(data)
        st = ReadStats()
        assert sum(len(b) for b in detect.read_path(p, fmt, st)) == 0
        assert st.read == st.emitted == 0 and not st.skipped
        if "header-only" not in name or not header:
            with pytest.raises(InputError):  # nothing to tell the format from: a clear error
                list(detect.read_path(p, "auto", ReadStats()))
        else:  # a header is enough to tell the format; no records, nothing skipped
            st = ReadStats()
            assert sum(len(b) for b in detect.read_path(p, "auto", st)) == 0 and not st.read


# ------------------------------------------------------------------------------- gzip cut mid-stream


@pytest.mark.parametrize("fmt,rel", [("zeek-tsv", TSV_REAL), ("zeek-json", JSON_REAL), ("eve", EVE_REAL),
                                     ("cic-csv", CIC_REAL)])
@pytest.mark.parametrize("cut", [0.05, 0.5, 0.97])
def test_gzip_cut_mid_stream(shared: Path, tmp_path: Path, fmt: str, rel: str | Path, cut: float) -> None:
    """A gzip file cut mid-stream: the records before the cut come out exactly as in the whole
    file, the cut is one counted ``truncated-input`` skip, and nothing raises (auto too)."""
    raw = _raw(SAMPLES if fmt == "zeek-tsv" else shared, rel)
    whole = tmp_path / "whole.gz"
    whole.write_bytes(gzip.compress(raw, mtime=0))
    full = list(detect.read_path(whole, fmt, ReadStats()))
    gz = whole.read_bytes()
    p = tmp_path / "whole.gz"  # same name: the CIC uid (file:line) stays comparable
    p.write_bytes(gz[: int(len(gz) * cut)])
    for f in (fmt, "auto"):
        st = ReadStats()
        got = list(detect.read_path(p, f, st))
        assert st.skipped["truncated-input"] == 1, st.as_dict()
        a, b = [_key(r) for r in _rows(got)], [_key(r) for r in _rows(full)]
        assert a == b[: len(a)], "records before the cut differ"
        assert 0 < len(a) < len(b) or cut < 0.1


# ------------------------------------------------------------------------------- follow (tail)


def _drain(fol: Any, polls: list[list[bytes]], limit: int = 1000) -> None:
    """Poll ``fol`` until it has nothing new (bounded), committing each poll."""
    for _ in range(limit):
        got = fol.poll()
        if not got:
            return
        polls.append(got)
        fol.commit()


def _follow_all(path: Path) -> list[bytes]:
    from sidecar.sources.follow import Follower

    fol = Follower(path, inotify=False)
    polls: list[list[bytes]] = []
    try:
        _drain(fol, polls)  # bounded: a few MB per poll
    finally:
        fol.close()
    return [ln for x in polls for ln in x]


def test_follow_gives_the_lines_a_file_read_gives(tmp_path: Path) -> None:
    """The follower cuts lines where a file read does (at b"\\n" only: a CR inside a mutated
    line is not a line break) and hands a 10 MB line out as ONE oversized line (one counted
    skip), so a followed log gives the same records and counts as the same log read whole."""
    lines = _lines(SAMPLES, TSV_REAL)
    m = Mutated(lines, _tsv_is_record, b"\t", 3, 0.1)
    stream = [*m.lines[:300], b"1\t" + b"9" * (10 << 20) + b"\n", *m.lines[300:]]
    stream[320] = stream[320].replace(b"\t", b"\t\r", 2)  # CRs inside a line (mutations add more)
    p = tmp_path / "conn.log"
    p.write_bytes(b"".join(stream))
    got = _follow_all(p)
    with open(p, "rb") as fh:
        want = list(fh)
    short = [ln for ln in got if len(ln) <= zeek_tsv.MAX_LINE]
    assert short == [ln for ln in want if len(ln) <= zeek_tsv.MAX_LINE], "lines cut elsewhere than at LF"
    assert len(got) - len(short) == 1, "the 10 MB line must come out as one oversized line"
    st_f, st_r = ReadStats(), ReadStats()
    rows_f = _rows(list(zeek_tsv.read_lines(got, st_f, "m")))
    rows_r = _rows(list(zeek_tsv.read_path(p, st_r)))
    assert [_key(r) for r in rows_f] == [_key(r) for r in rows_r]
    assert st_f.as_dict() == st_r.as_dict()
    _identity(st_f, m.records + 1)
    assert st_f.skipped["line-too-long"] == 1


# ------------------------------------------------------------------------------- Broker WebSocket


def test_broker_messages_mutated_bytes(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real conn records as BNN::flows events, byte-mutated: every message is counted (records
    read, a malformed message, or an ignored one), the three decoding paths agree, and an
    unmutated message always gives all its records."""
    rows = read_conn_log(SAMPLES / "horizontal-portscan.conn.log")
    msgs = [m.encode() for m in flow_events(rows, batch=4)]
    rng = random.Random(5)
    mutated: list[bytes] = []
    for raw in msgs * 3:
        if rng.random() < 0.5:
            raw = mutate(raw, b",", rng, json_values=True)
        mutated.append(raw)

    def run() -> tuple[list[tuple[int, int, int]], dict[str, Any], list[bytes]]:
        src = broker_ws.BrokerWsSource("ws://127.0.0.1:9/v1/messages/json", batch_size=1 << 20)
        deltas = []
        for raw in mutated:
            r0, p0, i0 = src.stats.read, src._n_pending(), sum(src.stats.ignored.values())
            src._handle(raw)
            deltas.append((src.stats.read - r0, src._n_pending() - p0, sum(src.stats.ignored.values()) - i0))
        n = src._n_pending()
        src.stats.emitted += n
        return deltas, src.stats.as_dict(), [_key(r) for r in src._take().iter_rows()] if n else []

    logging.getLogger("sidecar").setLevel(logging.ERROR)
    typed = run()
    monkeypatch.setattr(broker_ws, "decode_message", lambda raw: None)
    columnar = run()
    monkeypatch.setattr(broker_ws, "decode_flows", lambda records: None)
    reference = run()
    assert typed == columnar == reference
    deltas, stats, _ = typed
    assert stats["read"] == stats["emitted"] + sum(stats["skipped"].values())
    for raw, (read, pend, ign) in zip(mutated, deltas, strict=True):
        assert read + ign >= 1, raw[:120]  # nothing vanishes uncounted
        if raw in msgs:
            assert read == pend == orjson.loads(raw)["data"][2]["data"][1]["data"][0]["data"].__len__()


def test_follow_poll_never_spans_a_header_change(tmp_path: Path) -> None:
    """A Zeek TSV header block after data lines (columns re-ordered mid-file, ``#close`` then
    more lines): a poll ends before it, so the header its callers prepend (``state.header``)
    is the header of every line the poll returned, and the followed service source gives the
    records the file read whole gives. (Before: one poll returned the lines on both sides and
    the lines before the change were parsed with the new header: 100 of 200 records lost as
    ``bad-number`` skips.)"""
    from sidecar.service.follow_source import FollowSource
    from sidecar.sources.follow import Follower

    lines = _lines(SAMPLES, TSV_REAL)
    head = [ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")]
    body = [ln for ln in lines if not ln.startswith(b"#")][:300]
    fi = next(i for i, ln in enumerate(head) if ln.startswith(b"#fields"))
    names = head[fi].rstrip(b"\n").split(b"\t")[1:]
    perm = list(range(len(names)))
    random.Random(2).shuffle(perm)
    head2 = list(head)
    head2[fi] = b"#fields\t" + b"\t".join(names[i] for i in perm) + b"\n"
    moved = [b"\t".join(ln.rstrip(b"\n").split(b"\t")[i] for i in perm) + b"\n" for ln in body[100:200]]
    p = tmp_path / "conn.log"
    p.write_bytes(b"".join([*head, *body[:100], *head2, *moved, b"#close\t2024\n"]))
    with open(p, "ab") as fh:  # after #close: the first header again, then more records
        fh.write(b"".join([*head, *body[200:]]))
    st_r = ReadStats()
    want = [_key(r) for r in _rows(list(zeek_tsv.read_path(p, st_r)))]
    assert st_r.emitted == 300 and not st_r.skipped
    fol = Follower(p, inotify=False)
    polls: list[list[bytes]] = []
    for _ in range(50):
        got = fol.poll()
        if not got:
            break
        polls.append(got)
        fol.commit()
        data = [ln for ln in got if not ln.startswith(b"#")]
        hdr = [h.encode() for h in fol.state.header if h.startswith("#fields")]
        assert len(hdr) == 1 and all(ln.count(b"\t") == hdr[0].count(b"\t") - 1 for ln in data)
    fol.close()
    assert b"".join(b"".join(x) for x in polls) == p.read_bytes()  # every byte handed out once, in order
    src = FollowSource(str(p), inotify=False)
    src.once = True
    got_rows = [_key(r) for b in src for r in b.iter_rows()]
    assert got_rows == want and src.stats.emitted == 300 and not src.stats.skipped


def test_follow_oversized_line_written_in_pieces(tmp_path: Path) -> None:
    """An oversized line still being written: its head is handed out once (one counted
    ``line-too-long``), the rest that arrives in later polls is dropped up to its line break,
    not handed out as more records; the next real record follows intact."""
    from sidecar.sources.follow import Follower

    lines = _lines(SAMPLES, TSV_REAL)
    head = [ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")]
    body = [ln for ln in lines if not ln.startswith(b"#")]
    p = tmp_path / "conn.log"
    p.write_bytes(b"".join([*head, body[0], b"1\t" + b"9" * (2 << 20)]))
    fol = Follower(p, inotify=False)
    polls: list[list[bytes]] = []
    for tail in (b"9" * (1 << 20), b"9" * (3 << 20) + b"\n" + body[1], body[2]):
        _drain(fol, polls, 10)
        with open(p, "ab") as fh:
            fh.write(tail)
    _drain(fol, polls, 10)
    fol.close()
    out = [ln for x in polls for ln in x]
    assert [ln for ln in out if len(ln) <= zeek_tsv.MAX_LINE] == [*head, *body[:3]]
    assert len(out) == len(head) + 3 + 1
    assert fol.state.offset == p.stat().st_size
    st = ReadStats()
    assert sum(len(b) for b in zeek_tsv.read_lines(out, st)) == 3 and dict(st.skipped) == {"line-too-long": 1}


@pytest.mark.parametrize("fmt,rel", [("zeek-json", JSON_REAL), ("eve", EVE_REAL)])
def test_follow_counts_hash_lines_in_json_input(shared: Path, tmp_path: Path, fmt: str, rel: str) -> None:
    """A line starting with ``#`` in JSON input is a bad record: both follow consumers (the
    service's source and ``flows --follow``) count it like the file reader does, instead of
    dropping it as if it were a Zeek TSV header line."""
    import subprocess
    import sys

    from sidecar.service.follow_source import FollowSource
    from sidecar.sources.detect import read_path

    lines = _lines(shared, rel)[:400]
    p = tmp_path / "log.json"
    p.write_bytes(b"".join([*lines[:200], b"# not json\n", *lines[200:300], b"#fields\tts\n", *lines[300:]]))
    st_file = ReadStats()
    want = sum(len(b) for b in read_path(p, fmt, st_file))
    assert st_file.skipped.get("bad-json") == 2
    src = FollowSource(str(p), format=fmt, inotify=False)
    src.once = True
    got = sum(len(b) for b in src)
    assert got == want and src.stats.skipped == st_file.skipped and src.stats.read == st_file.read
    out = tmp_path / "flows.jsonl"
    r = subprocess.run(
        [sys.executable, "-m", "sidecar.cli.main", "flows", "--follow", "--input", str(p), "--format", fmt,
         "--out", str(out), "--poll", "0.02", "--idle-exit", "0.5"],
        capture_output=True, timeout=60, check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(out.read_bytes().splitlines()) == want
    assert b'"bad-json":2' in r.stderr.replace(b" ", b""), r.stderr[-500:]


def test_corrupt_amounts_are_counted_skips_in_eve_and_cic(shared: Path, tmp_path: Path) -> None:
    """eve and CIC rows with a negative count (a CIC row with -5 packets) or an absurd one are
    corrupt records: dropped and counted as ``negative:<col>`` / ``absurd:<col>``, as the Zeek
    readers do. An eve ``flow.end`` before its start (timestamps out of order at capture) is not
    a corrupt record: the flow is kept with its duration missing, counted in ``stats.missing``.
    Every other row is unchanged, on both eve paths (chunked msgspec and line by line)."""
    from sidecar.sources import cic_csv, eve

    flows = [ln for ln in _lines(shared, EVE_REAL) if b'"event_type":"flow"' in ln][:300]
    bad_end = orjson.loads(flows[10])
    bad_end["flow"]["end"] = "2000-01-01T00:00:00.000000+0000"
    bad_pkts = orjson.loads(flows[20])
    bad_pkts["flow"]["pkts_toserver"] = 10**18
    mutated = list(flows)
    mutated[10], mutated[20] = orjson.dumps(bad_end) + b"\n", orjson.dumps(bad_pkts) + b"\n"
    for use_msgspec in (True, False):
        st = ReadStats()
        rows = _rows(list(eve.read_lines(mutated, st, use_msgspec=use_msgspec)))
        assert dict(st.skipped) == {"absurd:orig_pkts": 1}, use_msgspec
        assert dict(st.missing) == {"negative:duration": 1} and st.as_dict()["missing"] == {"negative:duration": 1}
        assert rows[10]["duration"] is None or rows[10]["duration"] != rows[10]["duration"]  # missing (NaN)
        ref_rows = _rows(list(eve.read_lines(flows, ReadStats())))
        ref_rows[10]["duration"] = rows[10]["duration"]  # the only change to that flow
        got = [_key(r) for r in rows]
        assert got == [_key(r) for i, r in enumerate(ref_rows) if i != 20] and st.emitted == 299

    lines = _lines(shared, CIC_REAL)
    head = lines[0].decode().rstrip("\r\n").split(",")
    k = [c.strip() for c in head].index("Tot Fwd Pkts")
    row = lines[5].decode().rstrip("\r\n").split(",")
    row[k] = "-5"
    p = tmp_path / "cic.csv"
    p.write_bytes(b"".join([*lines[:5], (",".join(row) + "\n").encode(), *lines[6:40]]))
    st = ReadStats()
    n = sum(len(b) for b in cic_csv.read_path(p, st))
    assert dict(st.skipped) == {"negative:orig_pkts": 1} and n == st.emitted == 38 and st.read == 39
