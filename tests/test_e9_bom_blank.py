"""E9: a UTF-8 BOM at the start of a file, and blank lines, read the same in every reader.

On REAL files (the shared data and ``sidecar/data/samples``):

* each format with one UTF-8 BOM prepended, plain and gzip, reads to exactly the same batches
  (column for column, batch sizes too) and the same stats as without it, on every reader path
  (Zeek TSV bytes / small-block str / row-by-row reference; msgspec chunks / orjson lines);
* ``--format auto`` (and ``bnn-sidecar flows --format auto``) detects a BOM'd file;
* a BOM anywhere else (a line in the middle of a stream, or a second BOM at the start) stays
  part of its line: one counted bad record, everything else unchanged;
* the follower drops one BOM at offset 0 of each file it opens (also when the BOM arrives in
  pieces, and after rotation), and never elsewhere;
* blank lines are ``ignored["blank"]`` in all four readers and change nothing else (the
  records are the same, their line numbers shifted).
"""

from __future__ import annotations

import gzip
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_e8_mutations import (
    CIC17,
    CIC_REAL,
    EVE_REAL,
    JSON_REAL,
    SAMPLES,
    TSV_REAL,
    _key,
    _raw,
    _rows,
    _same_batches,
)
from test_e8_streams import _drain as drain

from sidecar.errors import FormatDetectionError
from sidecar.flow import FlowBatch
from sidecar.sources import detect, eve, zeek_json, zeek_tsv, zeek_tsv_fast
from sidecar.sources.base import ReadStats
from sidecar.sources.bom import BOM

TSV_PLAIN = "horizontal-portscan.conn.log"  # in SAMPLES
JSON_SAMPLE = "vertical-portscan.conn.json.log"  # in SAMPLES
EVE_PLAIN = "suricata/eve/magnc-honeypot-ssh.eve.json"

#: (format, folder, file): two real files per format (SAMPLES is None: the shared data)
FILES = [
    ("zeek-tsv", SAMPLES, TSV_REAL), ("zeek-tsv", SAMPLES, TSV_PLAIN),
    ("zeek-json", None, JSON_REAL), ("zeek-json", SAMPLES, JSON_SAMPLE),
    ("eve", None, EVE_REAL), ("eve", None, EVE_PLAIN),
    ("cic-csv", None, CIC_REAL), ("cic-csv", None, CIC17),
]  # fmt: skip
ONE_PER_FORMAT = [FILES[0], FILES[2], FILES[4], FILES[6]]


def _data(shared: Path, base: Path | None, rel: str) -> bytes:
    return _raw(base or shared, rel)


def _paths(fmt: str) -> list[str]:
    return {"zeek-tsv": ["bytes", "str", "reference"], "zeek-json": ["fast", "reference"],
            "eve": ["fast", "reference"]}.get(fmt, ["csv"])  # fmt: skip


def _read(p: Path, fmt: str, path: str, mp: pytest.MonkeyPatch) -> tuple[list[FlowBatch], ReadStats]:
    """``p`` read as ``fmt`` through the reader path ``path`` (see :func:`_paths`)."""
    with mp.context() as m:
        if path == "str":
            m.setattr(zeek_tsv_fast, "SMALL_BLOCK", 10**9)
        elif path == "bytes":
            m.setattr(zeek_tsv_fast, "SMALL_BLOCK", 1)
        elif path == "reference" and fmt == "zeek-tsv":
            m.setattr(zeek_tsv, "_fast_batch", lambda rows, hdr: None)
        elif path == "reference":
            m.setattr(zeek_json if fmt == "zeek-json" else eve, "_DECODER", None)
        st = ReadStats()
        return list(detect.read_path(p, fmt, st, batch_size=300)), st


def _write(p: Path, data: bytes, gz: bool) -> Path:
    p.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return p


# ------------------------------------------------------------------------------- BOM at the start


