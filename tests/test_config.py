"""Config: file → env → flags with origins, unknown keys and wrong types named, show-config."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sidecar.config import load_config, parse_listen
from sidecar.errors import ConfigError
from sidecar.service import registry

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sidecar" / "data" / "etc" / "sidecar.toml"

BASE = """
[sidecar]
engine = "numpy"
batch_ms = 20
[[source]]
kind = "follow"
path = "/tmp/conn.log"
[[sink]]
kind = "jsonl"
path = "/tmp/v.jsonl"
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_sample_config_is_valid_and_complete() -> None:
    cfg = load_config(SAMPLE, env={})
    assert cfg.sidecar.engine == "onnx" and cfg.sidecar.batch_max == 1024 and cfg.sidecar.batch_ms == 50.0
    assert cfg.metrics.listen == "127.0.0.1:9469"
    assert [s.kind for s in cfg.sources] == ["follow"]
    assert [s.kind for s in cfg.sinks] == ["notice_log", "eve_alert"]
    assert all(o.startswith("file ") for k, o in cfg.origins.items())
    assert Path(cfg.model_path()).is_file()


def test_precedence_and_origins(tmp_path: Path) -> None:
    p = _write(tmp_path, BASE)
    env = {"BNN_SIDECAR_SIDECAR_BATCH_MAX": "256", "BNN_SIDECAR_SIDECAR_ENGINE": "onnx",
           "BNN_SIDECAR_METRICS_LISTEN": "", "UNRELATED": "x"}
    cfg = load_config(p, env=env, flags={"sidecar.engine": ("--engine", "numpy"),
                                         "sidecar.batch_ms": ("--batch-ms", None)})
    assert cfg.sidecar.batch_max == 256 and cfg.origins["sidecar.batch_max"] == "env BNN_SIDECAR_SIDECAR_BATCH_MAX"
    assert cfg.sidecar.engine == "numpy" and cfg.origins["sidecar.engine"] == "flag --engine"
    assert cfg.sidecar.batch_ms == 20.0 and cfg.origins["sidecar.batch_ms"] == f"file {p}"
    assert cfg.metrics.listen == "" and cfg.origins["metrics.listen"] == "env BNN_SIDECAR_METRICS_LISTEN"
    assert cfg.origins["sidecar.checkpoint_dir"] == "default"
    assert cfg.sources[0].params == {"path": "/tmp/conn.log"} and cfg.sources[0].name == "follow"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[sidecar]\nengin = 'onnx'\n", "'engin'"),
        ("[sidecars]\n", "'sidecars'"),
        ("[metrics]\nport = 1\n", "'port'"),
        ("[[source]]\nkind = 'follow'\npath = 'x'\npoll_msec = 5\n", "'poll_msec'"),
        ("[[sink]]\nkind = 'notice_log'\npath = 'x'\nformat = 'tsv'\n", "'format'"),
        ("[[sink]]\nkind = 'jsonl'\n", "'path'"),
        ("[sidecar]\nbatch_max = '10'\n", "batch_max"),
        ("[sidecar]\nbatch_max = true\n", "batch_max"),
        ("[[source]]\nkind = 'follow'\npath = 'x'\npoll_ms = 'fast'\n", "poll_ms"),
        ("[[sink]]\nkind = 'notice_log'\npath = 'x'\nsuppress_for = 'long'\n", "suppress_for"),
        ("[[source]]\nkind = 'follo'\npath = 'x'\n", "unknown source kind 'follo'"),
        ("[[source]]\npath = 'x'\n", "missing 'kind'"),
        ("[source]\nkind = 'follow'\n", "array of tables"),
        ("[sidecar]\nengine = 'gpu'\n", "sidecar.engine"),
        ("[sidecar]\nbatch_ms = 0\n", "batch_ms"),
        ("[metrics]\nlisten = 'localhost'\n", "host:port"),
        ("[[sink]]\nkind = 'jsonl'\npath = 'a'\n[[sink]]\nkind = 'jsonl'\npath = 'b'\nname = 'jsonl0'\n", "duplicate"),
        ("[sidecar\n", "invalid TOML"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(_write(tmp_path, text), env={})
    assert needle in str(ei.value)


def test_bad_env_values() -> None:
    with pytest.raises(ConfigError, match="BNN_SIDECAR_SIDECAR_BATCH_MAX"):
        load_config(None, env={"BNN_SIDECAR_SIDECAR_BATCH_MAX": "many"})
    with pytest.raises(ConfigError, match="'nope'"):
        load_config(None, env={"BNN_SIDECAR_SIDECAR_NOPE": "1"})
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/sidecar.toml", env={})


def test_kind_whose_module_is_missing_is_not_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.SOURCES, "future", "sidecar.sources.does_not_exist:Nope")
    with pytest.raises(ConfigError, match="source kind 'future' is not available"):
        load_config(_write(tmp_path, "[[source]]\nkind = 'future'\n"), env={})


def test_type_checks_from_annotations() -> None:
    from typing import Literal

    assert registry.type_ok("x", str | None) and registry.type_ok(None, str | None)
    assert not registry.type_ok(3, str | None)
    assert registry.type_ok(3, float) and not registry.type_ok(True, int)
    assert registry.type_ok("p", Path) and registry.type_ok(["a"], list[str]) and not registry.type_ok("a", list[str])
    assert registry.type_ok("tsv", Literal["tsv", "json"]) and not registry.type_ok("csv", Literal["tsv", "json"])
    assert parse_listen("[::1]:9469") == ("::1", 9469)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidecar.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_show_config_prints_values_and_origins(tmp_path: Path) -> None:
    import os

    p = _write(tmp_path, BASE)
    env = {**os.environ, "BNN_SIDECAR_SIDECAR_BATCH_MAX": "512"}
    r = _cli("show-config", "--config", str(p), "--batch-ms", "7.5", env=env)
    assert r.returncode == 0, r.stderr
    assert 'engine = "numpy"  # file ' in r.stdout
    assert "batch_max = 512  # env BNN_SIDECAR_SIDECAR_BATCH_MAX" in r.stdout
    assert "batch_ms = 7.5  # flag --batch-ms" in r.stdout
    again = tomllib.loads(r.stdout)  # the annotated output is itself valid TOML
    assert again["sidecar"]["batch_max"] == 512 and again["source"][0]["path"] == "/tmp/conn.log"
    j = _cli("show-config", "--config", str(p), "--json", env=env)
    d = json.loads(j.stdout)
    assert d["sidecar"]["batch_max"] == {"value": 512, "origin": "env BNN_SIDECAR_SIDECAR_BATCH_MAX"}
    assert d["sink"][0]["kind"] == "jsonl"
    bad = _write(tmp_path, BASE + "bogus = 1\n")
    r = _cli("show-config", "--config", str(bad))
    assert r.returncode == 1 and "'bogus'" in r.stderr


def test_sample_block_section_validates_when_enabled(tmp_path: Path) -> None:
    """The commented `block` sink of the sample config is a working example, not prose."""
    text = SAMPLE.read_text()
    i = text.index('# [[sink]]\n# kind = "block"')
    enabled = "\n".join(ln[2:] if ln.startswith("# ") else ln for ln in text[i:].splitlines())
    p = tmp_path / "with-block.toml"
    p.write_text(text[:i] + enabled + "\n")
    cfg = load_config(p, env={})
    block = [s for s in cfg.sinks if s.kind == "block"]
    assert len(block) == 1 and block[0].params["dry_run"] is True
