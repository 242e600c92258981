"""SuricataBlockSink: allowlist, rate limit, TTL, dry run, audit log; against a real Suricata 7.

The real-Suricata tests run one Suricata in unix-socket mode with the shipped include
(``suricata/bnn-sidecar.yaml`` declares the ``bnn-block`` ip dataset) and a test include
that moves the command socket into the test directory; effects are observed with
``dataset-lookup``.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from test_suricata_config import INCLUDE, need_suricata, suricata_daemon, write_include

from sidecar.errors import ConfigError
from sidecar.flow import ACK, SYN, FlowBatch
from sidecar.sinks import block
from sidecar.sinks.base import Sink
from sidecar.sinks.block import SuricataBlockSink, TokenBucket
from sidecar.sources.base import ReadStats
from sidecar.sources.eve import read_path
from sidecar.suricata_cmd import SuricataCommandClient
from sidecar.verdict import STAGE_FORCED, VerdictBatch


def forced(flows: FlowBatch, cls: str = "scan", score: float = 0.99) -> VerdictBatch:
    """Operator-forced malicious verdicts for every flow of ``flows`` (test input)."""
    n = len(flows)
    c = np.empty(n, dtype=object)
    c[:] = [cls] * n
    return VerdictBatch(flows, np.full(n, score), np.full(n, np.nan), np.ones(n, dtype=bool), c,
                        np.full(n, STAGE_FORCED, dtype=np.int8), "forced")


def addr_flows(addrs: Sequence[str], proto: str = "tcp", of: int = -1, rf: int = -1) -> FlowBatch:
    """Flows that differ only in the originator address (allowlist / rate-limit inputs)."""
    n = len(addrs)
    return FlowBatch.from_columns(
        {"orig_h": list(addrs), "resp_h": ["192.0.2.10"] * n, "proto": [proto] * n,
         "orig_flags": [of] * n, "resp_flags": [rf] * n, "uid": [f"t{i}" for i in range(n)]},
        "test", n=n,
    )


def audit(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(ln) for ln in path.read_bytes().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def honeypot_flows(shared: Path) -> FlowBatch:
    return FlowBatch.concat(list(read_path(shared / "suricata" / "eve" / "magnc-honeypot-ssh.eve.json", ReadStats())))


# -- without Suricata (dry run) -------------------------------------------------------


def test_dry_run_allowlist_and_audit(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    sink = SuricataBlockSink("/nonexistent/cmd.sock", allowlist=["192.168.0.0/16", "2001:db8::/32"],
                             audit_log=str(log))
    assert isinstance(sink, Sink) and sink.dry_run
    sink.write(forced(addr_flows(["127.0.0.1", "::1", "192.168.1.5", "2001:db8::7", "::ffff:127.0.0.1",
                                  "fe80::1", "198.51.100.7", "2a00:1450::1", "not-an-ip"])))
    assert set(sink.active) == {"198.51.100.7", "2a00:1450::1"}
    assert sink.stats["refused:allowlisted"] == 6 and sink.stats["refused:bad-address"] == 1
    sink.close()
    recs = audit(log)
    blocks = [r for r in recs if r["action"] == "block"]
    assert {r["ip"] for r in blocks} == {"198.51.100.7", "2a00:1450::1"}
    assert all(r["dry_run"] is True and r["suricata"] == "dry-run" and r["dataset"] == "bnn-block" for r in blocks)
    refused = {r["ip"]: r for r in recs if r["action"] == "refuse"}
    assert refused["127.0.0.1"]["network"] == "127.0.0.0/8"
    assert refused["2001:db8::7"]["network"] == "2001:db8::/32"
    assert refused["fe80::1"]["reason"] == "allowlisted" and refused["not-an-ip"]["reason"] == "bad-address"
    # close unblocks what this sink blocked
    assert sorted(r["ip"] for r in recs if r["action"] == "unblock" and r["reason"] == "shutdown") == [
        "198.51.100.7", "2a00:1450::1"]


def test_token_bucket_refills_at_rate() -> None:
    b = TokenBucket(6, now=0.0)  # 6 per minute = one every 10 s
    assert [b.take(0.0) for _ in range(7)] == [True] * 6 + [False]
    assert not b.take(9.9)
    assert b.take(10.0) and not b.take(10.0)
    assert [b.take(1000.0) for _ in range(7)] == [True] * 6 + [False]  # capped at capacity


def test_rate_limit_refuses_excess_and_reflag_extends(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    sink = SuricataBlockSink("/nonexistent", max_blocks_per_min=3, audit_log=str(log), ttl_s=60)
    ips = [f"203.0.113.{i}" for i in range(1, 8)]
    sink.write(forced(addr_flows(ips)))
    assert list(sink.active) == ips[:3]
    assert sink.stats["refused:rate-limited"] == 4
    before = sink.active[ips[0]].expires
    sink.write(forced(addr_flows(ips[:1])))  # already blocked: extends, takes no token
    assert sink.stats["extended"] == 1 and sink.active[ips[0]].expires > before
    assert sink.stats["refused:rate-limited"] == 4
    sink.close()
    limited = [r for r in audit(log) if r["reason"] == "rate-limited"]
    assert [r["ip"] for r in limited] == ips[3:] and limited[0]["max_blocks_per_min"] == 3


def test_filters_classes_score_and_handshake() -> None:
    sink = SuricataBlockSink("/nonexistent", classes=["bruteforce"], min_score=0.9, require_handshake=True)
    sink.write(forced(addr_flows(["203.0.113.1"]), cls="scan"))
    sink.write(forced(addr_flows(["203.0.113.2"]), cls="bruteforce", score=0.5))
    sink.write(forced(addr_flows(["203.0.113.3"], of=SYN, rf=SYN | ACK), cls="bruteforce"))  # no ACK back
    sink.write(forced(addr_flows(["203.0.113.4"], proto="udp"), cls="bruteforce"))
    sink.write(forced(addr_flows(["203.0.113.5"], of=SYN | ACK, rf=SYN | ACK), cls="bruteforce"))
    assert list(sink.active) == ["203.0.113.5"]
    assert sink.stats["skipped:class"] == 1 and sink.stats["skipped:score"] == 1
    assert sink.stats["refused:unverified-source"] == 2
    v = forced(addr_flows(["203.0.113.9"]))
    v.malicious[:] = False
    sink.write(v)  # benign verdicts are never blocked
    assert list(sink.active) == ["203.0.113.5"]
    sink.close()


def test_ttl_expiry_via_tick_and_write(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(block, "_monotonic", lambda: now[0])
    sink = SuricataBlockSink("/nonexistent", ttl_s=10)
    sink.write(forced(addr_flows(["198.51.100.1"])))
    now[0] += 9.9
    assert sink.tick() == 0 and "198.51.100.1" in sink.active
    now[0] += 0.1
    sink.write(forced(addr_flows(["198.51.100.2"])))  # expiry checked on write too
    assert list(sink.active) == ["198.51.100.2"]
    now[0] += 10
    sink.flush()  # and on flush
    assert not sink.active and sink.stats["unblocked"] == 2
    sink.close()


def test_bad_config() -> None:
    with pytest.raises(ConfigError, match="allowlist"):
        SuricataBlockSink("/x", allowlist=["10.0.0.0/33"])
    with pytest.raises(ConfigError):
        SuricataBlockSink("/x", ttl_s=0)


def test_unreachable_suricata_is_counted_not_raised(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    sink = SuricataBlockSink(str(tmp_path / "missing.sock"), dry_run=False, audit_log=str(log), timeout_s=1)
    sink.write(forced(addr_flows(["198.51.100.1", "198.51.100.2"])))
    assert not sink.active and sink.stats["error:dataset-add"] == 2
    sink.close()
    errs = [r for r in audit(log) if r["action"] == "error"]
    assert len(errs) == 2 and "cannot connect" in errs[0]["detail"]


def test_hung_command_socket_backs_off(tmp_path: Path) -> None:
    """A peer that accepts but never answers: one timed-out attempt (plus its retry), then backoff."""
    path = tmp_path / "hung.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(16)
    try:
        sink = SuricataBlockSink(str(path), dry_run=False, timeout_s=0.3, max_blocks_per_min=10)
        sink.write(forced(addr_flows([f"198.51.100.{i}" for i in range(1, 6)])))
        assert not sink.active and sink.stats["error:dataset-add"] == 5
        srv.settimeout(0.1)
        accepted = 0
        with contextlib.suppress(TimeoutError):
            while accepted < 10:
                srv.accept()[0].close()
                accepted += 1
        assert accepted == 2  # the first block's attempt and its one retry; the rest backed off
        assert sink._bucket.tokens == 10  # failed blocks do not use up the rate limit
        sink.close()
    finally:
        srv.close()


# -- against a real Suricata ---------------------------------------------------------


@pytest.fixture(scope="module")
def suricata_cmd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    need_suricata()
    d = tmp_path_factory.mktemp("sur-block")
    cmd = d / "cmd.sock"
    inc = write_include(d / "test.yaml", eve_json=False, command_socket=str(cmd))
    args = [f"--unix-socket={cmd}", "--include", str(INCLUDE), "--include", str(inc), "-k", "none", "-S", "/dev/null"]
    with suricata_daemon(args, d, cmd):
        yield str(cmd)


def lookup(cmd: str, ips: Sequence[str], dataset: str = "bnn-block") -> dict[str, bool]:
    with SuricataCommandClient(cmd) as c:
        return {ip: c.dataset_lookup(dataset, "ip", ip).ok for ip in ips}


@pytest.mark.suricata
def test_real_block_then_ttl_unblock(tmp_path: Path, suricata_cmd: str, honeypot_flows: FlowBatch) -> None:
    log = tmp_path / "audit.jsonl"
    # real scanner flows from the honeypot capture, forced malicious
    v = forced(honeypot_flows.take(np.arange(40)))
    order = list(dict.fromkeys(v.flows["orig_h"].tolist()))
    ips = [ip for ip in order if not ip.startswith("fe80:")]  # link-local: default allowlist
    assert len(ips) > 10 and len(order) > len(ips)
    sink = SuricataBlockSink(suricata_cmd, dry_run=False, ttl_s=1.0, audit_log=str(log), max_blocks_per_min=100)
    t0 = time.monotonic()
    sink.write(v)
    took = time.monotonic() - t0
    assert set(sink.active) == set(ips) and sink.stats["blocked"] == len(ips)
    assert sink.stats["refused:allowlisted"] == sum(ip.startswith("fe80:") for ip in v.flows["orig_h"].tolist())
    assert lookup(suricata_cmd, ips) == dict.fromkeys(ips, True)
    time.sleep(1.1)
    assert sink.tick() == len(ips)
    assert lookup(suricata_cmd, ips) == dict.fromkeys(ips, False)
    sink.close()
    recs = audit(log)
    assert [r["ip"] for r in recs if r["action"] == "block"] == ips
    assert all(r["suricata"] == "data added" for r in recs if r["action"] == "block")
    unb = [r for r in recs if r["action"] == "unblock"]
    assert len(unb) == len(ips) and all(r["reason"] == "ttl-expired" and r["suricata"] == "data removed" for r in unb)
    print(f"\n{len(ips)} distinct sources blocked in {took * 1000:.1f} ms ({took / len(ips) * 1000:.2f} ms each)")


@pytest.mark.suricata
def test_real_allowlist_rate_limit_and_ipv6(tmp_path: Path, suricata_cmd: str) -> None:
    sink = SuricataBlockSink(suricata_cmd, dry_run=False, allowlist=["10.0.0.0/8", "2001:db8::/32"],
                             max_blocks_per_min=3, ttl_s=60)
    allowed = ["10.1.2.3", "127.0.0.1", "::1", "2001:db8::1"]
    fresh = ["2a00:1450:4001::5", "198.51.100.11", "198.51.100.12", "198.51.100.13", "198.51.100.14"]
    sink.write(forced(addr_flows(allowed + fresh)))
    state = lookup(suricata_cmd, allowed + fresh)
    assert not any(state[ip] for ip in allowed)
    assert [state[ip] for ip in fresh] == [True, True, True, False, False]
    assert sink.stats["refused:allowlisted"] == 4 and sink.stats["refused:rate-limited"] == 2
    sink.close()  # unblock_on_close
    assert not any(lookup(suricata_cmd, fresh).values())


@pytest.mark.suricata
def test_real_dry_run_changes_nothing(tmp_path: Path, suricata_cmd: str) -> None:
    log = tmp_path / "audit.jsonl"
    sink = SuricataBlockSink(suricata_cmd, dry_run=True, audit_log=str(log))
    sink.write(forced(addr_flows(["198.51.100.21"])))
    assert "198.51.100.21" in sink.active
    assert lookup(suricata_cmd, ["198.51.100.21"]) == {"198.51.100.21": False}
    sink.close()
    assert [(r["action"], r["dry_run"]) for r in audit(log)] == [("block", True), ("unblock", True)]


@pytest.mark.suricata
def test_real_unknown_dataset_is_an_audited_error(tmp_path: Path, suricata_cmd: str) -> None:
    log = tmp_path / "audit.jsonl"
    sink = SuricataBlockSink(suricata_cmd, dataset="no-such-set", dry_run=False, audit_log=str(log))
    sink.write(forced(addr_flows(["198.51.100.31"])))
    assert not sink.active and sink.stats["error:dataset-add"] == 1
    sink.close()
    (err,) = audit(log)
    assert err["action"] == "error" and err["detail"] == "set not found or wrong type"
