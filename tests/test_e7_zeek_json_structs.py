"""The two Zeek JSON msgspec structs come from one field table and keep their own strictness.

``zeek_json._ConnS`` (line by line, lenient: a line that does not fit goes to the orjson
path) and ``zeek_json_chunks._ConnC`` (chunked, strict: such a line fails the whole chunk in
C) are both built by ``zeek_json.conn_struct`` from ``zeek_json.CONN_FIELDS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

msgspec = pytest.importorskip("msgspec")

from sidecar.sources import zeek_json, zeek_json_chunks  # noqa: E402
from sidecar.sources.base import ReadStats  # noqa: E402

REAL = "zeek/slips/test9-mixed.conn.json.log"
NAMES = tuple(f for f, _, _ in zeek_json.CONN_FIELDS)
KEYS = tuple(k for _, k, _ in zeek_json.CONN_FIELDS)


def test_both_structs_have_the_table_fields_and_keys() -> None:
    line, chunk = zeek_json._ConnS, zeek_json_chunks._ConnC
    for s in (line, chunk):
        assert s.__struct_fields__ == NAMES
        assert s.__struct_encode_fields__ == KEYS
        assert s.__struct_config__.gc is False
    assert {f: k for f, k in zip(NAMES, KEYS, strict=True) if f != k} == zeek_json.RENAME
    # the record values come first, named as the canonical columns columns_batch fills
    assert NAMES[: len(zeek_json._FIELDS)] == zeek_json._FIELDS
    # every kind of the table has a type in both kind maps, and no other kind is declared
    kinds = {k for _, _, k in zeek_json.CONN_FIELDS}
    assert set(zeek_json.LINE_KINDS) == kinds == set(zeek_json_chunks.CHUNK_KINDS)


def test_strictness_differs_only_where_intended() -> None:
    line = msgspec.inspect.type_info(zeek_json._ConnS).fields
    chunk = msgspec.inspect.type_info(zeek_json_chunks._ConnC).fields
    required = {f.name for f in chunk if f.required}
    assert required == {"orig_h"} and not any(f.required for f in line)
    kinds = {f: k for f, _, k in zeek_json.CONN_FIELDS}
    for a, b in zip(line, chunk, strict=True):
        if kinds[a.name] in ("ts", "str"):
            assert (a.type, a.required, a.default) == (b.type, b.required, b.default), a.name
        elif kinds[a.name] != "label":
            assert (a.type, a.required, a.default) != (b.type, b.required, b.default), a.name


def _real_lines(shared: Path) -> list[bytes]:
    path = shared / REAL
    assert path.exists(), f"{path} missing from the shared data"
    lines = [ln for ln in path.read_bytes().splitlines() if ln.startswith(b"{")]
    assert len(lines) > 100
    return lines


def _edit(line: bytes, **changes: Any) -> bytes:
    obj = orjson.loads(line)
    for k, v in changes.items():
        k = k.replace("__", ".")
        if v is KeyError:
            obj.pop(k, None)
        else:
            obj[k] = v
    return orjson.dumps(obj)


@pytest.mark.parametrize(
    ("change", "line_ok", "chunk_ok"),
    [
        ({}, True, True),
        ({"id__orig_h": KeyError}, True, False),  # line struct: UNSET, orjson path decides
        ({"id__resp_p": 70000}, False, True),  # chunk struct: range checked per batch instead
        ({"orig_pkts": -1}, False, True),
        ({"duration": 1e12}, False, True),
        ({"_path": "dns"}, True, False),  # line struct: Any, the reader checks the value
        ({"detailed-label": "x"}, True, False),
        ({"id_orig_h": "10.0.0.1"}, True, False),
        ({"label": "Malicious"}, True, True),
        ({"orig_bytes": "12"}, False, False),  # a string for a number: no struct takes it
    ],
)
def test_each_struct_keeps_its_behaviour(
    change: dict[str, Any], line_ok: bool, chunk_ok: bool, shared: Path
) -> None:
    errors = (msgspec.ValidationError, msgspec.DecodeError)
    for raw in _real_lines(shared)[:40]:
        ln = _edit(raw, **change)
        try:
            zeek_json._DECODER(ln)
            got_line = True
        except errors:
            got_line = False
        try:
            zeek_json_chunks._LINES_DECODER(ln)
            got_chunk = True
        except errors:
            got_chunk = False
        assert (got_line, got_chunk) == (line_ok, chunk_ok), (change, ln[:120])


def test_chunked_and_line_readers_agree_on_real_lines(shared: Path) -> None:
    lines = _real_lines(shared)
    st_a, st_b = ReadStats(), ReadStats()
    a = list(zeek_json.read_lines(lines, st_a, batch_size=100))
    b = list(zeek_json.read_lines_one_by_one(lines, st_b, batch_size=100))
    rows_a = [r for fb in a for r in fb.iter_rows()]
    rows_b = [r for fb in b for r in fb.iter_rows()]
    assert len(rows_a) == len(lines) and rows_a == rows_b
    assert (st_a.read, st_a.emitted) == (st_b.read, st_b.emitted) == (len(lines), len(lines))
