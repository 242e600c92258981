"""The zkg package parses with zeekscript (Zeek's own tree-sitter grammar) and is
formatted as ``zeek-format`` formats it. Debian has no Zeek, so it is not run here."""

from __future__ import annotations

import configparser
import re
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


# --- the wire contract between main.zeek and the sidecar's WebSocket source and sink ---------

MAIN = PKG / "scripts" / "main.zeek"
_ZEEK_TO_BROKER = {"time": "timestamp", "string": "string", "conn_id": "conn_id", "transport_proto": "enum-value",
                   "interval": "timespan", "count": "count"}


def _record_fields(text: str, name: str) -> list[tuple[str, str, bool]]:
    body = re.search(rf"type {name}: record \{{(.*?)\n\t\}};", text, re.S)
    assert body, f"type {name} not found"
    out = []
    for m in re.finditer(r"^\t\t(\w+): ([\w ]+?)( &optional)?;", body.group(1), re.M):
        out.append((m.group(1), m.group(2), m.group(3) is None))
    return out


def _event_args(text: str, name: str) -> list[tuple[str, str]]:
    m = re.search(rf"global {name}: event\((.*?)\);", text, re.S)
    assert m, f"event {name} not declared"
    args = " ".join(m.group(1).split())
    return [(a.split(":")[0].strip(), a.split(":")[1].strip()) for a in args.split(",")] if args else []


def test_flow_record_is_exactly_what_the_source_decodes() -> None:
    from sidecar.sources.broker_ws import FLOW_LAYOUT

    fields = _record_fields(MAIN.read_text(), "Flow")
    decoded = [(n, k if isinstance(k, str) else k.TAG, req) for n, k, req in FLOW_LAYOUT]
    assert [(n, _ZEEK_TO_BROKER[t], req) for n, t, req in fields] == decoded


def test_events_match_the_source_and_sink() -> None:
    from sidecar.sinks.broker_ws import VERDICT_EVENT, VERDICT_SIGNATURE
    from sidecar.sources.broker_ws import FLOW_EVENT, FLOWS_EVENT

    text = MAIN.read_text()
    assert _event_args(text, "verdict") == list(VERDICT_SIGNATURE)
    assert _event_args(text, "flow") == [("f", "Flow")]
    assert _event_args(text, "flows") == [("fs", "vector of Flow")]
    assert (FLOW_EVENT, FLOWS_EVENT, VERDICT_EVENT) == ("BNN::flow", "BNN::flows", "BNN::verdict")
    assert "publish(topic, BNN::flow, fs[0])" in text and "publish(topic, BNN::flows, fs)" in text


def test_version_branches() -> None:
    text = MAIN.read_text()
    # 8.0+: $listen_addr; 7.2: $listen_host; 6.0-7.1: Broker::listen_websocket
    for needle in ("@if ( Version::number >= 80000 )", "$listen_addr=websocket_addr",
                   "@if ( Version::number >= 70200 )", "$listen_host=cat(websocket_addr)",
                   "Broker::listen_websocket(cat(websocket_addr), websocket_port)",
                   "Cluster::subscribe(verdict_topic)", "Broker::subscribe(verdict_topic)",
                   "@load base/misc/version"):
        assert needle in text, needle
    assert len(re.findall(r"^@if ", text, re.M)) == len(re.findall(r"^@endif$", text, re.M)) == 3


def test_flow_fields_exist_with_the_same_types_in_every_release_conn_log(shared: Path) -> None:
    series = sorted((shared / "zeek" / "version-series").glob("*.log"))
    assert len(series) == 8
    fields = _record_fields(MAIN.read_text(), "Flow")
    for path in series:
        lines = path.read_text().splitlines()
        names = next(ln for ln in lines if ln.startswith("#fields")).split("\t")[1:]
        types = dict(zip(names, next(ln for ln in lines if ln.startswith("#types")).split("\t")[1:], strict=True))
        for name, ztype, _ in fields:
            if ztype == "conn_id":
                assert [types[f"id.{k}"] for k in ("orig_h", "orig_p", "resp_h", "resp_p")] == [
                    "addr", "port", "addr", "port"], path.name
            else:
                want = "enum" if ztype == "transport_proto" else ztype
                assert types.get(name) == want, (path.name, name)