@pytest.mark.parametrize("fmt,base,rel", FILES)
def test_bom_at_file_start_reads_exactly_like_no_bom(shared: Path, tmp_path: Path, fmt: str, base: Path | None,
                                                     rel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _data(shared, base, rel)
    assert not raw.startswith(BOM)
    p = tmp_path / "records"  # one name for every variant: eve origins and CIC uids hold the path
    for path in _paths(fmt):
        want, st_want = _read(_write(p, raw, False), fmt, path, monkeypatch)
        assert st_want.emitted > 0 and st_want.emitted == sum(map(len, want))
        for gz in (False, True):
            for data in (raw, BOM + raw):
                _write(p, data, gz)
                assert detect.detect_path(p) == fmt
                for f in (fmt, "auto"):
                    got, st = _read(p, f, path, monkeypatch)
                    _same_batches(got, want)
                    assert st.as_dict() == st_want.as_dict(), (path, gz, f)


@pytest.mark.parametrize("fmt,base,rel", ONE_PER_FORMAT)
def test_detect_bytes_sees_through_one_bom(shared: Path, fmt: str, base: Path | None, rel: str) -> None:
    head = _data(shared, base, rel)[:65536]
    assert detect.detect_bytes(BOM + head) == detect.detect_bytes(head) == fmt
    with pytest.raises(FormatDetectionError):
        detect.detect_bytes(BOM + b"\x00\x01garbage\n")
    with pytest.raises(FormatDetectionError):
        detect.detect_bytes(BOM)


# ------------------------------------------------------------------------------- BOM elsewhere


def _record_lines(fmt: str, lines: list[bytes]) -> list[int]:
    if fmt == "zeek-tsv":
        return [i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith(b"#")]
    if fmt == "eve":
        return [i for i, ln in enumerate(lines) if b'"event_type":"flow"' in ln]
    if fmt == "cic-csv":
        return list(range(1, len(lines)))
    return [i for i, ln in enumerate(lines) if ln.startswith(b"{")]


@pytest.mark.parametrize("fmt,base,rel", FILES)
def test_bom_inside_a_stream_is_one_counted_bad_record(shared: Path, tmp_path: Path, fmt: str,
                                                       base: Path | None, rel: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A BOM before a record line in the middle of a file is not stripped: that one record is
    a counted skip (read, not emitted), every other record comes out unchanged."""
    lines = _data(shared, base, rel).splitlines(keepends=True)
    k = _record_lines(fmt, lines)[len(_record_lines(fmt, lines)) // 2]
    p = tmp_path / "records"
    for path in _paths(fmt):
        want, st_want = _read(_write(p, b"".join(lines), False), fmt, path, monkeypatch)
        bad = [*lines[:k], BOM + lines[k], *lines[k + 1 :]]
        for gz in (False, True):
            for data in (b"".join(bad), BOM + b"".join(bad)):  # with a BOM at the start too
                got, st = _read(_write(p, data, gz), fmt, path, monkeypatch)
                assert st.read == st_want.read and st.emitted == st_want.emitted - 1, st.as_dict()
                assert sum(st.skipped.values()) == sum(st_want.skipped.values()) + 1
                assert st.ignored == st_want.ignored
                w, g = [_key(r) for r in _rows(want)], [_key(r) for r in _rows(got)]
                gs = set(g)
                missing = [x for x in w if x not in gs]
                assert len(missing) == 1 and [x for x in w if x != missing[0]] == g
                if fmt in ("zeek-json", "eve"):
                    assert st.skipped["bad-json"] == st_want.skipped["bad-json"] + 1


@pytest.mark.parametrize("fmt,base,rel", ONE_PER_FORMAT)
def test_only_one_bom_is_stripped(shared: Path, tmp_path: Path, fmt: str, base: Path | None, rel: str) -> None:
    """Two BOMs at the start: the first is dropped, the second stays part of line 1: a Zeek TSV
    ``#separator`` line so spoiled is one record line before any header (``no-header``), a JSON
    line one ``bad-json``; a CSV header cell keeps it (header names are normalised, so the
    CSV still reads)."""
    raw = _data(shared, base, rel)
    p = tmp_path / "records"
    one, two = ReadStats(), ReadStats()
    n1 = sum(len(b) for b in detect.read_path(_write(p, BOM + raw, False), fmt, one))
    n2 = sum(len(b) for b in detect.read_path(_write(p, BOM + BOM + raw, False), fmt, two))
    assert sum(two.skipped.values()) == sum(one.skipped.values()) + (fmt != "cic-csv")
    if fmt == "zeek-tsv":
        assert two.skipped["no-header"] == 1 and two.read == one.read + 1 and n2 == n1
    elif fmt in ("zeek-json", "eve"):
        assert two.skipped["bad-json"] == one.skipped["bad-json"] + 1 and n2 >= n1 - 1
    else:
        assert n2 == n1 and two.as_dict() == one.as_dict()


@pytest.mark.parametrize("fmt,base,rel", ONE_PER_FORMAT)
def test_gzip_too_short_for_a_bom_check_is_a_counted_cut(shared: Path, tmp_path: Path, fmt: str,
                                                         base: Path | None, rel: str) -> None:
    """A gzip file cut inside its first block: the BOM check cannot read 3 bytes; the reader
    still meets the damage and counts it as ``truncated-input`` (nothing raises)."""
    raw = _data(shared, base, rel)
    gz = gzip.compress(BOM + raw, mtime=0)
    for cut in (12, 20, 40):
        p = _write(tmp_path / "cut.gz", gz[:cut], False)
        st = ReadStats()
        assert sum(len(b) for b in detect.read_path(p, fmt, st)) == 0
        assert st.skipped["truncated-input"] == 1 and st.emitted == 0, (cut, st.as_dict())


# ------------------------------------------------------------------------------- the CLI


def _flows(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "sidecar.cli.main", "flows", *args],
                          capture_output=True, timeout=120, check=False)


@pytest.mark.parametrize("fmt,base,rel", ONE_PER_FORMAT)
def test_flows_cli_auto_on_a_bom_file(shared: Path, tmp_path: Path, fmt: str, base: Path | None, rel: str) -> None:
    raw = _data(shared, base, rel)
    p = tmp_path / "records"
    outs = []
    for data in (raw, BOM + raw):
        _write(p, data, False)
        out = tmp_path / "flows.jsonl"
        r = _flows("--input", str(p), "--format", "auto", "--out", str(out))
        assert r.returncode == 0, r.stderr[-2000:]
        summary = re.search(rb"total: (\{.*\})", r.stderr)
        assert summary is not None, r.stderr[-500:]
        outs.append((out.read_bytes(), orjson.loads(summary.group(1))))
    assert outs[0] == outs[1]
    assert outs[1][1]["emitted"] == len(outs[1][0].splitlines()) > 0


# ------------------------------------------------------------------------------- the follower


def _drain(fol: Any, limit: int = 100) -> list[bytes]:
    """Every line the follower has now (bounded), committed, in order."""
    polls: list[list[bytes]] = []
    drain(fol, polls, limit)
    return [ln for p in polls for ln in p]


def test_follow_drops_a_bom_at_offset_0_only(shared: Path, tmp_path: Path) -> None:
    """A BOM at offset 0 is dropped (also when it is written in pieces), the offset still counts
    its bytes (a checkpoint resumes at the right place); a BOM inside the file and the BOM of
    a file opened later at offset > 0 (resumed from a checkpoint) stay; after rotation the new
    file's BOM is dropped too."""
    from sidecar.sources.follow import Follower, FollowState

    lines = _raw(SAMPLES, TSV_REAL).splitlines(keepends=True)
    mid = [*lines[:50], BOM + lines[50], *lines[51:]]
    p = tmp_path / "conn.log"
    p.write_bytes(BOM[:2])
    fol = Follower(p, inotify=False)
    try:
        assert _drain(fol) == []
        with open(p, "ab") as fh:
            fh.write(BOM[2:] + b"".join(mid[:200]))
        assert _drain(fol) == mid[:200]
        with open(p, "ab") as fh:
            fh.write(b"".join(mid[200:]))
        assert _drain(fol) == mid[200:]
        assert fol.state.offset == p.stat().st_size
        state = FollowState(fol.state.inode, 3 + len(mid[0]), [])
    finally:
        fol.close()
    again = Follower(p, state, inotify=False)  # resumed after line 1: nothing is dropped
    try:
        assert _drain(again) == mid[1:]
        p.rename(tmp_path / "conn.1.log")  # rotation: the new file starts with a BOM too
        p.write_bytes(BOM + b"".join(lines[:20]))
        assert _drain(again) == lines[:20]
    finally:
        again.close()
    st_f, st_r = ReadStats(), ReadStats()
    p.write_bytes(BOM + b"".join(mid))
    fol = Follower(p, inotify=False)
    try:
        rows_f = _rows(list(zeek_tsv.read_lines(_drain(fol), st_f, "m")))
    finally:
        fol.close()
    rows_r = _rows(list(zeek_tsv.read_path(p, st_r)))
    assert [_key(r) for r in rows_f] == [_key(r) for r in rows_r] and st_f.as_dict() == st_r.as_dict()
    assert sum(st_r.skipped.values()) == 1  # the BOM line inside the file


# ------------------------------------------------------------------------------- blank lines


def _with_blanks(lines: list[bytes], seed: int, n: int) -> tuple[list[bytes], dict[int, int]]:
    """``lines`` with ``n`` blank lines (LF, CRLF, spaces, tab) put after seeded lines (never
    before line 1: a CSV header stays first for the mapping), and old → new line numbers."""
    rng = random.Random(seed)
    after = sorted(rng.sample(range(len(lines)), n))
    out: list[bytes] = []
    where: dict[int, int] = {}
    j = 0
    for i, ln in enumerate(lines):
        out.append(ln)
        where[i + 1] = len(out)
        while j < len(after) and after[j] == i:
            out.append(rng.choice([b"\n", b"\r\n", b"   \n", b"\t\n"]))
            j += 1
    return out, where


def _renumber(fb: FlowBatch, where: dict[int, int], name: str) -> list[bytes]:
    """Rows of ``fb`` with line-number origins / CIC uids (``<name>:<line>``) moved by ``where``."""
    pat = re.compile(rf"^(.*{re.escape(name)}):(\d+)$")

    def move(v: Any) -> Any:
        m = pat.match(v) if isinstance(v, str) else None
        return f"{m.group(1)}:{where[int(m.group(2))]}" if m else v

    origin = fb.origin.tolist() if fb.origin is not None else [None] * len(fb)
    return [_key({**r, "uid": move(r["uid"]), "_origin": move(o)}) for r, o in zip(fb.iter_rows(), origin, strict=True)]


@pytest.mark.parametrize("fmt,base,rel", FILES)
def test_blank_lines_are_counted_and_change_nothing_else(shared: Path, tmp_path: Path, fmt: str,
                                                         base: Path | None, rel: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _data(shared, base, rel).splitlines(keepends=True)
    blanks, where = _with_blanks(lines, 9, 25)
    p = tmp_path / "records"
    for path in _paths(fmt):
        want, st_want = _read(_write(p, b"".join(lines), False), fmt, path, monkeypatch)
        before = [k for b in want for k in _renumber(b, where, "records")]
        for gz in (False, True):
            got, st = _read(_write(p, b"".join(blanks), gz), fmt, path, monkeypatch)
            assert st.ignored["blank"] == st_want.ignored["blank"] + 25, (path, st.as_dict())
            d, d_want = st.as_dict(), st_want.as_dict()
            for x in (d, d_want):
                x["ignored"] = {k: v for k, v in x["ignored"].items() if k != "blank"}  # type: ignore[attr-defined]
            assert d == d_want, path
            assert [k for b in got for k in _renumber(b, where, "__none__")] == before, path


def test_cic_blank_lines_before_the_header(shared: Path, tmp_path: Path) -> None:
    """Blank lines before a CSV header are counted too, and the header is still the header."""
    lines = _raw(shared, CIC_REAL).splitlines(keepends=True)
    p = tmp_path / "records"
    st_want = ReadStats()
    want = list(detect.read_path(_write(p, b"".join(lines), False), "cic-csv", st_want))
    st = ReadStats()
    got = list(detect.read_path(_write(p, BOM + b"\n\r\n  \n" + b"".join(lines), False), "auto", st))
    assert st.ignored["blank"] == 3 and st.emitted == st_want.emitted > 0 and st.skipped == st_want.skipped
    shift = {n: n + 3 for n in range(1, len(lines) + 1)}
    assert [k for b in got for k in _renumber(b, {}, "__none__")] == [
        k for b in want for k in _renumber(b, shift, "records")
    ]


@pytest.mark.parametrize("gz", [False, True])
def test_part_of_a_bom_is_not_stripped(tmp_path: Path, gz: bool) -> None:
    """A file starting with only the first bytes of a BOM keeps them: a counted bad record."""
    for data in (BOM[:2], BOM[:2] + b"\n", BOM[:1] + b"{}\n"):
        st = ReadStats()
        assert list(detect.read_path(_write(tmp_path / "x", data, gz), "zeek-json", st)) == []
        assert st.read == 1 and st.skipped["bad-json"] == 1, (data, st.as_dict())


@pytest.mark.parametrize("fmt,base,rel", ONE_PER_FORMAT[:3])
def test_followed_bom_file_gives_what_the_file_read_gives(shared: Path, tmp_path: Path, fmt: str,
                                                          base: Path | None, rel: str) -> None:
    """The service's follow source (format detected from the followed lines) on a BOM'd log:
    the records and counts of the same file read whole."""
    from sidecar.service.follow_source import FollowSource

    p = _write(tmp_path / "log", BOM + _data(shared, base, rel), False)
    st = ReadStats()
    want = [_key(r) for r in _rows(list(detect.read_path(p, "auto", st)))]
    src = FollowSource(str(p), inotify=False)
    src.once = True
    got = [_key(r) for b in src for r in b.iter_rows()]
    assert got == want and src.stats.emitted == st.emitted > 0 and src.stats.skipped == st.skipped
