"""EveSocketSource fed by a real Suricata 7 eve ``unix_stream`` output.

Suricata writes a regular eve.json in the same run; every ``flow`` event in it must
reach the source (same records as the file reader gives). The restart test measures
what Suricata does with events while the sidecar is not listening.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_suricata_config import need_suricata, run_offline, suricata_daemon, suricata_version, write_include

from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.sources.eve import read_path
from sidecar.sources.eve_socket import EveSocketSource
from sidecar.suricata_cmd import SuricataCommandClient

pytestmark = pytest.mark.suricata
SOCKET_TYPES = {"alert", "flow", "dns", "http", "tls", "ssh"}


class Collector:
    def __init__(self, path: str) -> None:
        self.src = EveSocketSource(path, batch_size=256, idle_flush_ms=20)
        self.batches: list[FlowBatch] = []
        self.thread = threading.Thread(target=lambda: self.batches.extend(self.src), daemon=True)
        self.thread.start()

    def n(self) -> int:
        return sum(len(b) for b in self.batches)

    def wait_for(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.n() < n and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        self.src.close()
        self.thread.join(5)
        assert not self.thread.is_alive()


def _events(eve: Path) -> list[dict[str, Any]]:
    return [orjson.loads(ln) for ln in eve.read_bytes().splitlines() if ln.strip()]


def test_offline_every_flow_event_is_accounted_for(tmp_path: Path, shared: Path) -> None:
    need_suricata()
    pcaps = tmp_path / "pcaps"
    pcaps.mkdir()
    for p in sorted((shared / "suricata" / "pcap").glob("*.pcap")):
        shutil.copyfile(p, pcaps / p.name)  # directory mode skips symlinks
    sock = tmp_path / "eve.sock"
    inc = write_include(tmp_path / "inc.yaml", eve_socket=str(sock))
    col = Collector(str(sock))
    t0 = time.monotonic()
    run_offline(pcaps, tmp_path, inc)
    took = time.monotonic() - t0
    eve = tmp_path / "eve.json"
    events = _events(eve)
    flow_ids = [e["flow_id"] for e in events if e["event_type"] == "flow"]
    col.wait_for(len(flow_ids))
    col.stop()
    got = FlowBatch.concat(col.batches)
    st = col.src.stats
    # every flow event Suricata wrote: read by the source, emitted or skipped with a reason
    assert st.read == len(flow_ids) > 50
    assert st.emitted + sum(st.skipped.values()) == len(flow_ids)
    ref_stats = ReadStats()
    ref = FlowBatch.concat(list(read_path(eve, ref_stats)))
    assert st.skipped == ref_stats.skipped
    assert Counter(got["uid"].tolist()) == Counter(ref["uid"].tolist())
    assert Counter(got["uid"].tolist()) <= Counter(str(f) for f in flow_ids)
    other = Counter(f"event:{e['event_type']}" for e in events if e["event_type"] in SOCKET_TYPES - {"flow"})
    assert st.ignored == other
    n_pcaps = len(list(pcaps.glob("*.pcap")))
    print(f"\n{suricata_version()}: {n_pcaps} pcaps, {len(flow_ids)} flow events, emitted {st.emitted}, skipped {dict(st.skipped)},"
          f" ignored {sum(st.ignored.values())}, suricata -r took {took:.2f} s")


def _run_pcap(c: SuricataCommandClient, pcap: Path, outdir: Path, timeout: float = 30.0) -> None:
    rep = c.command("pcap-file", {"filename": str(pcap), "output-dir": str(outdir)})
    assert rep.ok, rep
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = c.command("pcap-file-number").message
        cur = c.command("pcap-current").message
        if n == 0 and cur in (None, "None", ""):
            return
        time.sleep(0.05)
    raise AssertionError(f"{pcap.name} not processed within {timeout} s")


def _settle(eve: Path, timeout: float = 5.0) -> list[dict[str, Any]]:
    """eve.json once its size stopped changing for 0.3 s (bounded)."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        size = eve.stat().st_size if eve.exists() else 0
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= 0.3:
            break
        time.sleep(0.05)
    return _events(eve) if eve.exists() else []


def test_sidecar_restart_events_while_down_are_dropped(tmp_path: Path, shared: Path) -> None:
    """Measured: Suricata drops (and counts) events written while nobody listens; it
    reconnects on the next event once the sidecar listens again and delivers from then on."""
    need_suricata()
    pdir = shared / "suricata" / "pcap"
    sock, cmd = tmp_path / "eve.sock", tmp_path / "cmd.sock"
    inc = write_include(tmp_path / "inc.yaml", eve_socket=str(sock), command_socket=str(cmd))
    eve = tmp_path / "eve.json"
    col = Collector(str(sock))
    args = [f"--unix-socket={cmd}", "--include", str(inc), "-k", "none", "-S", "/dev/null"]

    def socket_events(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e for e in evs if e["event_type"] in SOCKET_TYPES]

    with suricata_daemon(args, tmp_path, cmd) as _, SuricataCommandClient(str(cmd), timeout=10) as c:
        _run_pcap(c, pdir / "slips-test19-ssh-bruteforce.pcap", tmp_path)
        a = socket_events(_settle(eve))
        a_flows = sum(e["event_type"] == "flow" for e in a)
        col.wait_for(a_flows)
        assert col.n() == a_flows > 0
        col.stop()  # sidecar down
        assert not sock.exists()

        _run_pcap(c, pdir / "slips-test12-icmp-portscan.pcap", tmp_path)
        b = socket_events(_settle(eve))[len(a):]
        assert b

        col2 = Collector(str(sock))  # sidecar back
        delivered: list[int] = []
        sent: list[int] = []
        for name in ("tcp-async-01.pcap", "ftp-quit.pcap", "detect-ftp.pcap"):
            before = len(socket_events(_events(eve)))
            _run_pcap(c, pdir / name, tmp_path)
            evs = socket_events(_settle(eve))[before:]
            n_flows = sum(e["event_type"] == "flow" for e in evs)
            col2.wait_for(sum(sent) + n_flows, timeout=5)
            sent.append(n_flows)
            delivered.append(col2.n() - sum(delivered))
        col2.stop()
    log = (tmp_path / "suricata.stdout").read_text(errors="replace")
    m = re.search(r"(\d+) events were dropped due to slow or disconnected socket", log)
    assert m is not None, log[-2000:]
    dropped = int(m.group(1))
    assert dropped == len(b)  # exactly the events written while the sidecar was down
    assert delivered == sent and all(n > 0 for n in sent)
    assert col.src.stats.read == a_flows
    print(f"\nwhile down: {len(b)} events written, Suricata reports {dropped} dropped;"
          f" after restart delivered {delivered} of {sent} flow events per pcap,"
          f" connections after restart: {col2.src.connections}")
