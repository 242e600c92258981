"""Bulk/bytes Zeek TSV reader == row-by-row reference, column for column, stats and batch sizes.

The reference is the reader's own per-line code (``_Reader.line``: classification,
column count, ``convert``) with the vectorised conversion switched off. Inputs: every
real Zeek TSV log under the shared data (plain and gzip), and hostile variants of a
real log (seeded mutations; generated data only for fuzzing).
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED

from sidecar.flow import FIELDS, FlowBatch
from sidecar.sources import zeek_tsv, zeek_tsv_fast
from sidecar.sources.base import ReadStats

SAMPLES = Path(zeek_tsv.__file__).resolve().parent.parent / "data" / "samples"
SAMPLE = SAMPLES / "ctu-sme-11.conn.log.labeled.gz"  # real, labelled, 765 records
IOT = (
    SHARED / "zeek-labeled" / "iot-23" / "CTU-Honeypot-Capture-4-1" / "conn.log.labeled.gz"
)  # combined column


def _tsv_logs() -> list[Path]:
    out: list[Path] = []
    for sub in ("zeek", "zeek-labeled"):
        root = SHARED / sub
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*")):
            if p.is_file() and _head(p).startswith(b"#separator"):
                out.append(p)
    return out


def _head(p: Path) -> bytes:
    try:
        with zeek_tsv.open_path(p) as f:
            return f.read(16)
    except (OSError, EOFError):
        return b""


def _lines(p: Path) -> list[bytes]:
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.splitlines(keepends=True)


def _fast(lines: list[bytes], batch_size: int) -> tuple[list[FlowBatch], ReadStats]:
    st = ReadStats()
    return list(zeek_tsv.read_lines(iter(lines), st, "x", batch_size)), st


def _reference(
    lines: list[bytes], batch_size: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[FlowBatch], ReadStats]:
    st = ReadStats()
    with monkeypatch.context() as mp:
        mp.setattr(zeek_tsv, "_fast_batch", lambda rows, hdr: None)
        rd = zeek_tsv._Reader(st, "x", batch_size)

        def run() -> Iterator[FlowBatch]:
            for ln in lines:
                yield from rd.line(ln)
            yield from rd.finish()

        out = list(run())
    return out, st


def _assert_same(got: list[FlowBatch], want: list[FlowBatch]) -> None:
    assert [len(b) for b in got] == [len(b) for b in want]
    a, b = FlowBatch.concat(got), FlowBatch.concat(want)
    for f in FIELDS:
        assert a.cols[f.name].dtype == b.cols[f.name].dtype, f.name
        np.testing.assert_array_equal(a.cols[f.name], b.cols[f.name], err_msg=f.name)
        if a.cols[f.name].dtype.kind == "f":  # -0.0 vs 0.0 and NaN payloads: bit-identical
            assert a.cols[f.name].tobytes() == b.cols[f.name].tobytes(), f.name
    if a.label is None or b.label is None:
        assert a.label is None and b.label is None
    else:
        assert a.label.tolist() == b.label.tolist()


def _check(lines: list[bytes], monkeypatch: pytest.MonkeyPatch, batch_size: int = 4096) -> ReadStats:
    got, st_got = _fast(lines, batch_size)
    want, st_want = _reference(lines, batch_size, monkeypatch)
    _assert_same(got, want)
    assert st_got.as_dict() == st_want.as_dict()
    return st_got


LOGS = _tsv_logs()


@pytest.fixture(params=["bytes", "str"])
def tier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Force every block through one vectorised tier: the bytes path or the small-block str path."""
    monkeypatch.setattr(zeek_tsv_fast, "SMALL_BLOCK", 1 if request.param == "bytes" else 10**9)
    return str(request.param)


