"""The shipped suricata/ files load in a real Suricata 7; helpers for the other Suricata tests.

The helpers run the system ``suricata`` with the stock ``/etc/suricata/suricata.yaml``
plus an include file written by the test (absolute path: Suricata resolves relative
include paths against the config directory). An include REPLACES top-level keys such
as ``outputs`` (checked below), which is what the tests rely on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import REPO, require

RULES = REPO / "suricata" / "bnn.rules"
INCLUDE = REPO / "suricata" / "bnn-sidecar.yaml"
EVE_TYPES = "[alert, drop, flow, dns, http, tls, ssh]"
SOCKET_TYPES = "[alert, flow, dns, http, tls, ssh]"  # only one drop logger may exist

pytestmark = pytest.mark.suricata


def need_suricata() -> str:
    exe = shutil.which("suricata")
    require(exe is not None, "Suricata 7", "BNN_REQUIRE_SURICATA")
    assert exe is not None
    out = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=30).stdout
    require("version 7." in out, f"Suricata 7 (found: {out.strip()!r})", "BNN_REQUIRE_SURICATA")
    return exe


def suricata_version() -> str:
    return subprocess.run(["suricata", "-V"], capture_output=True, text=True, timeout=30).stdout.strip()


def write_include(
    path: Path,
    eve_json: bool = True,
    eve_socket: str | None = None,
    command_socket: str | None = None,
    datasets: bool = False,
) -> Path:
    """A test include: ``outputs`` (eve.json and/or the sidecar socket), ``unix-command``."""
    lines = ["%YAML 1.1", "---", "outputs:"]
    if eve_json:
        lines += ["  - eve-log:", "      enabled: yes", "      filetype: regular",
                  "      filename: eve.json", f"      types: {EVE_TYPES}"]
    if eve_socket is not None:
        lines += ["  - eve-log:", "      enabled: yes", "      filetype: unix_stream",
                  f"      filename: {eve_socket}", f"      types: {SOCKET_TYPES}"]
    if command_socket is None:
        lines += ["unix-command:", "  enabled: no"]
    else:
        lines += ["unix-command:", "  enabled: yes", f"  filename: {command_socket}"]
    if datasets:
        lines += ["datasets:", "  bnn-block:", "    type: ip", "    hashsize: 1024"]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_offline(pcap: Path, logdir: Path, include: Path, rules: Path | None = None, timeout: float = 120) -> None:
    """``suricata -r`` (a file or a directory of pcaps) with the test include; raises on failure."""
    cmd = ["suricata", "-r", str(pcap), "-k", "none", "-l", str(logdir), "--include", str(include),
           "-S", str(rules) if rules else "/dev/null", "--runmode", "single"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"suricata failed ({r.returncode}): {r.stderr[-2000:]}"


@contextlib.contextmanager
def suricata_daemon(
    args: Sequence[str], logdir: Path, ready: Path, netns: str | None = None, timeout: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a long-running Suricata; wait (bounded) until ``ready`` (its command socket) exists."""
    cmd = ["suricata", *args, "-l", str(logdir)]
    if netns is not None:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    out = open(logdir / "suricata.stdout", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.poll() is not None:
                raise AssertionError(f"suricata exited {proc.returncode}: {_tail(logdir)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"suricata not ready after {timeout} s: {_tail(logdir)}")
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        out.close()


def _tail(logdir: Path) -> str:
    p = logdir / "suricata.stdout"
    return p.read_text(errors="replace")[-2000:] if p.exists() else ""


def dump_config(*args: str) -> dict[str, str]:
    r = subprocess.run(["suricata", "--dump-config", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    out: dict[str, str] = {}
    for line in r.stdout.splitlines():
        k, sep, v = line.partition(" = ")
        if sep:
            out[k] = v
    return out


# -- tests of the shipped files -------------------------------------------------


def test_shipped_rules_and_include_load(tmp_path: Path) -> None:
    need_suricata()
    r = subprocess.run(
        ["suricata", "-T", "-S", str(RULES), "--include", str(INCLUDE), "-l", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "successfully loaded" in r.stdout + r.stderr


def test_include_declares_dataset_socket_and_eve_output() -> None:
    need_suricata()
    conf = dump_config("--include", str(INCLUDE))
    assert conf["datasets.bnn-block.type"] == "ip"
    assert conf["unix-command.enabled"] == "yes"
    assert conf["unix-command.filename"] == "/run/suricata-command.socket"
    outs = {k.split(".")[1]: v for k, v in conf.items() if k.count(".") == 1 and k.startswith("outputs.")}
    socks = [i for i, kind in outs.items() if kind == "eve-log"
             and conf.get(f"outputs.{i}.eve-log.filetype") == "unix_stream"]
    assert len(socks) == 1
    i = socks[0]
    assert conf[f"outputs.{i}.eve-log.filename"] == "/run/bnn-sidecar/eve.sock"
    assert conf[f"outputs.{i}.eve-log.types.0"] == "flow"
    # the include replaces the stock outputs list (documented in the file and README)
    assert sorted(outs.values()) == ["eve-log", "eve-log", "fast", "stats"]


def test_drop_rule_shape() -> None:
    rules = [ln for ln in RULES.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(rules) == 1
    rule = rules[0]
    assert rule.startswith("drop ip any any -> any any (")
    assert "ip.src; dataset:isset,bnn-block,type ip;" in rule
    sid = int(rule.split("sid:")[1].split(";")[0])
    assert not 9_100_000 <= sid <= 9_100_099  # the eve alert range stays free for the sink
    assert os.path.basename(INCLUDE) == "bnn-sidecar.yaml"
