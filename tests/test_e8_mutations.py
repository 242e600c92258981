"""E8: every record reader on seeded mutations of REAL records: no crash, no silent loss.

Each test starts from real lines of the shared data (Zeek TSV and JSON conn logs, Suricata
eve, CICFlowMeter CSV), mutates a seeded share of them (byte flips, truncation, field
deletion/duplication, type swaps, huge/negative numbers, NaN/inf text, NUL and non-UTF-8
bytes, CR inside a line) and checks:

* nothing raises (only the ``InputError`` family where a clear error is documented);
* the accounting identity against an INDEPENDENT count made while building the input
  (mutations keep every record line a record line: its first byte and its line break):
  every record line is read, and ``read == emitted + skipped`` (eve: ``+ ignored``);
* every unmutated line still gives exactly the record it gave before mutation (nothing
  lost or altered around bad lines), and emitted values keep the canonical ranges;
* equivalent paths agree batch for batch and stat for stat: Zeek TSV bytes / str /
  row-by-row reference, chunked msgspec vs orjson line readers (Zeek JSON, eve).

Existing fuzzing (tests/test_zeek_tsv_equiv.py, tests/test_e2_chunks.py) splices fixed hostile
lines; this module mutates the real records (and Zeek headers) themselves, and adds CIC CSV and
mixed-format streams. tests/test_e8_streams.py (which imports the helpers below) covers gzip cut
mid-stream, BOM/CRLF/empty/header-only files, the follower and Broker WebSocket messages.
"""

from __future__ import annotations

import gzip
import logging
import random
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from sidecar.flow import FIELDS, FlowBatch
from sidecar.sources import cic_csv, eve, zeek_json, zeek_tsv, zeek_tsv_fast
from sidecar.sources.base import ReadStats

SAMPLES = Path(zeek_tsv.__file__).resolve().parent.parent / "data" / "samples"
TSV_REAL = SAMPLES / "ctu-sme-11.conn.log.labeled.gz"  # real, labelled: 766 records, unique uids
TSV_PORTSCAN = "zeek/slips/horizontal-portscan.conn.log"
JSON_REAL = "zeek/slips/test9-mixed.conn.json.log"  # 576 records, unique uids
EVE_REAL = "suricata/eve/slips-test6-malicious.eve.json.gz"  # 5000 events, 3512 flows
CIC_REAL = "cic-ids2018/Brute Force -XSS.csv.gz"  # no Flow ID: uid = file:line
CIC17 = "cic-ids2017-improved/Botnet_736.csv.gz"

SEEDS = range(4)
RATES = (0.02, 0.3)

# ------------------------------------------------------------------------------- mutations

#: hostile cell values for TSV and CSV fields
HOSTILE = [
    b"", b"-", b"(empty)", b"abc", b"tcp", b"192.168.1.1", b"1e400", b"-5", b"-1", b"-0.5", b"NaN", b"nan",
    b"inf", b"-Infinity", b"Infinity", b"99999999999999999999999", b"1e16", b"1e308", b"0x1F", b"\xff\xfe",
    b"\x00", b"1.2.3", b"\xd9\xa3", b"65536", b"4294967296", b"9" * 400, b"1_000", b" 7 ", b"T", b"\xc3",
]  # fmt: skip
#: hostile JSON values (type swaps, huge, negative, NaN/inf text, bad UTF-8)
HOSTILE_JSON = [
    b'"abc"', b"1e400", b"-5", b"-1", b"NaN", b"Infinity", b'"nan"', b'"inf"', b"99999999999999999999999",
    b"1e16", b"null", b"true", b"[]", b"{}", b'"\xff"', b'""', b'"-"', b"65536", b"0.5", b'"12"', b"-0.0",
    b'"2021-13-45T99:00:00"', b"1" * 400,
]  # fmt: skip


