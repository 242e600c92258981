"""The shipped systemd unit: ``systemd-analyze verify`` clean, hardened, wired to the sample config."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "sidecar" / "data" / "etc" / "bnn-sidecar.service"
BIN = Path(sys.executable).parent / "bnn-sidecar"


def _unit_for_here(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this venv's real entry point (verify checks it exists)."""
    if not BIN.exists():
        pytest.skip(f"{BIN} not installed (pip install -e .)")
    text = UNIT.read_text().replace("/usr/local/bin/bnn-sidecar", str(BIN))
    out = tmp_path / "bnn-sidecar.service"
    out.write_text(text)
    return out


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    unit = _unit_for_here(tmp_path)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "" and r.stdout.strip() == "", r.stderr + r.stdout
    sec = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True,
                         text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", sec.stdout)
    assert m is not None, sec.stdout[-2000:] + sec.stderr[-2000:]
    assert float(m.group(1)) <= 2.0  # "OK" band; an unhardened unit scores 9.6


def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    unit = _unit_for_here(tmp_path)
    unit.write_text(unit.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "NoNewPrivilege" in r.stderr


def test_unit_runs_the_sample_config_and_reloads_with_sighup() -> None:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(UNIT.read_text())
    svc = cp["Service"]
    assert svc["ExecStart"].split()[1:] == ["run", "--config", "/etc/bnn-sidecar/sidecar.toml"]
    assert svc["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert svc["KillSignal"] == "SIGTERM"
    for key, want in (("DynamicUser", "yes"), ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                      ("ProtectHome", "yes"), ("PrivateTmp", "yes")):
        assert svc[key] == want, key
    # the sample config writes where the unit allows it (StateDirectory / LogsDirectory)
    import tomllib

    cfg = tomllib.loads((REPO / "sidecar" / "data" / "etc" / "sidecar.toml").read_text())
    assert cfg["sidecar"]["checkpoint_dir"] == "/var/lib/" + svc["StateDirectory"]
    assert all(s["path"].startswith("/var/log/" + svc["LogsDirectory"] + "/") for s in cfg["sink"])
