"""Kind → class registry for ``[[source]]`` / ``[[sink]]`` tables, and their checks.

Classes are named lazily as ``"module:Class"`` so a kind whose module is not built or
whose dependency is missing only fails when it is configured (``ConfigError: source kind
'zmq' is not available``). Keys of a table (except ``kind`` and ``name``) are the class's
keyword arguments; they are checked against ``inspect.signature`` and, where the
constructor has annotations, against basic types (str, int, float, bool, list, dict,
optional/union of those; path-like accepts a string).
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import logging
import os
import re
import types
import typing
from pathlib import Path, PurePath
from typing import Any

from sidecar.config import PluginSpec
from sidecar.errors import ConfigError, SidecarError

log = logging.getLogger(__name__)

SOURCES: dict[str, str] = {
    "follow": "sidecar.service.follow_source:FollowSource",
    "eve_socket": "sidecar.sources.eve_socket:EveSocketSource",
    "broker_ws": "sidecar.sources.broker_ws:BrokerWsSource",
    "zmq": "sidecar.transports.zmq_flow:ZmqFlowSource",
    "zmq_verdicts": "sidecar.transports.zmq_flow:ZmqVerdictSource",
}
SINKS: dict[str, str] = {
    "notice_log": "sidecar.sinks.notice_log:NoticeLogSink",
    "eve_alert": "sidecar.sinks.eve_alert:EveAlertSink",
    "jsonl": "sidecar.sinks.jsonl:JsonlSink",
    "broker_ws": "sidecar.sinks.broker_ws:BrokerWsSink",
    "zmq": "sidecar.transports.zmq_flow:ZmqVerdictSink",
    "block": "sidecar.sinks.block:SuricataBlockSink",
}
REGISTRY: dict[str, dict[str, str]] = {"source": SOURCES, "sink": SINKS}


def resolve(role: str, kind: str) -> type[Any]:
    table = REGISTRY[role]
    if kind not in table:
        raise ConfigError(f"unknown {role} kind {kind!r} (known: {', '.join(sorted(table))})")
    modname, _, clsname = table[kind].partition(":")
    try:
        mod = importlib.import_module(modname)
    except ImportError as exc:
        raise ConfigError(f"{role} kind {kind!r} is not available ({modname}: {exc})") from exc
    cls = getattr(mod, clsname, None)
    if not isinstance(cls, type):
        raise ConfigError(f"{role} kind {kind!r} is not available ({modname} has no class {clsname})")
    return cls


def _hints(cls: type[Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable forward references: skip type checks, keep name checks
        return {}


def type_ok(value: Any, hint: Any) -> bool:
    """Basic check of a TOML value against an annotation; unknown annotations accept anything."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(type_ok(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str or hint is bytes:
        return isinstance(value, hint)
    if hint in (Path, PurePath, os.PathLike) or origin is os.PathLike:
        return isinstance(value, str)
    seq = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
    if hint in seq or origin in seq:
        return isinstance(value, list)
    if hint in (dict, collections.abc.Mapping) or origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    return True


def check_params(cls: type[Any], params: dict[str, Any], where: str) -> None:
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return
    ps = [p for p in sig.parameters.values() if p.name != "self"]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in ps)
    named = {p.name: p for p in ps if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    for key in params:
        if key not in named and not var_kw:
            raise ConfigError(
                f"{where}: unknown key {key!r} for {cls.__name__} (known: {', '.join(named) or 'none'})"
            )
    missing = [n for n, p in named.items() if p.default is inspect.Parameter.empty and n not in params]
    if missing:
        raise ConfigError(f"{where}: {cls.__name__} needs {', '.join(repr(m) for m in missing)}")
    hints = _hints(cls)
    for key, value in params.items():
        if key in hints and not type_ok(value, hints[key]):
            raise ConfigError(f"{where}: {key} = {value!r} has the wrong type for {cls.__name__} (want {hints[key]})")


def check_spec(spec: PluginSpec) -> type[Any]:
    cls = resolve(spec.role, spec.kind)
    check_params(cls, spec.params, f"{spec.origin} ({spec.kind})")
    return cls


def checkpoint_file(checkpoint_dir: str, spec: PluginSpec) -> str:
    """Default checkpoint path of a source inside ``checkpoint_dir``."""
    tag = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{spec.name}-{spec.params.get('path', '')}").strip("_")
    return str(Path(checkpoint_dir) / f"{tag[:120]}.ckpt.json")


def build(spec: PluginSpec, checkpoint_dir: str = "") -> Any:
    """Instantiate a source or sink; a source taking ``checkpoint`` gets one in ``checkpoint_dir``."""
    cls = check_spec(spec)
    params = dict(spec.params)
    if spec.role == "source" and checkpoint_dir and "checkpoint" not in params:
        try:
            takes = "checkpoint" in inspect.signature(cls.__init__).parameters
        except (TypeError, ValueError):
            takes = False
        if takes:
            Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
            params["checkpoint"] = checkpoint_file(checkpoint_dir, spec)
    try:
        return cls(**params)
    except SidecarError:
        raise
    except (TypeError, ValueError, OSError) as exc:
        raise ConfigError(f"{spec.origin} ({spec.kind}): {exc}") from exc
