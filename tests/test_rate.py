"""The flood rule (sidecar/features/rate.py) on real records: exact counts, any batch size, stable hash."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.config import load_config
from sidecar.errors import ConfigError
from sidecar.features.rate import RateCounter, RateRule, key_hash
from sidecar.flow import FlowBatch
from sidecar.networks import NetworkSet
from sidecar.networks import split_networks as parse_networks
from sidecar.scorer import RATE_CLASS, Scorer, make_scorer
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path
from sidecar.verdict import STAGE_RATE, VerdictBatch

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "sidecar" / "data" / "model" / "bnn.onnx"
LAB_EVE = REPO / "tests" / "data" / "lab" / "eve"
MIRAI = "zeek-labeled/iot-23/CTU-IoT-Malware-Capture-34-1/conn.log.labeled.gz"


def _read(path: Path, batch_size: int = 65536) -> list[FlowBatch]:
    return list(read_path(path, "auto", ReadStats(), batch_size=batch_size))


def _end_time(b: FlowBatch) -> np.ndarray:
    d = b["duration"]
    t: np.ndarray = b["ts"] + np.where(np.isfinite(d) & (d > 0), d, 0.0)
    return t


def _reference(b: FlowBatch, window: float) -> np.ndarray:
    """The documented count, one record at a time, with a dict per key (no hashing)."""
    state: dict[tuple[object, ...], list[int]] = defaultdict(lambda: [-(1 << 60), 0, 0])
    out = []
    for oh, rh, rp, pr, t in zip(b["orig_h"], b["resp_h"], b["resp_p"].tolist(), b["proto"], _end_time(b), strict=True):
        st = state[(oh, rh, rp, pr)]
        bucket = int(np.floor(t / window))
        if st[0] == bucket:
            st[1] += 1
        elif st[0] == bucket - 1:
            st[:] = [bucket, 1, st[1]]
        else:
            st[:] = [bucket, 1, 0]
        out.append(st[1] + st[2])
    return np.asarray(out)


def _chunks(b: FlowBatch, size: int) -> list[FlowBatch]:
    return [b.take(np.arange(i, min(i + size, len(b)))) for i in range(0, len(b), size)]


@pytest.fixture(scope="module")
def mirai(shared: Path) -> FlowBatch:
    """IoT-23 capture 34-1 (Mirai: 14,394 DDoS records, C&C, scans, benign) in end-time order."""
    b = FlowBatch.concat(_read(shared / MIRAI))
    return b.take(np.argsort(_end_time(b), kind="stable"))


@pytest.mark.parametrize("window", [1.0, 10.0])
def test_counts_equal_the_per_record_reference_for_every_batch_size(mirai: FlowBatch, window: float) -> None:
    ref = _reference(mirai, window)
    assert ref.max() > 1000  # the flood is in there
    for size in (1, 7, 1024, len(mirai)):
        part = mirai if size > 1 else mirai.take(np.arange(3000))  # batch size 1: a prefix keeps it quick
        rc = RateCounter(window)
        got = np.concatenate([rc.update(c) for c in _chunks(part, size)])
        np.testing.assert_array_equal(got, ref[: len(part)], err_msg=f"batch size {size}")


def test_key_hash_is_the_same_in_every_process(mirai: FlowBatch, shared: Path) -> None:
    """str hashes are salted per process; the rule's hash must not be (verdicts would differ per run)."""
    here = key_hash(mirai.take(np.arange(500)))
    code = ("import sys, numpy as np; from sidecar.flow import FlowBatch; from sidecar.sources.base import ReadStats;"
            "from sidecar.sources.detect import read_path; from sidecar.features.rate import key_hash;"
            f"b = FlowBatch.concat(list(read_path({str(shared / MIRAI)!r}, 'auto', ReadStats(), batch_size=65536)));"
            "d = b['duration']; t = b['ts'] + np.where(np.isfinite(d) & (d > 0), d, 0.0);"
            "b = b.take(np.argsort(t, kind='stable')).take(np.arange(500));"
            "sys.stdout.write(key_hash(b).tobytes().hex())")
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, env=env, cwd=REPO)
        assert r.returncode == 0, r.stderr.decode()[-1500:]
        assert bytes.fromhex(r.stdout.decode()) == here.tobytes()
    assert len(np.unique(here)) == len({(a, b, int(c), d) for a, b, c, d in zip(
        mirai["orig_h"][:500], mirai["resp_h"][:500], mirai["resp_p"][:500], mirai["proto"][:500], strict=True)})


def test_untimed_records_are_counted_as_zero_and_tallied(mirai: FlowBatch) -> None:
    b = mirai.take(np.arange(2000))
    cols = dict(b.cols)
    cols["ts"] = b["ts"].copy()
    cols["ts"][::4] = np.nan
    rc = RateCounter(1.0)
    got = rc.update(FlowBatch(cols, b.source, b.label))
    assert rc.untimed == 500
    assert (got[::4] == 0).all() and (np.delete(got, np.arange(0, 2000, 4)) >= 1).all()