@pytest.mark.skipif(not LOGS, reason="no shared Zeek TSV data")
@pytest.mark.parametrize("path", LOGS, ids=lambda p: str(p.relative_to(SHARED)))
def test_real_logs_match_reference(path: Path, tier: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _check(_lines(path), monkeypatch, 1000)


def test_real_logs_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bytes path really converts real data (else the equivalence above proves nothing)."""
    calls: list[bool] = []
    real = zeek_tsv._fast_batch

    def spy(rows: list[bytes], hdr: object) -> FlowBatch | None:
        fb = real(rows, hdr)
        calls.append(fb is not None)
        return fb

    monkeypatch.setattr(zeek_tsv, "_fast_batch", spy)
    monkeypatch.setattr(zeek_tsv_fast, "SMALL_BLOCK", 1)
    for path in (SAMPLE, SAMPLES / "horizontal-portscan.conn.log", IOT):
        if not path.is_file():
            continue
        calls.clear()
        st = ReadStats()
        n = sum(len(b) for b in zeek_tsv.read_path(path, st))
        assert n == st.emitted > 0
        assert calls and all(calls), path


HOSTILE_VALUES = [
    "-",
    "(empty)",
    "",
    "0",
    "-0",
    "+80",
    " 80",
    "80 ",
    "80.0",
    "80.5",
    "1_000",
    "1e3",
    "1E-3",
    "nan",
    "inf",
    "-inf",
    "Infinity",
    ".",
    "1.",
    ".5",
    "1.2.3",
    "0x10",
    "\u0661\u0662",
    "65535",
    "65536",
    "-1",
    "99999999999999999999",
    "9007199254740993",
    "0.1234567890123456789",
    "123456789012345678",
    "1000000000000001",
    "315360001",
    "XXXXXXXXXX.XXXXXX",
    "\u00a0",
    "a\rb",
    "é",
]


def _mutate(line: bytes, rng: random.Random) -> bytes:
    body = line.rstrip(b"\r\n")
    parts = body.split(b"\t")
    op = rng.randrange(12)
    if op <= 4:  # replace a field with a hostile value
        i = rng.randrange(len(parts))
        parts[i] = rng.choice(HOSTILE_VALUES).encode()
        body = b"\t".join(parts)
    elif op == 5:
        body = b"\t".join(parts[:-1])  # a column short
    elif op == 6:
        body = body + b"\textra"
    elif op == 7:
        body = rng.choice([b" ", b"\t", b"\x0b", b"\xc2\xa0", b"\x1c"]) + body
    elif op == 8:
        body = body.replace(b"\t", b"\t\xff", 1)  # invalid UTF-8
    elif op == 9:
        body = body[: rng.randrange(len(body))]  # truncated
    elif op == 10:
        body = body.replace(b"\t", b"\x00\t", 1)
    else:
        return rng.choice([b"\n", b"\r\n", b"   \n", b"#close\t2020\n", b"# comment\n", b"\xff\xfe\n"])
    return body + rng.choice([b"\n", b"\n", b"\r\n", b"\r\r\n", b""])


@pytest.mark.parametrize("src", [SAMPLE, IOT], ids=["ctu-sme-11", "iot-23"])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("batch_size", [7, 256, 4096])
def test_hostile_variants_match_reference(
    src: Path, seed: int, batch_size: int, tier: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not src.is_file():
        pytest.skip(f"{src} not present")
    lines = _lines(src)
    header = [ln for ln in lines if ln.startswith(b"#") and not ln.startswith(b"#close")]
    body = [ln for ln in lines if not ln.startswith(b"#")][:1500]
    rng = random.Random(seed)
    rate = [0.002, 0.02, 0.2][seed % 3]
    out = list(header)
    for ln in body:
        out.append(_mutate(ln, rng) if rng.random() < rate else ln)
    st = _check(out, monkeypatch, batch_size)
    assert st.read > 0
    if seed % 3:
        assert sum(st.skipped.values()) > 0  # the mutations were really hostile


def test_header_changes_mid_stream(tier: str, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _lines(SAMPLE)
    header = [ln for ln in lines if ln.startswith(b"#")]
    body = [ln for ln in lines if not ln.startswith(b"#")][:300]
    comma = [b"#separator ,\n"] + [ln.replace(b"\t", b",") for ln in header[1:] + body[:50]]
    unset = [ln.replace(b"#unset_field\t-", b"#unset_field\tNA") for ln in header] + [
        ln.replace(b"\t-\t", b"\tNA\t") for ln in body[:50]
    ]
    multi = [b"#separator \\x09\\x09\n"] + [ln.replace(b"\t", b"\t\t") for ln in header[1:] + body[:20]]
    dns = [ln.replace(b"#path\tconn", b"#path\tdns") for ln in header] + body[:20]
    stream = header + body[:100] + comma + header + body[100:] + unset + multi + dns + header + body[:10]
    st = _check(stream, monkeypatch, 64)
    assert st.skipped["not-conn-log"] == 20


def test_lines_without_line_ends_and_long_line(tier: str, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [ln.rstrip(b"\n") for ln in _lines(SAMPLE)][:400]
    long = lines[-1] + b"x" * (zeek_tsv.MAX_LINE + 1) + b"\n"
    st = _check([*lines[:200], long, *lines[200:]], monkeypatch, 100)
    assert st.skipped["line-too-long"] == 1


def test_plain_number_parse_is_bit_identical_to_float() -> None:
    rng = random.Random(3)
    vals = ["0", "1", "0.5", ".5", "1.", "007", "9007199254740991", "123456789.123456"]
    vals += [f"{rng.randrange(10**10)}.{rng.randrange(10**6):06d}" for _ in range(3000)]
    vals += [str(rng.randrange(10**15)) for _ in range(1000)]
    vals += [f"{rng.random() * 10 ** rng.randrange(12):.{rng.randrange(1, 9)}f}" for _ in range(3000)]
    blob = "".join(v + "\n" for v in vals).encode()
    n = len(vals)
    ends = np.flatnonzero(np.frombuffer(blob, dtype=np.uint8) == 10).reshape(n, 1)
    starts = np.concatenate([[0], ends[:-1, 0] + 1]).reshape(n, 1)
    blk = zeek_tsv_fast._Block(blob, starts, ends, b"-", b"(empty)")
    got = zeek_tsv_fast._float_col(blk, 0, "ts")
    assert got is not None
    want = np.array([float(v) for v in vals])
    assert got.tobytes() == want.tobytes()
