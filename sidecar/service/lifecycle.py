"""Building a :class:`Service` from a :class:`Config`, and process signals.

SIGTERM / SIGINT → :meth:`Service.request_stop` (close sources, drain, flush, close
sinks, save checkpoints, exit 0). SIGHUP → :meth:`Service.request_reopen` (sinks
reopen their files after log rotation). Handlers only set events; all work happens
in the scoring loop.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from sidecar.config import Config, PluginSpec, parse_listen
from sidecar.errors import ConfigError
from sidecar.service import registry
from sidecar.service.metrics import Metrics
from sidecar.service.pipeline import Service

log = logging.getLogger(__name__)


def close_all(objs: list[tuple[str, Any]]) -> None:
    for label, o in objs:
        try:
            o.close()
        except Exception as exc:
            log.error("%s: close failed: %s", label, exc)


def build_service(cfg: Config, idle_exit: float = 0.0, once: bool = False,
                  with_metrics: bool = True) -> tuple[Service, Metrics | None]:
    """Instantiate the model, sinks and sources of ``cfg`` (nothing runs yet)."""
    from sidecar.config import guess_rule, rate_rule
    from sidecar.scorer import make_scorer

    if not cfg.sources:
        raise ConfigError("no [[source]] configured: nothing to score")
    if not cfg.sinks:
        log.warning("no [[sink]] configured: verdicts are only counted")
    scorer = make_scorer(cfg.model_path(), cfg.sidecar.engine, rate_rule(cfg.sidecar),
                         threshold=cfg.sidecar.threshold or None, family_agreement=cfg.sidecar.family_agreement,
                         guess=guess_rule(cfg.sidecar))
    sinks: list[tuple[str, Any]] = []
    sources: list[tuple[str, Any]] = []
    try:
        for spec in cfg.sinks:
            sinks.append((spec.name, registry.build(spec)))
        for spec in cfg.sources:
            src = registry.build(spec, cfg.sidecar.checkpoint_dir)
            if once and hasattr(src, "once"):
                src.once = True
            sources.append((spec.name, src))
    except BaseException:
        close_all(sources)
        close_all(sinks)
        raise
    if once and not idle_exit and any(not hasattr(s, "once") for _, s in sources):
        idle_exit = 1.0  # live sources without a notion of "end": stop when they go quiet
    metrics = Metrics() if with_metrics else None
    svc = Service(sources, sinks, scorer, batch_max=cfg.sidecar.batch_max, batch_ms=cfg.sidecar.batch_ms,
                  queue_batches=cfg.sidecar.queue_batches, checkpoint_interval=cfg.sidecar.checkpoint_interval,
                  idle_exit=idle_exit, metrics=metrics, close_when_idle=cfg.sidecar.close_when_idle)
    if metrics is not None:
        from sidecar.engines.load import sha256_file

        metrics.model_info.info({"model": cfg.model_path(), "sha256": sha256_file(cfg.model_path()),
                                 "engine": cfg.sidecar.engine, "model_id": scorer.model_id})
    return svc, metrics


def serve_metrics(cfg: Config, metrics: Metrics | None) -> tuple[str, int] | None:
    if metrics is None or not cfg.metrics.listen:
        return None
    host, port = parse_listen(cfg.metrics.listen)
    return metrics.serve(host, port)


def install_signals(svc: Service) -> Callable[[], None]:
    """Route SIGTERM/SIGINT/SIGHUP to ``svc``; return a function restoring the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        svc.request_stop()

    def _hup(signum: int, frame: FrameType | None) -> None:
        svc.request_reopen()

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _hup)

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore


__all__ = ["PluginSpec", "build_service", "close_all", "install_signals", "serve_metrics"]
