"""The columnar BNN::Flow fast path (sidecar/sources/broker_flow.py) against the reference
record-by-record decoder: on every real message shape (Zeek 6 / 7.1 / 8 conn_id, with and
without metadata, single and batched events) and on hypothesis-generated records, the fast
path either gives the same values column for column or declines (None), and it declines
whenever the reference rejects a record; the source then counts the same skips."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from broker_peer import BROKER, flow_events, read_conn_log
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.flow import FIELDS
from sidecar.sources import broker_codec as bc
from sidecar.sources import broker_flow as bf
from sidecar.sources.broker_flow import COLUMNS, BadRecord, decode_flow, decode_flows, decode_message
from sidecar.sources.broker_ws import BrokerWsSource, flow_event

SAMPLES = REPO / "sidecar" / "data" / "samples"
CTU = SAMPLES / "ctu-sme-11.conn.log.labeled.gz"
PORTSCAN = SAMPLES / "horizontal-portscan.conn.log"
URL = "ws://127.0.0.1:9/v1/messages/json"  # never connected: messages are fed to _handle
HAVE_MSGSPEC = bf._FLOW_DECODER is not None
needs_msgspec = pytest.mark.skipif(not HAVE_MSGSPEC, reason="msgspec not installed (the typed path is optional)")


def reference(records: list[Any]) -> tuple[dict[str, list[Any]], list[str]]:
    """Columns of the records the reference decoder accepts, and the skip reasons of the rest."""
    cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    reasons = []
    for r in records:
        try:
            row = decode_flow(r)
        except BadRecord as exc:
            reasons.append(exc.reason)
            continue
        for c in COLUMNS:
            cols[c].append(row[c])
    return cols, reasons


def assert_same_columns(got: dict[str, list[Any]], want: dict[str, list[Any]]) -> None:
    assert set(got) == set(want) == set(COLUMNS)
    for c in COLUMNS:
        g, w = got[c], want[c]
        assert len(g) == len(w), c
        for x, y in zip(g, w, strict=True):
            assert type(x) is type(y) and (x == y or (x != x and y != y)), (c, x, y)


def records_of(msg: str) -> list[Any]:
    ev = flow_event(orjson.loads(msg))
    assert ev is not None
    _, name, args = ev
    return [args[0]] if name == "BNN::flow" else args[0]["data"]


SHAPES = [(CTU, 64, 6, True), (CTU, 64, 5, False), (CTU, 7, 4, True), (PORTSCAN, 1, 6, True),
          (PORTSCAN, 1, 5, False), (PORTSCAN, 1, 4, False), (PORTSCAN, 32, 4, True)]


@pytest.mark.skipif(not BROKER.is_dir(), reason="shared Broker samples not present")
@pytest.mark.parametrize(("path", "batch", "cid", "meta"), SHAPES,
                         ids=[f"{p.name[:8]}-b{b}-cid{c}-meta{int(m)}" for p, b, c, m in SHAPES])
def test_fast_path_equals_reference_on_real_message_shapes(path: Path, batch: int, cid: int, meta: bool) -> None:
    rows = read_conn_log(path)
    n = 0
    for msg in flow_events(rows, batch=batch, conn_id_fields=cid, metadata=meta):
        recs = records_of(msg)
        want, reasons = reference(recs)
        assert reasons == []
        got = decode_flows(recs)
        assert got is not None, "the fast path must take every real record shape"
        assert_same_columns(got, want)
        if HAVE_MSGSPEC:
            whole = decode_message(msg)
            assert whole is not None, "the typed path must take every real message shape"
            assert whole[:2] == ("zeek/bnn/flows", len(recs))
            assert_same_columns(whole[2], want)
        n += len(recs)
    assert n == len(rows)


@pytest.mark.skipif(not BROKER.is_dir(), reason="shared Broker samples not present")
def test_source_gives_the_same_batch_and_skips_with_and_without_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = read_conn_log(PORTSCAN)[:40]
    msgs = list(flow_events(rows, batch=8))
    bad = json.loads(msgs[1])  # one event: records 0 and 5 broken, the other 6 fine
    recs = bad["data"][2]["data"][1]["data"][0]["data"]
    recs[0]["data"][5] = {"@data-type": "timespan", "data": "-5s"}  # negative duration
    recs[5]["data"][4] = {"@data-type": "phone", "data": "555"}  # unknown @data-type
    msgs[1] = json.dumps(bad)

    def run() -> BrokerWsSource:
        src = BrokerWsSource(URL, batch_size=1 << 20)
        for m in msgs:
            src._handle(m)
        return src

    typed = run()
    monkeypatch.setattr("sidecar.sources.broker_ws.decode_message", lambda raw: None)
    columnar = run()
    monkeypatch.setattr("sidecar.sources.broker_ws.decode_flows", lambda records: None)
    reference = run()
    for src in (typed, columnar, reference):
        assert src.stats.read == 40 and dict(src.stats.skipped) == {"bad_record": 1, "unknown_data_type": 1}
    a = typed._take()
    assert len(a) == 38 and typed.stats.emitted == 38
    for b in (columnar._take(), reference._take()):
        assert len(b) == 38
        for f in FIELDS:
            if f.dtype == np.float64:
                np.testing.assert_array_equal(a[f.name], b[f.name])
            else:
                assert a[f.name].tolist() == b[f.name].tolist(), f.name
    assert np.isnan(a["duration"]).any() and (a["orig_p"] >= 0).all()


def test_timespan_grammar_matches_the_codec() -> None:
    assert bf._SPAN.pattern == bc._TIMESPAN_RE.pattern
    assert bf._UNIT_NS == bc._UNITS_NS


def test_inputs_that_used_to_crash_are_counted_bad_records() -> None:
    ok = _valid_record(ts="2023-02-22T00:00:03.714")
    decode_flow(ok)
    for field, value in [(0, {"@data-type": "timestamp", "data": "2023-02-22T00+01:00"}),  # tz-aware
                         (0, {"@data-type": "timestamp", "data": "2023-W08-3T00:00:03"}),  # ISO week date
                         ("port", {"@data-type": "port", "data": "\u00b2/tcp"}),  # isdigit() but not int()
                         ("addr", {"@data-type": "string", "data": "10.0.0.1"})]:  # not an address
        rec = json.loads(json.dumps(ok))
        if field == "port":
            rec["data"][2]["data"][1] = value
        elif field == "addr":
            rec["data"][2]["data"][0] = value
        else:
            rec["data"][field] = value
        with pytest.raises(BadRecord):
            decode_flow(rec)
        assert decode_flows([ok, rec]) is None
    assert decode_flows([ok]) is not None


# --- generated records ------------------------------------------------------------------------


def _tv(tag: str, data: Any) -> dict[str, Any]:
    return {"@data-type": tag, "data": data}


def _valid_record(ts: str = "2023-02-22T00:00:03.714", cid: int = 6, **kw: Any) -> dict[str, Any]:
    ids = [_tv("address", "192.168.1.7"), _tv("port", "51000/tcp"), _tv("address", "2001:db8::1"),
           _tv("port", "443/tcp"), _tv("count", 6), _tv("vector", [])][:cid]
    fields = [_tv("timestamp", ts), _tv("string", "CabC1"), _tv("vector", ids), _tv("enum-value", "tcp"),
              _tv("string", "ssl"), _tv("timespan", "1500ms"), _tv("count", 10), _tv("count", 20),
              _tv("string", "SF"), _tv("string", "ShADadFf"), _tv("count", 3), _tv("count", 130),
              _tv("count", 4), _tv("count", 180)]
    for i, v in kw.items():
        fields[int(i[1:])] = v
    return _tv("vector", fields)


NONE = _tv("none", {})
canon_ts = st.builds(lambda y, mo, d, h, mi, s, ms: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{ms:03d}",
                     st.sampled_from([0, 1, 1969, 1970, 2000, 2023, 2024, 9999]), st.integers(0, 13),
                     st.integers(0, 32), st.integers(0, 25), st.integers(0, 61), st.integers(0, 61),
                     st.integers(0, 999))
# -- well-typed values the reference accepts
good_dt = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))
good_ts = st.one_of(good_dt.map(lambda d: d.isoformat(timespec="milliseconds")),
                    good_dt.map(lambda d: d.isoformat(timespec="seconds")),
                    good_dt.map(lambda d: d.isoformat(timespec="microseconds")))
good_addr = st.ip_addresses().map(str)
good_port = st.one_of(st.builds(lambda n, p: f"{n}/{p}", st.integers(0, 65535), st.sampled_from(["tcp", "udp", "icmp"])),
                      st.just("?/unknown"))
good_span = st.one_of(st.builds(lambda n, u: f"{n}{u}", st.integers(0, 10**8), st.sampled_from(["ns", "us", "ms", "s"])),
                      st.builds(lambda n, u: f"{n}{u}", st.integers(0, 3650), st.sampled_from(["min", "h", "d"])))
good_count = st.one_of(st.integers(0, 10**6), st.just(10**15))
good_text = st.one_of(st.text(max_size=8), st.sampled_from(["SF", "S0", "ShADadFf", "dns", "http", "ShR"]))


def opt(tag: str, data: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(NONE), data.map(lambda d: _tv(tag, d)))


conn_id = st.builds(
    lambda a, b, c, d, extra: _tv("vector", [_tv("address", a), _tv("port", b), _tv("address", c), _tv("port", d), *extra]),
    good_addr, good_port, good_addr, good_port,
    st.sampled_from([[], [_tv("count", 6)], [_tv("count", 17), _tv("vector", [])], [_tv("count", 1), NONE]]),
)
good_record = st.tuples(
    good_ts.map(lambda t: _tv("timestamp", t)), good_text.map(lambda t: _tv("string", t)), conn_id,
    st.sampled_from(["tcp", "udp", "icmp", "TCP", "unknown_transport"]).map(lambda t: _tv("enum-value", t)),
    opt("string", good_text), opt("timespan", good_span), opt("count", good_count), opt("count", good_count),
    opt("string", good_text), opt("string", good_text), *(opt("count", good_count) for _ in range(4)),
).map(lambda f: _tv("vector", list(f)))

# -- what can go wrong in one value
odd = st.one_of(st.integers(), st.none(), st.lists(st.integers(), max_size=2), st.just({}), st.just({"a": 1}),
                st.floats(), st.booleans())
bad_data = st.one_of(
    odd, canon_ts, st.text(max_size=24),
    canon_ts.map(lambda s: s + "Z"), canon_ts.map(lambda s: s.replace("T", " ")), canon_ts.map(lambda s: s[:13] + "+01:00"),
    st.sampled_from(["2023-02-22T00:00:03,714", "today", "2023-W08-3T00:00:03", "\u0663/tcp", "+80/tcp", "80",
                     "70000/tcp", "1/sctp", "?/tcp", "-5s", "1.5s", "\u0663s", "99999999999d", "3650d", "3651d",
                     "2001:DB8::1", "::ffff:10.0.0.1", "10.0.0.256"]),
    st.sampled_from([-1, 10**15 + 1, 2**64, True, 1.0]),
)
tags = st.sampled_from(["count", "string", "none", "timespan", "timestamp", "address", "port", "enum-value",
                        "vector", "phone", "integer", "real"])
bad_value = st.one_of(st.builds(_tv, tags, bad_data), odd, bad_data.map(lambda d: {"data": d}))
bad_ts = st.one_of(canon_ts, canon_ts.map(lambda s: s + "Z"), canon_ts.map(lambda s: s[:13] + "+01:00"),
                  canon_ts.map(lambda s: s[:19]), st.sampled_from(["2023-02-22T00:00:03,714", "2023-W08-3T00:00:03"]))
bad_count = st.sampled_from([-1, 10**15 + 1, 2**64, True, 1.0, "5", None])
bad_span = st.one_of(st.sampled_from(["-5s", "1.5s", "\u0663s", "99999999999d", "3650d", "3651d", "5sec", "", " 5s"]),
                     st.builds(lambda n, u: f"{n}{u}", st.integers(-10, 10**18), st.sampled_from(["ns", "s", "h"])))
bad_port = st.one_of(st.sampled_from(["\u0663/tcp", "+80/tcp", "80", "1/sctp", "?/tcp", "/tcp", "\u00b2/udp"]),
                     st.builds(lambda n: f"{n}/tcp", st.integers(60000, 70000)))
bad_addr = st.sampled_from(["10.0.0.256", "", "x", "2001:DB8::1", "::ffff:10.0.0.1", "fe80::1%eth0", "1.2.3"])
i7 = st.integers(0, 7)
#: (record index, slot, value): slot 0-13 a Flow field, 14-17 a conn_id field; most keep the
#: field's tag and break its value, the rest put anything anywhere
mutation = st.one_of(
    st.tuples(i7, st.sampled_from([6, 7, 10, 11, 12, 13]), bad_count.map(lambda d: _tv("count", d))),
    st.tuples(i7, st.just(5), bad_span.map(lambda d: _tv("timespan", d))),
    st.tuples(i7, st.just(0), bad_ts.map(lambda d: _tv("timestamp", d))),
    st.tuples(i7, st.sampled_from([15, 17]), bad_port.map(lambda d: _tv("port", d))),
    st.tuples(i7, st.sampled_from([14, 16]), bad_addr.map(lambda d: _tv("address", d))),
    st.tuples(i7, st.sampled_from([1, 3, 4, 8, 9]), odd.map(lambda d: _tv("string", d))),
    st.tuples(i7, st.sampled_from([4, 5, 6, 8, 9, 13]), odd.map(lambda d: _tv("none", d))),
    st.tuples(i7, st.integers(0, 17), bad_value),
)


def mutate(records: list[Any], muts: list[tuple[int, int, Any]], whole: list[tuple[int, Any]]) -> list[Any]:
    out = json.loads(json.dumps(records))
    for i, slot, v in muts:
        fields = out[i % len(out)]["data"]
        if slot < 14:
            fields[slot] = v
        elif type(fields[2]) is dict and type(fields[2].get("data")) is list and len(fields[2]["data"]) > slot - 14:
            fields[2]["data"][slot - 14] = v
    for i, v in whole:  # a whole record replaced: 13 fields, not a vector, ...
        out[i % len(out)] = v
    return out


whole_bad = st.one_of(odd, good_record.map(lambda r: _tv("vector", r["data"][:13])),
                      good_record.map(lambda r: _tv("vector", [*r["data"][:2], _tv("vector", r["data"][2]["data"][:3]),
                                                               *r["data"][3:]])),
                      st.builds(_tv, tags, st.just([])))
records_with_faults = st.builds(mutate, st.lists(good_record, min_size=1, max_size=6),
                                st.lists(mutation, max_size=2), st.lists(st.tuples(st.integers(0, 7), whole_bad), max_size=1))


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(records_with_faults)
def test_fast_path_never_accepts_what_the_reference_rejects_and_agrees_otherwise(records: list[Any]) -> None:
    want, reasons = reference(records)  # the reference never raises anything but BadRecord
    got = decode_flows(records)
    if reasons:
        assert got is None
    elif got is not None:
        assert_same_columns(got, want)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(good_record, min_size=1, max_size=6))
def test_fast_path_takes_well_typed_records_and_agrees(records: list[Any]) -> None:
    want, reasons = reference(records)
    got = decode_flows(records)
    assert reasons == []
    assert got is not None, "the fast path declined records the reference accepts"
    assert_same_columns(got, want)
    assert all(isinstance(x, float) and math.isfinite(x) for x in got["ts"])


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(canon_ts, min_size=1, max_size=5))
def test_vectorised_timestamps_equal_the_codec(texts: list[str]) -> None:
    try:
        want = [bc.Timestamp.from_data(t).seconds for t in texts]
    except bc.ProtocolError:
        with pytest.raises((BadRecord, ValueError)):
            bf._timestamps(texts)
        return
    assert bf._timestamps(texts) == want


def event_text(records: list[Any], single: bool, meta: Any = None, extra_arg: bool = False) -> str:
    """A BNN::flow (one record) or BNN::flows event framing ``records``, as Zeek frames it."""
    args = [records[0]] if single else [_tv("vector", records)]
    if extra_arg:
        args.append(_tv("count", 1))
    body = [_tv("string", "BNN::flow" if single else "BNN::flows"), _tv("vector", args)]
    if meta is not None:
        body.append(meta)
    one = _tv("count", 1)
    return json.dumps({"type": "data-message", "topic": "zeek/bnn/flows", **_tv("vector", [one, one, _tv("vector", body)])})


def check_message(records: list[Any], single: bool) -> tuple[bool, bool]:
    """The typed path on the event of ``records`` against the reference; (accepted by the
    reference, taken by the typed path)."""
    recs = records[:1] if single else records
    want, reasons = reference(recs)
    whole = decode_message(event_text(recs, single, meta=_tv("vector", [])))
    if reasons:
        assert whole is None
    elif whole is not None:
        assert whole[:2] == ("zeek/bnn/flows", len(recs))
        assert_same_columns(whole[2], want)
    return not reasons, whole is not None


@needs_msgspec
@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(records_with_faults, st.booleans())
def test_typed_path_never_accepts_what_the_reference_rejects_and_agrees_otherwise(records: list[Any],
                                                                                   single: bool) -> None:
    check_message(records, single)


@needs_msgspec
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(good_record, min_size=1, max_size=6), st.booleans())
def test_typed_path_takes_well_typed_records_and_agrees(records: list[Any], single: bool) -> None:
    assert check_message(records, single) == (True, True)


@needs_msgspec
def test_typed_path_declines_framing_the_orjson_path_must_judge() -> None:
    rec = _valid_record()
    assert decode_message(event_text([rec], True)) is not None
    assert decode_message(event_text([rec, rec], False, meta=_tv("vector", []))) is not None
    wide = _valid_record(cid=4)
    wide["data"][2]["data"] += [_tv("count", 6), _tv("vector", []), "anything"]  # conn_id extras are not used
    whole = decode_message(event_text([wide], False))
    assert whole is not None and whole[2]["resp_p"] == [443]
    declined: list[str | bytes] = [
        event_text([rec], True, extra_arg=True),  # 2 args: bad_event
        event_text([], False),  # empty BNN::flows: nothing to do
        event_text([_tv("vector", [*rec["data"], NONE])], False),  # a 15th field
        event_text([_tv("vector", rec["data"][:13])], True),  # 13 fields
        event_text([{"data": rec["data"]}], False),  # a record without its tag
        event_text([rec], True).replace('"BNN::flow"', '"BNN::other"'),
        event_text([rec], True).replace('"BNN::flow"', '"BNN::flows"'),  # flows name, flow shape
        event_text([rec], True).replace('"data-message"', '"error"'),
        real_text("event-zeek8-hello.json"), real_text("ack-zeek8.json"), "How is it going?", b"\x00\xff",
    ]
    for raw in declined:
        assert decode_message(raw) is None, raw


def real_text(name: str) -> str:
    return (BROKER / name).read_text() if BROKER.is_dir() else "{}"


def _fixed_faults() -> list[tuple[int, Any]]:
    """Every value fault class, each at its slot (slot 14-17 = conn_id fields)."""
    out: list[tuple[int, Any]] = []
    out += [(slot, _tv("count", v)) for slot in (6, 13) for v in (-1, 10**15 + 1, 2**64, True, 1.0, "5", None)]
    out += [(5, _tv("timespan", v)) for v in ("-5s", "-1ns", "1.5s", "99999999999d", "3651d", "5sec",
                                              "", " 5s", "5 s", 7)]
    out += [(0, _tv("timestamp", v)) for v in ("0000-01-01T00:00:00.000", "2023-02-29T00:00:00.000",
                                               "2023-02-22T24:00:00.000", "2023-02-22T00:00:60.000",
                                               "2023-02-22 00:00:03.714", "2023-02-22T00:00:03.714Z",
                                               "2023-02-22T00+01:00", "2023-W08-3T00:00:03", "today", 5)]
    out += [(s, _tv("port", v)) for s in (15, 17) for v in ("\u0663/tcp", "+80/tcp", "80", "1/sctp", "70000/tcp",
                                                          "65536/udp", "/tcp", "\u00b2/udp", 80)]
    out += [(s, _tv("address", v)) for s in (14, 16) for v in ("10.0.0.256", "", "x", "1.2.3", 5)]
    not_str: tuple[Any, ...] = (5, None, [], {})
    out += [(s, _tv("string", v)) for s in (1, 4, 8, 9) for v in not_str]
    out += [(3, _tv("enum-value", 6)), (3, _tv("string", "tcp")), (1, NONE), (0, NONE), (3, NONE), (2, NONE)]
    not_empty: tuple[Any, ...] = ({"a": 1}, [], None, 0)
    out += [(s, _tv("none", v)) for s in (4, 5, 6) for v in not_empty]
    not_values: tuple[Any, ...] = (_tv("phone", "555"), {"data": "x"}, 5, None, [])
    out += [(s, v) for s in (0, 4, 6, 15) for v in not_values]
    return out


FIXED = _fixed_faults()


def test_every_value_fault_is_declined_by_both_fast_paths() -> None:
    good = _valid_record()
    for slot, value in FIXED:
        bad = mutate([good], [(0, slot, value)], [])[0]
        recs = [good, bad, good]
        _, reasons = reference(recs)
        assert reasons, (slot, value)
        assert decode_flows(recs) is None, (slot, value)
        if HAVE_MSGSPEC:
            assert decode_message(event_text(recs, False)) is None, (slot, value)
            assert decode_message(event_text([bad], True)) is None, (slot, value)


def test_odd_but_valid_values_agree_on_all_paths() -> None:
    good = _valid_record()
    odd_ok = [(15, _tv("port", "?/unknown")), (15, _tv("port", "0/icmp")), (17, _tv("port", "080/udp")),
              (14, _tv("address", "2001:DB8::1")), (14, _tv("address", "::ffff:10.0.0.1")),
              (16, _tv("address", "fe80::1%eth0")), (0, _tv("timestamp", "2023-02-22T00:00:03")),
              (0, _tv("timestamp", "2023-02-22T00:00:03.714123")), (0, _tv("timestamp", "2023-02-22T00:00:03.714123456")),
              (5, _tv("timespan", "0s")), (5, _tv("timespan", "3650d")), (5, _tv("timespan", "\u0663s")),
              (6, _tv("count", 10**15)),
              (3, _tv("enum-value", "UDP")), (9, _tv("string", "")), (1, _tv("string", "\u00e9\U0001f600"))]
    for slot, value in odd_ok:
        rec = mutate([good], [(0, slot, value)], [])[0]
        want, reasons = reference([rec, good])
        assert reasons == [], (slot, value)
        got = decode_flows([rec, good])
        assert got is not None
        assert_same_columns(got, want)
        if HAVE_MSGSPEC:
            whole = decode_message(event_text([rec, good], False))
            assert whole is not None, (slot, value)
            assert_same_columns(whole[2], want)
