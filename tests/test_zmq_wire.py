"""The msgpack wire schema: round trips on real records, hostile input → ProtocolError only."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.errors import ProtocolError
from sidecar.flow import FIELDS, FlowBatch
from sidecar.scorer import make_scorer
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path
from sidecar.transports import zmq_wire as wire
from sidecar.verdict import VerdictBatch

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sidecar" / "data" / "samples"
MODEL = REPO / "sidecar" / "data" / "model" / "bnn.onnx"


def real_batches(shared: Path) -> list[FlowBatch]:
    paths = [SAMPLES / "ctu-sme-11.conn.log.labeled.gz", SAMPLES / "vertical-portscan.conn.json.log",
             SAMPLES / "slips-test6-malicious.eve.json.gz", SAMPLES / "horizontal-portscan.conn.log",
             shared / "cic-ids2017-improved" / "Botnet_736.csv.gz"]
    out = []
    for p in paths:
        out.append(next(iter(read_path(p, "auto", ReadStats(), batch_size=4096))))
    return out


def same_col(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or len(a) != len(b):
        return False
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return a.tolist() == b.tolist()


def assert_same_flows(a: FlowBatch, b: FlowBatch, extras: bool = True) -> None:
    assert a.source == b.source and len(a) == len(b)
    for f in FIELDS:
        assert same_col(a.cols[f.name], b.cols[f.name]), f.name
    for x, y in ((a.label, b.label), (a.origin, b.origin)):
        assert (x is None) == (y is None)
        if x is not None and y is not None:
            assert x.tolist() == y.tolist()
    if extras:
        assert sorted(a.extra) == sorted(b.extra)
        for k in a.extra:
            assert np.array_equal(np.asarray(a.extra[k], dtype=np.float64), np.asarray(b.extra[k], dtype=np.float64),
                                  equal_nan=True), k


def test_flows_round_trip_real_records_all_formats(shared: Path) -> None:
    batches = real_batches(shared)
    assert {b.source for b in batches} >= {"zeek-tsv", "zeek-json", "eve", "cic-csv"}
    for b in batches:
        h, obj = wire.unpack(wire.encode_flows(b, "sensor-1", 7))
        assert h == wire.Header("flows", "sensor-1", 7, len(b))
        assert_same_flows(b, wire.decode_flows(h, obj))
    # missing stays missing: the real records do have NaN, -1 and None, and they survive
    tsv = wire.decode_flows(*wire.unpack(wire.encode_flows(batches[0], "s", 0)))
    assert np.isnan(tsv["orig_bytes"]).sum() == 6 and (tsv["orig_flags"] == -1).sum() == 41
    isnone = np.frompyfunc(lambda x: x is None, 1, 1)
    assert isnone(tsv["service"]).sum() == 762 and isnone(tsv["flow_state"]).all()
    eve = wire.decode_flows(*wire.unpack(wire.encode_flows(batches[2], "s", 0)))
    assert isnone(eve["history"]).all() and not isnone(eve["flow_state"]).any()


def test_private_extras_stay_local() -> None:
    b = next(iter(read_path(SAMPLES / "horizontal-portscan.conn.log", "auto", ReadStats())))
    b.extra["_zmq_seq"] = np.zeros(len(b), dtype=np.int64)
    assert wire.decode_flows(*wire.unpack(wire.encode_flows(b, "s", 0))).extra == {}


def test_verdicts_round_trip_real_scores(shared: Path) -> None:
    scorer = make_scorer(MODEL, "numpy")
    for b in real_batches(shared):
        v = scorer.score(b)
        rows = np.arange(len(v), dtype=np.int32)[::-1].copy()
        part = wire.decode_verdicts(*wire.unpack(wire.encode_verdicts(v, "s", 3, rows, len(v))))
        assert part.total == len(v) and part.rows.tolist() == rows.tolist() and part.header.seq == 3
        w = part.verdicts
        assert_same_flows(b, w.flows, extras=False)
        for name in ("score", "score2", "malicious", "cls", "stage"):
            assert same_col(getattr(v, name), getattr(w, name)), name
        assert w.model == v.model
        assert list(w.iter_json()) == list(v.iter_json())


def test_reject_and_ack_round_trip() -> None:
    h, obj = wire.unpack(wire.encode_reject("s", 5, 12, "score-error", "boom"))
    assert (h.kind, h.seq, h.n) == ("reject", 5, 12) and wire.decode_reject(h, obj) == ("score-error", "boom")
    acks = [(1, "ok", None), (2, "rejected", "protocol")]
    assert wire.decode_acks(*wire.unpack(wire.encode_acks("s", acks))) == acks


# ----------------------------------------------------------------------------- hostile input


@pytest.fixture(scope="module")
def good() -> bytes:
    b = next(iter(read_path(SAMPLES / "vertical-portscan.conn.json.log", "auto", ReadStats())))
    return wire.encode_flows(b, "s", 1)


def decode_any(data: bytes) -> Any:
    h, obj = wire.unpack(data)
    return {"flows": wire.decode_flows, "verdicts": wire.decode_verdicts, "reject": wire.decode_reject,
            "ack": wire.decode_acks}[h.kind](h, obj)


def mutate(good: bytes, fn: Any) -> bytes:
    obj = msgpack.unpackb(good, raw=False)
    fn(obj)
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


@pytest.mark.parametrize("edit", [
    lambda o: o.update(v=2), lambda o: o.update(v=0), lambda o: o.update(v="1"), lambda o: o.pop("v"),
    lambda o: o.update(kind="flow"), lambda o: o.update(stream=""), lambda o: o.update(stream="a\0b"),
    lambda o: o.update(stream="x" * 201), lambda o: o.update(seq=-1), lambda o: o.update(seq=1.5),
    lambda o: o.update(n=o["n"] + 1), lambda o: o.update(n=wire.MAX_ROWS + 1), lambda o: o.update(n=True),
    lambda o: o["cols"].pop("ts"), lambda o: o.update(cols=[]),
    lambda o: o["cols"].update(ts=["<f4", o["cols"]["ts"][1][:-4]]),           # wrong dtype
    lambda o: o["cols"].update(ts=["|O", o["cols"]["ts"][1]]),                 # object dtype
    lambda o: o["cols"].update(orig_p=["<i4", o["cols"]["orig_p"][1][:-1]]),   # wrong byte length
    lambda o: o["cols"].update(uid=o["cols"]["uid"][:-1]),                     # string list too short
    lambda o: o["cols"]["uid"].__setitem__(0, 5),                              # non-string item
    lambda o: o["cols"]["uid"].__setitem__(0, b"x"),
    lambda o: o["cols"].update(uid=["<f8", b"\0" * 8 * o["n"]]),              # numeric where str expected
    lambda o: o["cols"].update(ts=[1.0] * o["n"]),                             # list where numeric expected
    lambda o: o.update(label=[None]), lambda o: o.update(source=3),
    lambda o: o.update(extra={"_x": ["<f8", b""]}), lambda o: o.update(extra={"x": ["<c16", b""]}),
])
def test_malformed_flows_raise_protocol_error(good: bytes, edit: Any) -> None:
    with pytest.raises(ProtocolError):
        decode_any(mutate(good, edit))


def test_truncated_and_trailing_bytes(good: bytes) -> None:
    for cut in range(0, len(good), max(1, len(good) // 300)):
        with pytest.raises(ProtocolError):
            decode_any(good[:cut])
    with pytest.raises(ProtocolError):
        decode_any(good + b"\x00")
    for junk in (b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb({1: 2}), msgpack.packb({"v": 1})):
        with pytest.raises(ProtocolError):
            decode_any(junk)


def test_bad_verdict_rows_and_acks() -> None:
    b = next(iter(read_path(SAMPLES / "horizontal-portscan.conn.log", "auto", ReadStats())))
    n = len(b)
    v = VerdictBatch(b, np.zeros(n), np.full(n, np.nan), np.zeros(n, bool), np.full(n, "benign", dtype=object),
                     np.ones(n, np.int8), "m")
    for rows, total in ((np.arange(n) + 1, n), (np.zeros(n, np.int32), n), (np.arange(n), n - 1)):
        with pytest.raises(ProtocolError):
            decode_any(wire.encode_verdicts(v, "s", 0, rows, total))
    for acks in ([[1, "maybe", None]], [[-1, "ok", None]], [[1, "ok"]], "x"):
        with pytest.raises(ProtocolError):
            decode_any(msgpack.packb({"v": 1, "kind": "ack", "stream": "s", "seq": 0, "n": 1, "acks": acks}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_fuzz_random_bytes(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_any(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_byte_flips_of_a_real_message(good: bytes, data: st.DataObject) -> None:
    buf = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    try:
        out = decode_any(bytes(buf))
    except ProtocolError:
        return
    assert isinstance(out, FlowBatch)  # a flip that keeps it valid must still give a valid batch


def test_docs_embed_the_schema_table() -> None:
    doc = (REPO / "docs" / "ZMQ.md").read_text()
    assert wire.schema_markdown() in doc