def mutate(body: bytes, sep: bytes, rng: random.Random, json_values: bool = False, forbid: bytes = b"\n") -> bytes:
    """One seeded mutation of a record line ``body`` (no line end). The result keeps the first
    byte (a record line stays a record line) and gets no byte of ``forbid`` (no new line break)."""
    fields = body.split(sep)
    op = rng.randrange(8)
    i = rng.randrange(len(fields))
    if op == 0:  # type swap / hostile value
        if json_values:
            k = fields[i].find(b'":')
            fields[i] = fields[i][: k + 2] + rng.choice(HOSTILE_JSON) if k >= 0 else rng.choice(HOSTILE_JSON)
        else:
            fields[i] = rng.choice(HOSTILE)
        out = sep.join(fields)
    elif op == 1:  # field deleted
        del fields[i]
        out = sep.join(fields)
    elif op == 2:  # field duplicated
        fields.insert(i, fields[i])
        out = sep.join(fields)
    elif op == 3:  # two fields swapped (a string where a number goes and vice versa)
        j = rng.randrange(len(fields))
        fields[i], fields[j] = fields[j], fields[i]
        out = sep.join(fields)
    elif op == 4:  # bit flips
        b = bytearray(body)
        for _ in range(rng.randrange(1, 4)):
            p = rng.randrange(1, len(b))
            b[p] ^= 1 << rng.randrange(8)
        out = bytes(b)
    elif op == 5:  # truncated
        out = body[: rng.randrange(1, len(body))]
    elif op == 6:  # bytes inserted: NUL, non-UTF-8, CR, BOM, separator
        p = rng.randrange(1, len(body))
        out = body[:p] + rng.choice([b"\x00", b"\xff", b"\r", b"\xef\xbb\xbf", sep, b"\x85", b'"']) + body[p:]
    else:  # a huge number in place of one value
        big = rng.choice([b"9" * 40, b"1e999", b"-" + b"9" * 30, b"123456789012345678901234567890.5"])
        if json_values:
            k = fields[i].find(b'":')
            fields[i] = fields[i][: k + 2] + big if k >= 0 else big
        else:
            fields[i] = big
        out = sep.join(fields)
    out = bytes(c if c not in forbid else 0x7F for c in out)
    if out[:1] != body[:1]:
        out = body[:1] + out
    return out


class Mutated:
    """A mutated copy of real lines with the independent bookkeeping of what was done."""

    def __init__(self, lines: list[bytes], is_record: Callable[[bytes], bool], sep: bytes, seed: int,
                 rate: float, json_values: bool = False, forbid: bytes = b"\n") -> None:
        rng = random.Random(seed)
        self.lines: list[bytes] = []
        self.records = 0  # record lines written (the independent count)
        self.kept: list[int] = []  # indexes (into ``lines``) of record lines left unmutated
        for n, ln in enumerate(lines):
            if not is_record(ln):
                self.lines.append(ln)
                continue
            self.records += 1
            end = ln[len(ln.rstrip(b"\r\n")) :] or b"\n"
            if rng.random() < rate:
                self.lines.append(mutate(ln.rstrip(b"\r\n"), sep, rng, json_values, forbid) + end)
            else:
                self.kept.append(n)
                self.lines.append(ln)


def _raw(shared: Path, rel: str | Path) -> bytes:
    p = Path(rel) if Path(rel).is_absolute() else shared / rel
    if not p.is_file():
        pytest.skip(f"{p} not present")
    raw = p.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _lines(shared: Path, rel: str | Path) -> list[bytes]:
    return _raw(shared, rel).splitlines(keepends=True)


def _rows(batches: list[FlowBatch]) -> list[dict[str, Any]]:
    return [r for b in batches for r in b.iter_rows()]


def _key(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)


def _canonical_ranges(batches: list[FlowBatch], amounts: bool = True) -> None:
    """Emitted values stay canonical whatever the input: ports -1..65535, amounts NaN or >= 0."""
    if not batches:
        return
    b = FlowBatch.concat(batches)
    for c in ("orig_p", "resp_p"):
        assert ((b[c] >= -1) & (b[c] <= 65535)).all(), c
    if amounts:
        for c in ("duration", "orig_bytes", "resp_bytes", "orig_pkts", "resp_pkts", "orig_ip_bytes", "resp_ip_bytes"):
            v = b[c]
            assert (np.isnan(v) | ((v >= 0) & np.isfinite(v))).all(), c


def _identity(st: ReadStats, records: int) -> None:
    skipped = sum(st.skipped.values()) - st.skipped["truncated-input"]
    assert st.read == records, st.as_dict()
    assert st.read == st.emitted + skipped, st.as_dict()