def test_a_bogus_future_time_leaves_other_keys_alone(mirai: FlowBatch) -> None:
    """A record stamped a day ahead moves only its own slot; every other key counts as before."""
    b = mirai.take(np.arange(5000))
    ref = RateCounter(1.0).update(b)
    bogus = b.take(np.array([0]))
    cols = dict(bogus.cols)
    cols["ts"] = bogus["ts"] + 86400.0
    rc = RateCounter(1.0)
    rc.update(FlowBatch(cols, bogus.source))
    got = rc.update(b)
    k = key_hash(b)
    other = k != k[0]
    assert other.sum() > 100
    np.testing.assert_array_equal(got[other], ref[other])


def test_scorer_flags_the_zero_packet_ddos_records_by_the_rule_only(mirai: FlowBatch) -> None:
    """Zeek counted no packet in 14,260 of the 14,394 DDoS records: the model cannot see them, the
    rule sees one client hammering one service. Benign records of the capture are not touched."""
    def run(rule: RateRule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sc = make_scorer(MODEL, "onnx", rule)
        vs = [sc.score(c) for c in _chunks(mirai, 1024)]
        mal = np.concatenate([v.malicious for v in vs])
        assert sc.rate_flagged == int((np.concatenate([v.stage for v in vs]) == STAGE_RATE).sum())
        return mal, np.concatenate([v.stage for v in vs]), np.concatenate([v.cls for v in vs])

    labels = np.asarray([str(x) for x in mirai.label], dtype=object)
    ddos, benign = np.char.find(labels.astype(str), "DDoS") >= 0, np.char.find(labels.astype(str), "Benign") >= 0
    mal_on, stage_on, cls_on = run(RateRule())
    mal_off, stage_off, _ = run(RateRule(threshold=0))
    assert not (stage_off == STAGE_RATE).any()
    assert mal_off[ddos].mean() < 0.05 < 0.95 < mal_on[ddos].mean()
    assert (cls_on[stage_on == STAGE_RATE] == RATE_CLASS).all()
    assert (mal_on & ~mal_off & benign).sum() == 0
    assert (mal_on | ~mal_off).all()  # the rule only adds


def test_config_keys_and_their_checks(tmp_path: Path) -> None:
    p = tmp_path / "s.toml"
    p.write_text('[sidecar]\nrate_threshold = 0\n[[source]]\nkind = "follow"\npath = "/tmp/c.log"\n')
    cfg = load_config(p, env={"BNN_SIDECAR_SIDECAR_RATE_WINDOW_S": "2.5"})
    assert cfg.sidecar.rate_threshold == 0 and cfg.sidecar.rate_window_s == 2.5
    assert cfg.origins["sidecar.rate_window_s"] == "env BNN_SIDECAR_SIDECAR_RATE_WINDOW_S"
    assert load_config(None, env={}, validate=False).sidecar.rate_threshold == RateRule().threshold
    for key, val in (("rate_threshold", "-1"), ("rate_window_s", "0")):
        with pytest.raises(ConfigError, match=key):
            load_config(p, env={f"BNN_SIDECAR_SIDECAR_{key.upper()}": val})


def test_score_cli_reports_and_switches_the_rule(tmp_path: Path) -> None:
    """The lab's HTTP flood (400 ordinary GETs from one client): the rule flags most of it, off flags none."""
    flood = LAB_EVE / "dos-httpflood.eve.json.gz"
    sums = {}
    for thr in ("50", "0"):
        out = tmp_path / f"{thr}.jsonl"
        r = subprocess.run([sys.executable, "-m", "sidecar.cli.main", "score", "--input", str(flood), "--out", str(out),
                            "--rate-threshold", thr], capture_output=True, timeout=300, cwd=REPO)
        assert r.returncode == 0, r.stderr.decode()[-1500:]
        line = [x for x in r.stderr.decode().splitlines() if x.startswith("summary: ")][-1]
        sums[thr] = orjson.loads(line.split(" ", 1)[1])
        rows = [orjson.loads(x) for x in out.read_bytes().splitlines()]
        assert sum(x["stage"] == STAGE_RATE for x in rows) == sums[thr]["flagged_by_rate_rule"]
    assert sums["0"]["flagged_by_rate_rule"] == 0
    assert sums["50"]["flagged_by_rate_rule"] >= 300
    r = subprocess.run([sys.executable, "-m", "sidecar.cli.main", "score", "--input", str(flood), "--out", "-",
                        "--rate-threshold", "-3"], capture_output=True, timeout=300, cwd=REPO)
    assert r.returncode == 2 and b"--rate-threshold" in r.stderr


def test_each_source_counts_alone(mirai: FlowBatch) -> None:
    """Zeek and Suricata on the same link report every flow twice: the rule must not add them up."""
    part = mirai.take(np.arange(8192))
    alone = make_scorer(MODEL, "onnx")
    want = np.concatenate([alone.score(c).stage for c in _chunks(part, 1024)])
    both = make_scorer(MODEL, "onnx")
    got = []
    for c in _chunks(part, 1024):
        got.append(both.score(c).stage)
        both.score(FlowBatch(dict(c.cols), "eve", c.label))  # the same flows, as the other sensor saw them
    assert (want == STAGE_RATE).sum() > 1000
    np.testing.assert_array_equal(np.concatenate(got), want)


def test_sinks_name_the_flood_rule(mirai: FlowBatch, tmp_path: Path) -> None:
    """Operators suppress or threshold the rule apart from the model: its own notice and signature."""
    from sidecar.sinks.eve_alert import SID_BASE, EveAlertSink
    from sidecar.sinks.notice_log import NoticeLogSink

    sc = make_scorer(MODEL, "onnx")
    vs = [sc.score(c) for c in _chunks(mirai.take(np.arange(8192)), 1024)]
    notice = NoticeLogSink(tmp_path / "notice.log", fmt="json", suppress_for=0.0)
    eve = EveAlertSink(tmp_path / "eve.json")
    for v in vs:
        notice.write(v)
        eve.write(v)
    notice.close()
    eve.close()
    stage = {u: s for v in vs for u, s in zip(v.flows["uid"][v.malicious], v.stage[v.malicious].tolist(), strict=True)}
    rows = [orjson.loads(x) for x in (tmp_path / "notice.log").read_bytes().splitlines()]
    alerts = [orjson.loads(x) for x in (tmp_path / "eve.json").read_bytes().splitlines()]
    assert len(alerts) == len(stage) and list(stage.values()).count(STAGE_RATE) > 1000
    assert len(rows) > 0.9 * len(stage)  # the rest: out-of-order timestamps inside the suppression rule
    for r in rows:
        flood = stage[r["uid"]] == STAGE_RATE
        assert r["note"] == ("BNN::Flood" if flood else "BNN::Malicious_Flow")
        assert r["msg"].startswith("flood rule flagged" if flood else "BNN flagged")
    assert {r["note"] for r in rows} == {"BNN::Flood", "BNN::Malicious_Flow"}
    for a in alerts:
        flood = stage[a["bnn"]["uid"]] == STAGE_RATE
        assert (a["alert"]["signature_id"] == SID_BASE + 50) == flood
        assert ("rate rule" in a["alert"]["signature"]) == flood


def test_ignored_client_networks_are_never_flagged_by_the_rule(mirai: FlowBatch) -> None:
    """A proxy or NAT gateway opens many connections to one service by design: the operator lists it."""
    part = mirai.take(np.arange(8192))
    flood_src = "192.168.1.195"  # the Mirai bot of capture 34-1
    runs = {}
    for name, rule in (("plain", RateRule()), ("ignore", RateRule(ignore=parse_networks("10.0.0.0/8, 192.168.1.192/30")))):
        sc = make_scorer(MODEL, "onnx", rule)
        vs = [sc.score(c) for c in _chunks(part, 1024)]
        runs[name] = (np.concatenate([v.stage for v in vs]), np.concatenate([v.malicious for v in vs]), sc)
    src = part["orig_h"] == flood_src
    st_plain, mal_plain, _ = runs["plain"]
    st_ign, mal_ign, sc_ign = runs["ignore"]
    assert (st_plain[src] == STAGE_RATE).sum() > 1000
    assert not (st_ign[src] == STAGE_RATE).any()
    assert sc_ign.rate_ignored == int((st_plain == STAGE_RATE).sum() - (st_ign == STAGE_RATE).sum())
    model_only = st_plain != STAGE_RATE
    np.testing.assert_array_equal(mal_ign[model_only], mal_plain[model_only])  # the model's verdicts stay


def test_parse_networks_and_its_config_check(tmp_path: Path) -> None:
    assert parse_networks(" 10.1.2.3/8, 2001:db8::1 ,") == ("10.0.0.0/8", "2001:db8::1/128")
    with pytest.raises(ValueError, match="not an IP network"):
        parse_networks("10.0.0.0/8, proxy.example")
    p = tmp_path / "s.toml"
    p.write_text('[sidecar]\nrate_ignore = "192.0.2.0/24, nonsense"\n[[source]]\nkind = "follow"\npath = "/tmp/c.log"\n')
    with pytest.raises(ConfigError, match="rate_ignore"):
        load_config(p, env={})


# -- generated streams (fuzzing the counter's state transitions; the real-data tests above are the reference) --

_streams = st.lists(
    # key (4 of them), bucket step (mostly the same or the next bucket, sometimes a gap that forgets), offset in it
    st.tuples(st.integers(0, 3), st.sampled_from([0, 0, 0, 1, 1, 2]), st.floats(0.0, 0.999)),
    min_size=1, max_size=300,
)


def _generated(rows: list[tuple[int, int, float]], window: float) -> FlowBatch:
    """Records in time order: keys from a small set, buckets advancing by 0-2 (a gap of 2 forgets)."""
    bucket, ts = 1_700_000_000, []
    for _, step, off in rows:
        bucket += step
        ts.append((bucket + off) * window)
    keys = [r[0] for r in rows]
    return FlowBatch.from_columns(
        {"ts": ts, "orig_h": [f"10.0.0.{k % 2}" for k in keys], "resp_h": [f"192.0.2.{k // 2}" for k in keys],
         "resp_p": [80] * len(rows), "proto": ["tcp"] * len(rows), "duration": [0.0] * len(rows)},
        "generated",
    )


@settings(max_examples=60, deadline=None)
@given(_streams, st.sampled_from([1.0, 0.25]), st.integers(1, 40))
def test_generated_in_order_streams_match_the_reference_for_any_batch_cut(
    rows: list[tuple[int, int, float]], window: float, size: int
) -> None:
    b = _generated(rows, window)
    ref = _reference(b, window)
    rc = RateCounter(window)
    got = np.concatenate([rc.update(c) for c in _chunks(b, size)])
    np.testing.assert_array_equal(got, ref)


def test_late_records_join_the_previous_bucket_or_count_alone() -> None:
    """Out of order (Zeek writes a record when its connection ends): one bucket late joins the slot's
    previous bucket; older counts only itself and leaves the state alone."""
    rc = RateCounter(1.0)

    def one(bucket: int) -> int:
        b = _generated([(0, 0, 0.5)], 1.0)
        b.cols["ts"][:] = bucket + 0.5
        return int(rc.update(b)[0])

    t = 1_700_000_000
    assert [one(t), one(t - 1), one(t), one(t - 3), one(t)] == [1, 1, 3, 1, 4]


def test_odd_address_values_are_hashed_not_fatal(mirai: FlowBatch) -> None:
    """Addresses are text from every reader; anything else (a plugin's list, None) still counts, never crashes."""
    b = mirai.take(np.arange(64))
    cols = dict(b.cols)
    odd = b["orig_h"].copy()
    odd[0], odd[1] = ["10.0.0.1"], None
    cols["orig_h"] = odd
    got = RateCounter(1.0).update(FlowBatch(cols, b.source))
    assert len(got) == 64 and (got >= 1).all()
    assert key_hash(FlowBatch(cols, b.source))[0] == key_hash(FlowBatch(cols, b.source))[0]
    ns = NetworkSet(parse_networks("10.0.0.0/8, 192.168.1.192/30"))
    assert ns.contains(np.array([["10.0.0.1"], None, "10.9.9.9", "192.168.1.195", "x"], dtype=object)).tolist() == [
        False, False, True, True, False]


def _score_file(path: Path, rule: RateRule) -> tuple[Scorer, list[VerdictBatch]]:
    sc = make_scorer(MODEL, "onnx", rule)
    return sc, [sc.score(c) for c in _read(path, batch_size=1024)]


@pytest.mark.parametrize(("capture", "relabels"), [("dos-synflood", True), ("scan-syn", False), ("scan-connect", False)])
def test_a_scan_verdict_that_hammers_one_service_is_reclassed_dos(capture: str, relabels: bool) -> None:
    """hping3's SYN flood looks like SYN-scan probes flow by flow (the model says ``scan``); 1,500 SYNs
    to one port is a flood. nmap's scans of 1,000 ports never reach the count: left as they are."""
    path = LAB_EVE / f"{capture}.eve.json.gz"
    sc_on, on = _score_file(path, RateRule())
    _, off = _score_file(path, RateRule(threshold=0))
    mal_on, mal_off = (np.concatenate([v.malicious for v in vs]) for vs in (on, off))
    cls_on, cls_off = (np.concatenate([v.cls for v in vs]) for vs in (on, off))
    st_on, st_off = (np.concatenate([v.stage for v in vs]) for vs in (on, off))
    np.testing.assert_array_equal(mal_on, mal_off)  # the model flagged every one: the rule adds none
    np.testing.assert_array_equal(st_on, st_off)  # the model still decided them
    changed = cls_on != cls_off
    assert sc_on.rate_relabelled == int(changed.sum())
    if relabels:
        assert (cls_off[changed] == "scan").all() and (cls_on[changed] == RATE_CLASS).all()
        assert changed.sum() > 1000, changed.sum()
    else:
        assert not changed.any()
