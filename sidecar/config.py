"""The one typed configuration of the sidecar service: file → environment → flags.

``load_config(path, env, flags)`` reads a TOML file (``tomllib``), then applies
``BNN_SIDECAR_<SECTION>_<KEY>`` environment variables to the scalar ``[sidecar]`` /
``[metrics]`` keys, then command-line flags. Every value's origin is recorded in
``Config.origins`` (``default``, ``file <path>``, ``env <VAR>``, ``flag <--name>``), which
``bnn-sidecar show-config`` prints.

Unknown keys are errors naming the key. ``[[source]]`` / ``[[sink]]`` tables are checked
against the constructor of the class registered for their ``kind``
(:mod:`sidecar.service.registry`): every key except ``kind`` and ``name`` is a keyword
argument, so an unknown key, a missing required argument or a value of the wrong basic
type is a :class:`~sidecar.errors.ConfigError` before anything starts.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sidecar.errors import ConfigError

if TYPE_CHECKING:
    from sidecar.features.guess import GuessRule
    from sidecar.features.rate import RateRule

ENV_PREFIX = "BNN_SIDECAR_"
ENGINES = ("onnx", "numpy")


@dataclass
class SidecarSection:
    #: ONNX model path; "" = the shipped default model
    model: str = ""
    #: inference engine: onnx | numpy
    engine: str = "onnx"
    #: a micro-batch closes at this many records ...
    batch_max: int = 1024
    #: ... or this many milliseconds after its first record, whichever comes first
    batch_ms: float = 50.0
    #: ... or as soon as no more input is waiting (lowest latency; under load batches still fill up)
    close_when_idle: bool = True
    #: where follow sources keep checkpoints ("" = none)
    checkpoint_dir: str = ""
    #: bounded queue between source threads and the scoring loop, in batches (back-pressure)
    queue_batches: int = 64
    #: seconds between sink flush + checkpoint saves while running
    checkpoint_interval: float = 1.0
    #: the model's decision threshold, your own (0 = the model's ``bnn.threshold1``, 0.269 shipped);
    #: lower finds more and flags more benign traffic (model card: measured trade-offs)
    threshold: float = 0.0
    #: also require the model's family vote (both BNNs' family heads) to name an attack (not benign):
    #: fewer benign alerts at some cost in scans (model card, "Operating points"); off by default
    family_agreement: bool = False
    #: flood rule: flag a flow whose (orig_h, resp_h, resp_p, proto) had at least this many
    #: records in its time bucket and the one before (0 = off); see sidecar/features/rate.py
    rate_threshold: int = 50
    #: flood rule: time bucket in seconds (the count covers one to two buckets)
    rate_window_s: float = 1.0
    #: flood and guessing rules: client networks they never flag, comma-separated CIDRs (proxies,
    #: NAT gateways, load balancers, monitoring hosts); "" = none
    rate_ignore: str = ""
    #: guessing rule: flag a login session (SSH, FTP, telnet, RDP, ... with payload both ways) whose
    #: client opened at least this many to the same service in its time bucket and the one before
    #: (0 = off); see sidecar/features/guess.py
    guess_threshold: int = 10
    #: guessing rule: time bucket in seconds (the count covers one to two buckets)
    guess_window_s: float = 60.0


@dataclass
class MetricsSection:
    #: "host:port" of the Prometheus /metrics endpoint; "" disables it
    listen: str = "127.0.0.1:9469"


@dataclass
class PluginSpec:
    """One ``[[source]]`` or ``[[sink]]`` table."""

    role: str  # "source" | "sink"
    kind: str
    name: str
    params: dict[str, Any]
    origin: str


@dataclass
class Config:
    sidecar: SidecarSection = field(default_factory=SidecarSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    sources: list[PluginSpec] = field(default_factory=list)
    sinks: list[PluginSpec] = field(default_factory=list)
    #: "section.key" -> where the value came from
    origins: dict[str, str] = field(default_factory=dict)
    path: str | None = None

    def model_path(self) -> str:
        if self.sidecar.model:
            return self.sidecar.model
        from sidecar.cli.score import DEFAULT_MODEL

        return str(DEFAULT_MODEL)


SECTIONS: dict[str, type[Any]] = {"sidecar": SidecarSection, "metrics": MetricsSection}
PLUGIN_TABLES = {"source": "source", "sink": "sink"}


def _section_types(cls: type[Any]) -> dict[str, type[Any]]:
    types = {"str": str, "int": int, "float": float, "bool": bool}
    return {f.name: types[str(f.type)] for f in dataclasses.fields(cls)}


def _coerce(value: Any, typ: type[Any], where: str) -> Any:
    """Check a TOML value against a section field type (int is fine for float)."""
    if typ is bool:
        ok = isinstance(value, bool)
    elif typ is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, typ)
    if not ok:
        raise ConfigError(f"{where}: expected {typ.__name__}, got {type(value).__name__} {value!r}")
    return value


def _parse_env(text: str, typ: type[Any], var: str) -> Any:
    try:
        if typ is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(text)
        if typ is int:
            return int(text)
        if typ is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"environment {var}={text!r}: expected {typ.__name__}") from None
    return text


def _check_values(cfg: Config) -> None:
    s = cfg.sidecar
    if s.engine not in ENGINES:
        raise ConfigError(f"sidecar.engine = {s.engine!r} ({cfg.origins['sidecar.engine']}): choose one of {ENGINES}")
    if s.batch_max < 1:
        raise ConfigError(f"sidecar.batch_max must be >= 1, got {s.batch_max}")
    if not 0 < s.batch_ms <= 60_000:
        raise ConfigError(f"sidecar.batch_ms must be in (0, 60000], got {s.batch_ms}")
    if s.queue_batches < 1:
        raise ConfigError(f"sidecar.queue_batches must be >= 1, got {s.queue_batches}")
    if s.checkpoint_interval <= 0:
        raise ConfigError(f"sidecar.checkpoint_interval must be > 0, got {s.checkpoint_interval}")
    if not 0.0 <= s.threshold < 1.0:
        raise ConfigError(f"sidecar.threshold must be in [0, 1) (0 = the model's own), got {s.threshold}")
    rate_rule(s)
    guess_rule(s)
    if cfg.metrics.listen:
        parse_listen(cfg.metrics.listen)


def rate_rule(s: SidecarSection) -> RateRule:
    """The flood rule of ``[sidecar]`` (:class:`sidecar.features.rate.RateRule`), checked."""
    from sidecar.features.rate import RateRule as Rule
    from sidecar.networks import split_networks

    try:
        ignore = split_networks(s.rate_ignore)
    except ValueError as exc:
        raise ConfigError(f"sidecar.rate_ignore: {exc}") from None
    try:
        return Rule(s.rate_threshold, s.rate_window_s, ignore)
    except ValueError as exc:
        raise ConfigError(f"sidecar.{exc}") from None


def guess_rule(s: SidecarSection) -> GuessRule:
    """The guessing rule of ``[sidecar]`` (:class:`sidecar.features.guess.GuessRule`), checked."""
    from sidecar.features.guess import GuessRule as Rule

    try:
        return Rule(s.guess_threshold, s.guess_window_s)
    except ValueError as exc:
        raise ConfigError(f"sidecar.{exc}") from None


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9469"`` / ``"[::1]:9469"`` → (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"metrics.listen {listen!r} is not host:port")
    host = host.strip("[]")
    try:
        p = int(port)
    except ValueError:
        raise ConfigError(f"metrics.listen {listen!r}: port {port!r} is not a number") from None
    if not 0 <= p <= 65535:
        raise ConfigError(f"metrics.listen {listen!r}: port out of range")
    return host, p


def _plugins(role: str, raw: Any, origin: str) -> list[PluginSpec]:
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ConfigError(f"{origin}: '{role}' must be an array of tables ([[{role}]])")
    out: list[PluginSpec] = []
    for i, table in enumerate(raw):
        where = f"{origin} [[{role}]] #{i + 1}"
        kind = table.get("kind")
        if not isinstance(kind, str) or not kind:
            raise ConfigError(f"{where}: missing 'kind'")
        same_kind = sum(1 for t in raw if t.get("kind") == kind)
        name = table.get("name", kind if same_kind == 1 else f"{kind}{i}")
        if not isinstance(name, str):
            raise ConfigError(f"{where}: 'name' must be a string")
        params = {k: v for k, v in table.items() if k not in ("kind", "name")}
        out.append(PluginSpec(role, kind, name, params, where))
    names = [p.name for p in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{origin}: duplicate {role} name(s) {sorted(dup)}; give each a distinct 'name'")
    return out


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, tuple[str, Any]] | None = None,
    validate: bool = True,
) -> Config:
    """Build the effective config.

    ``flags`` maps ``"section.key"`` to ``(flag_name, value)``; a ``None`` value means the
    flag was not given. ``validate`` also resolves every source/sink kind and checks its
    keys against the target class's constructor.
    """
    cfg = Config(path=None if path is None else str(path))
    for sec in SECTIONS:
        for key in _section_types(SECTIONS[sec]):
            cfg.origins[f"{sec}.{key}"] = "default"
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {p} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {p}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: invalid TOML: {exc}") from exc
        _apply_file(cfg, data, str(p))
    _apply_env(cfg, os.environ if env is None else env)
    for dotted, (flag, value) in (flags or {}).items():
        if value is None:
            continue
        sec, _, key = dotted.partition(".")
        types = _section_types(SECTIONS[sec])
        if key not in types:
            raise ConfigError(f"unknown config key {dotted!r} for flag {flag}")
        setattr(getattr(cfg, sec), key, _coerce(value, types[key], f"flag {flag}"))
        cfg.origins[dotted] = f"flag {flag}"
    _check_values(cfg)
    if validate:
        from sidecar.service.registry import check_spec

        for spec in [*cfg.sources, *cfg.sinks]:
            check_spec(spec)
    return cfg


def _apply_file(cfg: Config, data: dict[str, Any], origin: str) -> None:
    for top, val in data.items():
        if top in SECTIONS:
            if not isinstance(val, dict):
                raise ConfigError(f"{origin}: [{top}] must be a table")
            types = _section_types(SECTIONS[top])
            for key, v in val.items():
                if key not in types:
                    raise ConfigError(
                        f"{origin}: unknown key {key!r} in [{top}] (known: {', '.join(types)})"
                    )
                setattr(getattr(cfg, top), key, _coerce(v, types[key], f"{origin}: {top}.{key}"))
                cfg.origins[f"{top}.{key}"] = f"file {origin}"
        elif top == "source":
            cfg.sources = _plugins("source", val, origin)
        elif top == "sink":
            cfg.sinks = _plugins("sink", val, origin)
        else:
            raise ConfigError(
                f"{origin}: unknown key {top!r} at top level (known: sidecar, metrics, source, sink)"
            )


def _apply_env(cfg: Config, env: Mapping[str, str]) -> None:
    for var, text in env.items():
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        for sec, cls in SECTIONS.items():
            if rest.startswith(sec + "_"):
                key = rest[len(sec) + 1 :]
                types = _section_types(cls)
                if key not in types:
                    raise ConfigError(f"environment {var}: unknown key {key!r} in [{sec}]")
                setattr(getattr(cfg, sec), key, _parse_env(text, types[key], var))
                cfg.origins[f"{sec}.{key}"] = f"env {var}"
                break


def effective(cfg: Config) -> dict[str, Any]:
    """The effective config as plain data with origins (``show-config --json``)."""
    out: dict[str, Any] = {}
    for sec in SECTIONS:
        obj = getattr(cfg, sec)
        out[sec] = {
            f.name: {"value": getattr(obj, f.name), "origin": cfg.origins[f"{sec}.{f.name}"]}
            for f in dataclasses.fields(obj)
        }
    out["sidecar"]["model"]["resolved"] = cfg.model_path()
    for role, specs in (("source", cfg.sources), ("sink", cfg.sinks)):
        out[role] = [{"kind": s.kind, "name": s.name, **s.params, "origin": s.origin} for s in specs]
    return out