def _same_batches(got: list[FlowBatch], want: list[FlowBatch], sizes: bool = True) -> None:
    """Same records column for column (bit-identical floats); with ``sizes`` also the same batch sizes."""
    if sizes:
        assert [len(b) for b in got] == [len(b) for b in want]
    if not got:
        return
    a, b = FlowBatch.concat(got), FlowBatch.concat(want)
    for f in FIELDS:
        x, y = a.cols[f.name], b.cols[f.name]
        assert x.dtype == y.dtype, f.name
        if x.dtype.kind == "f":
            assert x.tobytes() == y.tobytes(), f.name
        else:
            assert x.tolist() == y.tolist(), f.name
    assert (a.label is None) == (b.label is None)
    if a.label is not None and b.label is not None:
        assert a.label.tolist() == b.label.tolist()
    assert (a.origin is None) == (b.origin is None)
    if a.origin is not None and b.origin is not None:
        assert a.origin.tolist() == b.origin.tolist()


def _by_uid(batches: list[FlowBatch]) -> dict[Any, list[bytes]]:
    out: dict[Any, list[bytes]] = defaultdict(list)
    for r in _rows(batches):
        out[r["uid"]].append(_key(r))
    return out


# ------------------------------------------------------------------------------- Zeek TSV


def _tsv_is_record(ln: bytes) -> bool:
    s = ln.strip()
    return bool(s) and not s.startswith(b"#")


def _paths_agree(paths: dict[str, tuple[list[FlowBatch], ReadStats]]) -> tuple[list[FlowBatch], ReadStats]:
    """The bytes path's batches and stats, after checking the str and reference paths give the same."""
    got, st = paths["bytes"]
    for name in ("str", "reference"):
        _same_batches(paths[name][0], got)
        assert paths[name][1].as_dict() == st.as_dict(), name
    return got, st


