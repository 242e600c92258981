"""The speed paths give exactly the reference output.

* eve / Zeek JSON readers: the msgspec path and the orjson path (the reference
  code, which the golden files pin) produce identical rows and stats on real
  fixtures, on the same fixtures mutated into every odd type, and on garbage.
* eve: the vectorised timestamp column equals ``parse_ts`` bit for bit.
* onnxruntime: the row-gather layout rewrite gives the same integers as the graph
  as written; numpy engine: the lookup-table popcount equals ``np.bitwise_count``
  and the int64 matmul path equals the float32 one.
"""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.engines import numpy_engine
from sidecar.engines.load import load_engine
from sidecar.engines.onnx_engine import OnnxEngine, transpose_gathers
from sidecar.flow import FlowBatch
from sidecar.sources import eve, zeek_json
from sidecar.sources.base import ReadStats

MODEL = Path(__file__).resolve().parents[2] / "sidecar" / "data" / "model" / "bnn.onnx"


def _lines(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.splitlines(keepends=True)


def _render(mod: Any, lines: list[bytes], use_msgspec: bool, batch_size: int = 64) -> tuple[bytes, dict[str, Any]]:
    st = ReadStats()
    batches = list(mod.read_lines(lines, st, where="f", batch_size=batch_size, use_msgspec=use_msgspec))
    rows = [orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for b in batches for r in b.iter_rows()]
    origins = [o for b in batches if b.origin is not None for o in b.origin.tolist()]
    return b"\n".join(rows) + orjson.dumps(origins), st.as_dict()


def _same(mod: Any, lines: list[bytes], batch_size: int = 64) -> int:
    fast = _render(mod, lines, True, batch_size)
    ref = _render(mod, lines, False, batch_size)
    assert fast == ref
    return int(fast[1]["emitted"])


def _mutations(obj: dict[str, Any], path: tuple[str, ...]) -> list[dict[str, Any]]:
    """Copies of ``obj`` with the value at ``path`` replaced by each odd JSON type."""
    out = []
    for odd in (None, True, "7", 7.5, -1, 70000, [1], {"a": 1}, 1e300, ""):
        o = orjson.loads(orjson.dumps(obj))
        d = o
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = odd
        out.append(o)
    return out


def _forbid(*_: Any) -> Any:
    raise AssertionError("the reference path ran where the fast path should have")


def test_real_records_take_the_fast_paths(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real records never fall back to the per-row reference code (else the speed is fake)."""
    pytest.importorskip("msgspec")
    real = _lines(shared / "suricata/eve/slips-test6-malicious.eve.json.gz")
    want = _render(eve, real, False)
    monkeypatch.setattr(eve, "_record", _forbid)
    monkeypatch.setattr(eve, "_dict_row", _forbid)
    assert _render(eve, real, True) == want
    zj = _lines(shared / "zeek/slips/test9-mixed.conn.json.log")
    want = _render(zeek_json, zj, False)
    monkeypatch.setattr(zeek_json, "convert_obj", _forbid)
    assert _render(zeek_json, zj, True) == want


def test_eve_paths_identical_on_real_and_mutated(shared: Path) -> None:
    pytest.importorskip("msgspec")
    real = _lines(shared / "suricata/eve/slips-test6-malicious.eve.json.gz")
    real += _lines(shared / "suricata/eve/magnc-honeypot-ssh.eve.json")
    assert _same(eve, real) > 3000
    flows = [orjson.loads(x) for x in real if b'"event_type":"flow"' in x]
    tcp = next(f for f in flows if f.get("proto") == "TCP" and "tcp" in f)
    udp = next(f for f in flows if f.get("proto") == "UDP")
    odd: list[bytes] = []
    for base in (tcp, udp):
        for path in [("proto",), ("src_ip",), ("src_port",), ("dest_port",), ("flow_id",), ("app_proto",),
                     ("tcp",), ("flow",), ("flow", "start"), ("flow", "end"), ("flow", "pkts_toserver"),
                     ("flow", "bytes_toclient"), ("flow", "state"), ("flow", "reason")]:  # fmt: skip
            odd += [orjson.dumps(m) for m in _mutations(base, path)]
    odd += [orjson.dumps(m) for m in _mutations(tcp, ("tcp", "tcp_flags_ts"))]
    for ts in ("2021-06-06T16:38:55.855844+0200", "2021-02-30T16:38:55.855844+0200", "2021-06-06T16:38:55+0200",
               "2021-06-06T16:38:55.8558+02:00", "2021-06-06T24:00:00.000000+0000", "garbage", "2021-06-06"):
        odd.append(orjson.dumps({**tcp, "flow": {**tcp["flow"], "start": ts}}))  # fmt: skip
    odd += [b"", b"  \n", b"not json", b'{"event_type":"flow"', b'{"event_type":"alert"} x', b"[1]", b"\xff\xfe"]
    # invalid UTF-8 / lone surrogates / non-finite numbers inside otherwise fine flow lines
    odd += [orjson.dumps(tcp)[:-1] + b',"host":"\xff\xfe"}', orjson.dumps(tcp)[:-1] + b',"x":"\\ud800"}',
            orjson.dumps(udp).replace(b'"pkts_toclient":', b'"pkts_toclient":1e400,"y":'),
            orjson.dumps(udp).replace(b'"pkts_toclient":', b'"pkts_toclient":18446744073709551616,"y":'),
            orjson.dumps(udp)[:-1] + b',"deep":' + b"[" * 3000 + b"]" * 3000 + b"}"]
    # every odd line alone, then all of them mixed into real traffic
    for line in odd:
        _same(eve, [line, real[0]])
    mixed = [x for pair in zip(real[: len(odd) * 3 : 3], odd, strict=False) for x in pair]
    _same(eve, mixed, batch_size=7)


def test_zeek_json_paths_identical(shared: Path) -> None:
    pytest.importorskip("msgspec")
    real = _lines(shared / "zeek/slips/test9-mixed.conn.json.log")
    real += _lines(shared / "zeek/slips/vertical-portscan.conn.json.log")
    assert _same(zeek_json, real) > 600
    base = orjson.loads(real[0])
    odd: list[bytes] = []
    for key in ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_p", "proto", "duration", "orig_bytes",
                "resp_pkts", "history", "conn_state"):  # fmt: skip
        odd += [orjson.dumps(m) for m in _mutations(base, (key,))]
    odd.append(orjson.dumps({**base, "ts": "2018-03-24T17:15:20.629574Z"}))
    odd.append(orjson.dumps({**base, "id_orig_p": 5}))
    odd.append(orjson.dumps({**base, "_path": "dns"}))
    odd.append(orjson.dumps({k: v for k, v in base.items() if k != "id.orig_h"}))
    odd.append(orjson.dumps({**base, "label": "Malicious", "detailed-label": "C&C"}))
    odd.append(orjson.dumps({**base, "label": "-", "detailed_label": "x", "detailedlabel": "y"}))
    odd += [b"", b"not json", b"[1]", b"{}", b"\xff"]
    odd += [orjson.dumps(base)[:-1] + b',"x":"\xff"}', orjson.dumps(base)[:-1] + b',"x":"\xc3\xa9"}',
            orjson.dumps(base)[:-1] + b',"x":' + b"[" * 3000 + b"]" * 3000 + b"}"]
    for line in odd:
        _same(zeek_json, [line, real[0]])
    mixed = [x for pair in zip(real[: len(odd) * 2 : 2], odd, strict=False) for x in pair]
    _same(zeek_json, mixed, batch_size=5)


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
    st.integers(min_value=0, max_value=999_999),
)
def test_eve_ts_column_bit_exact(d: datetime, off_min: int, frac: int) -> None:
    sign = "+" if off_min >= 0 else "-"
    h, m = divmod(abs(off_min), 60)
    s = d.strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:06d}{sign}{h:02d}{m:02d}"
    got = eve._ts_column([s, s[:-5] + "+00:00", s])
    want = [eve.parse_ts(s), eve.parse_ts(s[:-5] + "+00:00"), eve.parse_ts(s)]
    assert got.tolist() == want  # == on floats: bit for bit (no NaN here)


def test_eve_ts_column_rejects_like_parse_ts() -> None:
    base = datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)
    ok = (base + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.000001+0000")
    assert eve._ts_column([ok]).tolist() == [eve.parse_ts(ok)]
    for bad in ("2023-02-29T00:00:00.000000+0000", "2024-13-01T00:00:00.000000+0000", "x" * 31):
        with pytest.raises(ValueError):
            eve.parse_ts(bad)
        with pytest.raises(ValueError):
            eve._ts_column([ok, bad])


def test_onnx_rewrite_is_exact_and_applies() -> None:
    model, n = transpose_gathers(MODEL.read_bytes())
    assert n >= 2  # both towers' thermometer gathers
    again, n2 = transpose_gathers(model)
    assert n2 == 0 and again == model  # idempotent: nothing left to rewrite
    fast, plain = OnnxEngine(MODEL), OnnxEngine(MODEL, rewrite=False)
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((5000, 20)) * 10.0 ** rng.integers(0, 6, (5000, 20))).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    for b in (1, 7, 1024, 5000):
        a, r = fast.run(x[:b]), plain.run(x[:b])
        for k in ("bin_logit", "fam_logits", "stage2_logit"):
            np.testing.assert_array_equal(getattr(a, k), getattr(r, k))


def test_numpy_engine_fallbacks_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    eng = load_engine(MODEL, "numpy")
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3000, 20)) * 100).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    want = eng.run(x)
    monkeypatch.setattr(numpy_engine, "_BITCOUNT", None)  # byte lookup-table popcount
    got = eng.run(x)
    np.testing.assert_array_equal(got.bin_logit, want.bin_logit)
    np.testing.assert_array_equal(got.fam_logits, want.fam_logits)
    # an integer matrix too large for exact float32 sums takes the int64 path
    w = rng.integers(-127, 128, (300_000, 3)).astype(np.int8)
    big = numpy_engine._IntMat(w)
    assert not big.f32
    h = rng.random((300_000, 4)) < 0.5
    np.testing.assert_array_equal(big(h), (w.astype(np.int64).T @ h.astype(np.int64)).astype(np.int32))
    small = numpy_engine._IntMat(w[:1000])
    assert small.f32
    np.testing.assert_array_equal(small(h[:1000]), (w[:1000].astype(np.int64).T @ h[:1000]).astype(np.int32))


def test_concat_of_fast_batches_keeps_schema(shared: Path) -> None:
    lines = _lines(shared / "suricata/eve/magnc-honeypot-ssh.eve.json")
    b = FlowBatch.concat(list(eve.read_lines(lines, ReadStats(), batch_size=16)))
    assert len(b) > 0 and b.origin is not None and b["orig_flags"].dtype == np.int16


def test_readers_work_without_msgspec() -> None:
    """msgspec is optional: with it absent the readers still reproduce the golden files."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['msgspec'] = None; sys.path.insert(0, 'tests')\n"
        "from golden_flows import CASES, GOLDEN, render\n"
        "import sidecar.sources.eve as e, sidecar.sources.zeek_json as z\n"
        "assert e._DECODER is None and z._DECODER is None\n"
        "bad = [n for n, rel, f in CASES if f in ('eve', 'zeek-json') and render(rel, f) != (GOLDEN / f'{n}.jsonl').read_bytes()]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    repo = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr
