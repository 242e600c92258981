"""The vectorised Zeek TSV fast path must give exactly what the row-by-row path gives."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from sidecar.flow import FIELDS, FlowBatch
from sidecar.sources import zeek_tsv
from sidecar.sources.base import ReadStats

DATA = Path("/work/shared/data")
MAX_LINES = 30_000


def _conn_logs() -> list[Path]:
    out: list[Path] = []
    for sub in ("zeek", "zeek-labeled"):
        root = DATA / sub
        if root.is_dir():
            out.extend(p for p in sorted(root.rglob("*conn*")) if p.is_file() and ".json" not in p.name)
    return out


def _read(path: Path, fast: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[FlowBatch, ReadStats]:
    if not fast:
        monkeypatch.setattr(zeek_tsv, "_fast_batch", lambda rows, hdr: None)
    st = ReadStats()
    with zeek_tsv.open_path(path) as f:
        lines = itertools.islice(zeek_tsv._safe_lines(f, st, str(path)), MAX_LINES)
        batches = list(zeek_tsv.read_lines(lines, st, str(path), batch_size=1000))
    monkeypatch.undo()
    return FlowBatch.concat(batches), st


def _assert_same(a: FlowBatch, b: FlowBatch) -> None:
    assert len(a) == len(b)
    for f in FIELDS:
        assert a.cols[f.name].dtype == b.cols[f.name].dtype, f.name
        np.testing.assert_array_equal(a.cols[f.name], b.cols[f.name], err_msg=f.name)
    if a.label is None or b.label is None:
        assert a.label is None and b.label is None
    else:
        np.testing.assert_array_equal(a.label, b.label)


LOGS = _conn_logs()


@pytest.mark.skipif(not LOGS, reason="no shared Zeek data")
@pytest.mark.parametrize("path", LOGS, ids=lambda p: str(p.relative_to(DATA)))
def test_fast_path_matches_row_by_row(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, st_fast = _read(path, True, monkeypatch)
    slow, st_slow = _read(path, False, monkeypatch)
    _assert_same(fast, slow)
    assert st_fast.as_dict() == st_slow.as_dict()


HEADER = [
    b"#separator \\x09\n",
    b"#set_separator\t,\n",
    b"#empty_field\t(empty)\n",
    b"#unset_field\t-\n",
    b"#path\tconn\n",
    b"#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\t"
    b"duration\torig_bytes\tresp_bytes\tconn_state\thistory\torig_pkts\tresp_pkts\n",
]


def _row(i: int, dur: str = "1.5", port: str = "80") -> bytes:
    return (
        f"{1600000000 + i}.25\tC{i}\t10.0.0.1\t{1024 + i}\t10.0.0.2\t{port}\ttcp\t-\t"
        f"{dur}\t10\t(empty)\tSF\tShADadfF\t3\t4\n"
    ).encode()


def test_one_bad_row_is_skipped_others_emitted() -> None:
    rows = [_row(i) for i in range(20)]
    rows[7] = _row(7, dur="-3")
    rows[12] = _row(12, port="70000")
    st = ReadStats()
    fb = FlowBatch.concat(list(zeek_tsv.read_lines(HEADER + rows, st, "x.log")))
    assert len(fb) == 18
    assert st.read == 20 and st.emitted == 18
    assert st.skipped["negative:duration"] == 1
    assert st.skipped["bad-port:resp_p"] == 1
    assert list(fb["uid"]) == [f"C{i}" for i in range(20) if i not in (7, 12)]
    assert np.isnan(fb["resp_bytes"]).all()
    assert (fb["orig_flags"] >= 0).all()


def test_batch_boundaries_unchanged_with_bad_row() -> None:
    rows = [_row(i) for i in range(25)]
    rows[3] = _row(3, dur="abc")
    sizes = [len(b) for b in zeek_tsv.read_lines(HEADER + rows, ReadStats(), "", batch_size=10)]
    assert sizes == [10, 10, 4]


@pytest.mark.parametrize("col", ["duration", "orig_bytes", "resp_pkts", "orig_p", "resp_p"])
@pytest.mark.parametrize(
    "v", [0, 1, 80, 65535, 65536, -1, 0.5, 2.0, -0.0, 1e16, 4e8, float("nan"), float("inf")]
)
def test_json_numeric_fast_path_matches_reference(col: str, v: object) -> None:
    from sidecar.sources import zeek_json

    def ref(v: object) -> object:
        if col in zeek_tsv.PORT_COLS:
            return zeek_tsv.parse_port(repr(v) if isinstance(v, float) else str(v), col)
        return zeek_tsv.parse_float(repr(float(v)), col)  # type: ignore[arg-type]

    try:
        want: object = ref(v)
    except zeek_tsv.BadValue as e:
        want = str(e)
    try:
        got: object = zeek_json._num(v, col)
    except zeek_tsv.BadValue as e:
        got = str(e)
    assert got == want and type(got) is type(want)