def _tsv_paths(lines: list[bytes], batch_size: int, mp: pytest.MonkeyPatch) -> dict[str, tuple[list[FlowBatch], ReadStats]]:
    """The same lines through the bytes tier, the small-block str tier and the row-by-row reference."""
    out = {}
    for name, small, fast in (("bytes", 1, True), ("str", 10**9, True), ("reference", 1, False)):
        with mp.context() as m:
            m.setattr(zeek_tsv_fast, "SMALL_BLOCK", small)
            if not fast:
                m.setattr(zeek_tsv, "_fast_batch", lambda rows, hdr: None)
            st = ReadStats()
            out[name] = (list(zeek_tsv.read_lines(iter(lines), st, "m", batch_size)), st)
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rate", RATES)
def test_zeek_tsv_mutated_records(seed: int, rate: float, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _lines(SAMPLES, TSV_REAL)
    orig = _by_uid(list(zeek_tsv.read_lines(lines, ReadStats())))
    m = Mutated(lines, _tsv_is_record, b"\t", seed, rate)
    paths = _tsv_paths(m.lines, [64, 1000][seed % 2], monkeypatch)
    got, st = _paths_agree(paths)
    _identity(st, m.records)
    assert sum(st.skipped.values()) > 0
    _canonical_ranges(got)
    out = _by_uid(got)
    for n in m.kept:
        uid = lines[n].split(b"\t")[1].decode()
        assert orig[uid][0] in out[uid], f"unmutated line {n + 1} lost or altered"


@pytest.mark.parametrize("seed", range(12))
def test_zeek_tsv_mutated_header(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mutated header line (#fields names deleted, duplicated, swapped, bit-flipped; odd
    #separator, #unset_field, #path): data lines are still all accounted for, on every path."""
    lines = _lines(SAMPLES, TSV_REAL)[:300]
    rng = random.Random(seed)
    heads = [i for i, ln in enumerate(lines) if ln.startswith(b"#")]
    out = list(lines)
    for i in rng.sample(heads, 2):
        out[i] = mutate(lines[i].rstrip(b"\n"), b"\t", rng) + b"\n"
    records = sum(1 for ln in out if _tsv_is_record(ln))
    paths = _tsv_paths(out, 100, monkeypatch)
    got, st = _paths_agree(paths)
    _identity(st, records)
    _canonical_ranges(got)


def test_zeek_tsv_stream_switching_format_mid_way(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A #fields change (columns permuted), a JSON record, #close then more lines, a BOM line, CRLF,
    a NUL-bearing line and a 10 MB line in one stream: each counted, the rest read unchanged."""
    lines = _lines(SAMPLES, TSV_REAL)
    head = [ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")]
    body = [ln for ln in lines if not ln.startswith(b"#")][:400]
    fields = next(ln for ln in head if ln.startswith(b"#fields")).rstrip(b"\n").split(b"\t")[1:]
    perm = list(range(len(fields)))
    random.Random(8).shuffle(perm)
    json_line = _lines(shared, JSON_REAL)[0]

    def permuted(ln: bytes) -> bytes:
        v = ln.rstrip(b"\n").split(b"\t")
        return b"\t".join(v[i] for i in perm) + b"\n"

    stream = [*head, *body[:100], json_line, b"#close\t2024-08-16-09-45-01\n", *body[100:150]]
    stream += [b"#fields\t" + b"\t".join(fields[i] for i in perm) + b"\n"]
    rest = [permuted(ln) for ln in body[150:]]  # every line after the new #fields is in its order
    stream += rest[:100]
    stream += [b"\xef\xbb\xbf" + rest[100], rest[101].replace(b"\t", b"\t\x00", 1), b"1" + b"\t" * 10 + b"9" * (10 << 20) + b"\n"]
    stream += [ln.rstrip(b"\n") + b"\r\n" for ln in rest[102:150]] + [b"\n", b"   \n"] + rest[150:]
    records = 400 + 1 + 1  # body, the JSON line, the 10 MB line (the BOM and NUL lines are body lines)
    paths = _tsv_paths(stream, 128, monkeypatch)
    got, st = _paths_agree(paths)
    _identity(st, records)
    assert st.skipped["column-count"] == 1 and st.skipped["line-too-long"] == 1
    assert st.ignored["blank"] == 2
    want = _by_uid(list(zeek_tsv.read_lines([*head, *body], ReadStats())))
    out = _by_uid(got)
    for ln in body[:250] + body[252:]:  # all but the BOM and the NUL line: the same records
        uid = ln.split(b"\t")[1].decode()
        assert want[uid][0] in out[uid], uid
    assert st.emitted == 398 and sum(st.skipped.values()) == 4  # BOM and NUL land in numeric columns here


# ------------------------------------------------------------------------------- JSON readers


def _json_is_record(ln: bytes) -> bool:
    return ln[:1] == b"{"


#: the documented msgspec/orjson difference (zeek_json and eve docstrings): a number beyond
#: float or 64-bit range in a key the reader ignores is read by msgspec, bad-json for orjson
_OUT_OF_RANGE = re.compile(rb"[0-9]{20,}|[0-9][eE]\+?[0-9]{3,}")


def _json_paths(mod: Any, stream: list[bytes], batch_size: int) -> dict[bool, tuple[list[FlowBatch], ReadStats]]:
    """Both paths (chunked msgspec, orjson reference) on ``stream``; they must agree record for
    record and stat for stat on it, leaving out only the lines of the documented difference."""

    def run(lines: list[bytes], fast: bool) -> tuple[list[FlowBatch], ReadStats]:
        st = ReadStats()
        out = list(mod.read_lines(lines, st, "m", batch_size, use_msgspec=fast))
        assert all(len(b) <= batch_size for b in out)
        return out, st

    comparable = [ln for ln in stream if not _OUT_OF_RANGE.search(ln)]
    a, b = run(comparable, True), run(comparable, False)
    _same_batches(a[0], b[0], sizes=False)  # coalescing may differ, records must not
    assert a[1].as_dict() == b[1].as_dict()
    return {fast: run(stream, fast) for fast in (True, False)}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rate", RATES)
def test_zeek_json_mutated_records(shared: Path, seed: int, rate: float, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("msgspec")
    lines = _lines(shared, JSON_REAL)
    orig = _by_uid(list(zeek_json.read_lines(lines, ReadStats(), use_msgspec=False)))
    m = Mutated(lines, _json_is_record, b",", seed, rate, json_values=True)
    # a TSV line, an eve flow line and a notice line in the JSON stream: counted, not lost
    extra = [_lines(SAMPLES, TSV_REAL)[-2], _lines(shared, EVE_REAL)[0], _lines(shared, "zeek/slips/test9-mixed.notice.json.log")[0]]
    stream = m.lines[:50] + extra + m.lines[50:]
    caplog.set_level(logging.ERROR)
    res = _json_paths(zeek_json, stream, 100)
    for _, st in res.values():
        _identity(st, m.records + len(extra))
    got, st = res[True]
    assert st.skipped["not-conn-log"] >= 2 and st.skipped["bad-json"] >= 1
    _canonical_ranges(got)
    out = _by_uid(got)
    for n in m.kept:
        uid = orjson.loads(lines[n])["uid"]
        assert orig[uid][0] in out[uid], f"unmutated line {n + 1} lost or altered"


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rate", RATES)
def test_eve_mutated_records(shared: Path, seed: int, rate: float, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("msgspec")
    lines = _lines(shared, EVE_REAL)[:2500]
    caplog.set_level(logging.ERROR)
    base = list(eve.read_lines(lines, ReadStats(), "m", use_msgspec=False))
    orig = {o: _key(r) for b in base for o, r in zip(b.origin.tolist(), b.iter_rows(), strict=True)}  # type: ignore[union-attr]
    m = Mutated(lines, _json_is_record, b",", seed, rate, json_values=True)
    res = _json_paths(eve, m.lines, 300)
    for _, st in res.values():
        # independent: every line is a flow record read (emitted or skipped) or an ignored event
        assert st.read + sum(st.ignored.values()) == m.records, st.as_dict()
        assert st.read == st.emitted + sum(st.skipped.values())
    got, st = res[True]
    assert sum(st.skipped.values()) > 0
    # ports only: eve passes a negative duration (end before start) or count through unchecked
    # (the Zeek readers count those as ``negative:<col>`` skips; reported, not changed here)
    _canonical_ranges(got, amounts=False)
    out = {o: _key(r) for b in got for o, r in zip(b.origin.tolist(), b.iter_rows(), strict=True)}  # type: ignore[union-attr]
    kept_flows = [f"m:{n + 1}" for n in m.kept if f"m:{n + 1}" in orig]
    assert kept_flows
    for o in kept_flows:
        assert out.get(o) == orig[o], f"unmutated flow at {o} lost or altered"


# ------------------------------------------------------------------------------- CIC CSV


def _cic_read(data: bytes, tmp_path: Path, name: str = "m.csv") -> tuple[list[FlowBatch], ReadStats]:
    p = tmp_path / name
    p.write_bytes(data)
    st = ReadStats()
    return list(cic_csv.read_path(p, st, batch_size=500)), st


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("rel", [CIC_REAL, CIC17])
def test_cic_mutated_rows(shared: Path, tmp_path: Path, seed: int, rate: float, rel: str) -> None:
    lines = _lines(shared, rel)[:1200]
    orig, _ = _cic_read(b"".join(lines), tmp_path, "orig.csv")
    m = Mutated([b"#", *lines[1:]], lambda ln: ln != b"#", b",", seed, rate, forbid=b'\n\r"')
    m.lines[0] = lines[0]
    got, st = _cic_read(b"".join(m.lines), tmp_path)
    _identity(st, m.records)
    assert sum(st.skipped.values()) > 0
    _canonical_ranges(got, amounts=False)  # ports only: CIC amounts are not range-checked (reported)
    if rel == CIC_REAL:  # uid = file:line, so every unmutated row can be found again
        want = {r["uid"].replace("orig.csv", "m.csv"): _key({**r, "uid": None}) for r in _rows(orig)}
        out = {r["uid"]: _key({**r, "uid": None}) for r in _rows(got)}
        for n in m.kept:
            uid = f"m.csv:{n + 1}"
            assert out.get(uid) == want[uid], f"unmutated row {n + 1} lost or altered"
    else:
        assert st.emitted >= len(m.kept)


def test_cic_quotes_and_huge_cells(shared: Path, tmp_path: Path) -> None:
    """An unbalanced quote, a 10 MB cell and NUL/non-UTF-8 bytes: counted rows, no exception."""
    lines = _lines(shared, CIC_REAL)[:300]
    bad = [lines[0], *lines[1:100], b'"' + lines[100], *lines[101:150], b"1," + b"9" * (10 << 20) + b"\n"]
    bad += [lines[150].replace(b",", b",\x00", 1), lines[151].replace(b",", b",\xff", 1), *lines[152:]]
    got, st = _cic_read(b"".join(bad), tmp_path)
    assert st.read == st.emitted + sum(st.skipped.values())
    assert st.emitted >= 99 and sum(st.skipped.values()) >= 2
    _canonical_ranges(got, amounts=False)
