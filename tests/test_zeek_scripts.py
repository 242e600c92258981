"""The zkg package parses with zeekscript (Zeek's own tree-sitter grammar) and is
formatted as ``zeek-format`` formats it. Debian has no Zeek, so it is not run here."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "zeek-scripts"
SCRIPTS = sorted((PKG / "scripts").glob("*.zeek"))
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    p = BIN / name
    found = str(p) if p.exists() else shutil.which(name)
    assert found, f"{name} (PyPI zeekscript, in the dev extra) is not installed"
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_parses_without_errors(script: Path) -> None:
    r = subprocess.run([_tool("zeek-script"), "parse", str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "[error]" not in r.stdout


def test_parser_does_reject_broken_zeek(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zeek"
    bad.write_text("event zeek_init() { local x = ; }\n")
    r = subprocess.run([_tool("zeek-script"), "parse", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 or "[error]" in r.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_is_zeek_formatted(script: Path) -> None:
    r = subprocess.run([_tool("zeek-format"), str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == script.read_text(), f"run: zeek-format -i {script}"


def test_zkg_meta_and_api_surface() -> None:
    meta = configparser.ConfigParser()
    meta.read(PKG / "zkg.meta")
    assert meta["package"]["script_dir"] == "scripts"
    main = (PKG / "scripts" / "main.zeek").read_text()
    assert "module BNN;" in main
    for needle in ("Malicious_Flow", "type Flow: record", "global verdict: event", "NetControl::drop_address",
                   "never_block", "Cluster::listen_websocket", "Broker::listen_websocket",
                   "Version::number >= 70200", "$identifier="):
        assert needle in main, needle
