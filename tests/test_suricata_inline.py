"""Inline IPS end to end: block -> drop -> expiry with a real Suricata 7 on NFQUEUE.

Three network namespaces created by the test (names start with ``sur`` + pid):
client (10.231.1.2) -- box (10.231.1.1 / 10.231.2.1, forwards through
``iptables -j NFQUEUE``, runs ``suricata -q 0`` with ``suricata/bnn.rules`` and
``suricata/bnn-sidecar.yaml``) -- server (10.231.2.2, ``python -m http.server``).
Suricata's eve flow events reach an :class:`EveSocketSource`; the client's real HTTP
flow from there gets a forced malicious verdict; :class:`SuricataBlockSink` adds the
client to ``bnn-block``; a prober in the client namespace opens a new connection every
~10 ms and records which are dropped. Everything is torn down in ``finally``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest
from conftest import require
from test_block import forced
from test_suricata_config import INCLUDE, RULES, need_suricata, suricata_daemon, suricata_version

from sidecar.flow import FlowBatch
from sidecar.sinks.block import SuricataBlockSink
from sidecar.sources.eve import parse_ts
from sidecar.sources.eve_socket import EveSocketSource

pytestmark = [pytest.mark.netns, pytest.mark.suricata]

CLIENT, BOX_C, BOX_S, SERVER = "10.231.1.2", "10.231.1.1", "10.231.2.1", "10.231.2.2"
PORT = 8080
CLONE_NEWNET = 0x40000000
TTL_S = 3.0
ATTEMPT_TIMEOUT = 0.2


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed: {r.stderr.strip()}")
    return r


def need_netns() -> None:
    ok = os.geteuid() == 0 and all(shutil.which(t) for t in ("ip", "iptables"))
    require(ok, "root with ip and iptables (network namespaces, NFQUEUE)", "BNN_REQUIRE_NETNS")


@contextlib.contextmanager
def topology(tag: str) -> Iterator[dict[str, str]]:
    ns = {"c": f"{tag}c", "b": f"{tag}b", "s": f"{tag}s"}
    try:
        for n in ns.values():
            _sh("ip", "netns", "add", n)
        _sh("ip", "link", "add", f"{tag}c0", "netns", ns["c"], "type", "veth", "peer", "name", f"{tag}b0", "netns", ns["b"])
        _sh("ip", "link", "add", f"{tag}b1", "netns", ns["b"], "type", "veth", "peer", "name", f"{tag}s0", "netns", ns["s"])
        for n, dev, addr in ((ns["c"], f"{tag}c0", CLIENT), (ns["b"], f"{tag}b0", BOX_C),
                             (ns["b"], f"{tag}b1", BOX_S), (ns["s"], f"{tag}s0", SERVER)):
            _sh("ip", "-n", n, "addr", "add", f"{addr}/24", "dev", dev)
            _sh("ip", "-n", n, "link", "set", dev, "up")
            _sh("ip", "-n", n, "link", "set", "lo", "up")
        _sh("ip", "-n", ns["c"], "route", "add", "default", "via", BOX_C)
        _sh("ip", "-n", ns["s"], "route", "add", "default", "via", BOX_S)
        _sh("ip", "netns", "exec", ns["b"], "sysctl", "-qw", "net.ipv4.ip_forward=1")
        r = _sh("ip", "netns", "exec", ns["b"], "iptables", "-I", "FORWARD", "-j", "NFQUEUE", "--queue-num", "0",
                check=False)
        require(r.returncode == 0, f"iptables NFQUEUE ({r.stderr.strip()})", "BNN_REQUIRE_NETNS")
        yield ns
    finally:
        for n in ns.values():  # deleting a namespace removes its veths and iptables rules
            _sh("ip", "netns", "del", n, check=False)


_libc = ctypes.CDLL(None, use_errno=True)


def ns_socket(ns: str) -> socket.socket:
    """A TCP socket created inside network namespace ``ns`` (setns in a throwaway thread)."""
    box: dict[str, object] = {}

    def run() -> None:
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns failed")
            box["s"] = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except BaseException as exc:
            box["e"] = exc
        finally:
            os.close(fd)

    t = threading.Thread(target=run)
    t.start()
    t.join(5)
    if "e" in box:
        raise box["e"]  # type: ignore[misc]
    s = box["s"]
    assert isinstance(s, socket.socket)
    return s


def attempt(ns: str) -> bool:
    """One new HTTP connection client -> server; True if a response came back in time."""
    s = ns_socket(ns)
    s.settimeout(ATTEMPT_TIMEOUT)
    try:
        s.connect((SERVER, PORT))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return s.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False
    finally:
        s.close()


@dataclass
class Probe:
    start: float
    ok: bool


class Prober:
    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.log: list[Probe] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            self.log.append(Probe(t, attempt(self.ns)))
            time.sleep(0.01)

    def first(self, ok: bool, after: float) -> Probe | None:
        return next((p for p in list(self.log) if p.start >= after and p.ok is ok), None)

    def wait(self, ok: bool, after: float, timeout: float) -> Probe | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.first(ok, after)
            if p is not None:
                return p
            time.sleep(0.02)
        return None

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)


def test_inline_block_drop_expiry(tmp_path: Path) -> None:
    need_suricata()
    need_netns()
    tag = f"sur{os.getpid() % 100000}"
    sock, cmd = tmp_path / "eve.sock", tmp_path / "cmd.sock"
    inc = tmp_path / "test.yaml"
    inc.write_text(
        "%YAML 1.1\n---\n"
        f"unix-command:\n  enabled: yes\n  filename: {cmd}\n"
        "outputs:\n"
        "  - eve-log:\n      enabled: yes\n      filetype: regular\n      filename: eve.json\n"
        "      types: [alert, drop, flow]\n"
        f"  - eve-log:\n      enabled: yes\n      filetype: unix_stream\n      filename: {sock}\n"
        "      types: [flow]\n"
        # log closed TCP flows at once instead of after the stock 60 s
        "flow-timeouts:\n  default: {new: 5, established: 30, closed: 0, bypassed: 10}\n"
        "  tcp: {new: 5, established: 30, closed: 0, bypassed: 10}\n"
        "  udp: {new: 5, established: 30, bypassed: 10}\n  icmp: {new: 5, established: 30, bypassed: 10}\n"
    )
    src = EveSocketSource(str(sock), idle_flush_ms=20)
    flows: list[FlowBatch] = []
    reader = threading.Thread(target=lambda: flows.extend(src), daemon=True)
    reader.start()
    audit = tmp_path / "audit.jsonl"
    server: subprocess.Popen[bytes] | None = None
    prober: Prober | None = None
    sink: SuricataBlockSink | None = None
    try:
        with topology(tag) as ns:
            server = subprocess.Popen(
                ["ip", "netns", "exec", ns["s"], sys.executable, "-m", "http.server", "--bind", SERVER, str(PORT)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
            )
            args = ["-q", "0", "-S", str(RULES), "--include", str(INCLUDE), "--include", str(inc), "-k", "none"]
            with suricata_daemon(args, tmp_path, cmd, netns=ns["b"]):
                t_ready = time.monotonic()
                prober = Prober(ns["c"])
                ok = prober.wait(True, t_ready, timeout=15)
                assert ok is not None, "traffic does not pass through Suricata before any block"

                # the client's real flow, as Suricata reported it on the eve socket
                deadline = time.monotonic() + 15
                mine: FlowBatch | None = None
                while mine is None and time.monotonic() < deadline:
                    allf = FlowBatch.concat(list(flows)) if flows else FlowBatch.empty()
                    idx = np.flatnonzero((allf["orig_h"] == CLIENT) & (allf["resp_p"] == PORT))
                    mine = allf.take(idx[:1]) if len(idx) else None
                    time.sleep(0.05)
                assert mine is not None, "no flow event for the client arrived on the eve socket"

                sink = SuricataBlockSink(str(cmd), dry_run=False, ttl_s=TTL_S, audit_log=str(audit))
                wall_verdict, t_verdict = time.time(), time.monotonic()
                sink.write(forced(mine, cls="bruteforce"))
                t_added = time.monotonic()
                assert CLIENT in sink.active
                dropped = prober.wait(False, t_verdict, timeout=5)
                assert dropped is not None, "no connection attempt was dropped after the block"
                # and it stays blocked: the attempts started after the first drop keep failing
                time.sleep(0.5)
                later = [p for p in prober.log if dropped.start < p.start < t_verdict + TTL_S - 0.5]
                assert later and not any(p.ok for p in later)

                deadline = time.monotonic() + TTL_S + 5
                t_unblock = None
                while t_unblock is None and time.monotonic() < deadline:
                    if sink.tick():
                        t_unblock, wall_unblock = time.monotonic(), time.time()
                    time.sleep(0.05)
                assert t_unblock is not None and t_unblock - t_verdict >= TTL_S
                passed = prober.wait(True, t_unblock, timeout=5)
                assert passed is not None, "traffic does not pass again after the TTL"
                prober.stop()
                probes = len(prober.log)
            eve = [orjson.loads(ln) for ln in (tmp_path / "eve.json").read_bytes().splitlines()]
    finally:
        if prober is not None:
            prober.stop()
        if sink is not None:
            sink.close()
        if server is not None:
            server.terminate()
            server.wait(10)
        src.close()
        reader.join(5)
    drops = [e for e in eve if e["event_type"] in ("alert", "drop") and e["src_ip"] == CLIENT]
    blocked = sorted(parse_ts(e["timestamp"]) for e in drops if e["event_type"] == "alert"
                     and e["alert"]["signature_id"] == 9100100 and e["alert"]["action"] == "blocked")
    assert blocked, "Suricata logged no blocked alert for the client"
    # Suricata timestamps are packet times (wall clock): first / last dropped packet
    first_drop_ms = 1000 * (blocked[0] - wall_verdict)
    assert 0 < first_drop_ms < 5000
    assert blocked[-1] <= wall_unblock + 0.05  # nothing dropped after dataset-remove
    recs = [orjson.loads(ln) for ln in audit.read_bytes().splitlines()]
    assert [(r["action"], r["ip"], r["reason"]) for r in recs] == [
        ("block", CLIENT, "malicious"), ("unblock", CLIENT, "ttl-expired")]
    print(
        f"\n{suricata_version()} inline (NFQUEUE): dataset-add acked {1000 * (t_added - t_verdict):.1f} ms"
        f" after the verdict; first dropped packet (eve alert time) {first_drop_ms:.1f} ms after the verdict;"
        f" first failed new connection started {1000 * (dropped.start - t_verdict):.1f} ms after the verdict;"
        f" unblocked {t_unblock - t_verdict:.2f} s after (TTL {TTL_S} s), traffic passed"
        f" again {1000 * (passed.start - t_unblock):.1f} ms after dataset-remove; {probes} probes,"
        f" {len(drops)} alert/drop events for the client"
    )
