"""``bnn-sidecar run --config sidecar.toml``: the long-running sidecar service.

Sources → micro-batching scorer → sinks, as configured (see docs/SERVICE.md). SIGTERM /
SIGINT drain and exit 0, SIGHUP reopens sink files. The accounting summary (records
in = scored + forwarded + skipped by reason) is printed on stderr at exit as
``summary: {json}``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import orjson

from sidecar.config import Config, load_config

log = logging.getLogger(__name__)

#: flag dest -> config key (shared with show-config)
FLAG_KEYS: dict[str, tuple[str, str]] = {
    "model": ("sidecar.model", "--model"),
    "engine": ("sidecar.engine", "--engine"),
    "batch_max": ("sidecar.batch_max", "--batch-max"),
    "batch_ms": ("sidecar.batch_ms", "--batch-ms"),
    "checkpoint_dir": ("sidecar.checkpoint_dir", "--checkpoint-dir"),
    "threshold": ("sidecar.threshold", "--threshold"),
    "family_agreement": ("sidecar.family_agreement", "--family-agreement"),
    "rate_threshold": ("sidecar.rate_threshold", "--rate-threshold"),
    "rate_ignore": ("sidecar.rate_ignore", "--rate-ignore"),
    "guess_threshold": ("sidecar.guess_threshold", "--guess-threshold"),
    "metrics_listen": ("metrics.listen", "--metrics-listen"),
}


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="TOML config file (see sidecar/data/etc/sidecar.toml)")
    p.add_argument("--model", "-m", help="ONNX model (overrides sidecar.model)")
    p.add_argument("--engine", "-e", choices=["onnx", "numpy"], help="overrides sidecar.engine")
    p.add_argument("--batch-max", type=int, help="micro-batch size limit (overrides sidecar.batch_max)")
    p.add_argument("--batch-ms", type=float, help="micro-batch age limit in ms (overrides sidecar.batch_ms)")
    p.add_argument("--checkpoint-dir", help="overrides sidecar.checkpoint_dir")
    p.add_argument("--threshold", type=float, metavar="T",
                   help="your own decision threshold in (0, 1) instead of the model's (overrides sidecar.threshold)")
    p.add_argument("--family-agreement", action="store_const", const=True, default=None,
                   help="flag only when the family vote also names an attack (overrides sidecar.family_agreement)")
    p.add_argument("--rate-threshold", type=int, metavar="N",
                   help="flood rule: records per client+service in 1-2 s that flag it, 0 = off "
                        "(overrides sidecar.rate_threshold)")
    p.add_argument("--rate-ignore", metavar="CIDR[,CIDR...]",
                   help="flood and guessing rules: client networks they never flag (overrides sidecar.rate_ignore)")
    p.add_argument("--guess-threshold", type=int, metavar="N",
                   help="guessing rule: login sessions per client+service in 1-2 min that flag it, 0 = off "
                        "(overrides sidecar.guess_threshold)")
    p.add_argument("--metrics-listen", help="host:port for /metrics, '' disables (overrides metrics.listen)")


def config_from_args(args: argparse.Namespace, validate: bool = True) -> Config:
    flags = {key: (flag, getattr(args, dest)) for dest, (key, flag) in FLAG_KEYS.items()}
    return load_config(args.config, flags=flags, validate=validate)


def add_parser(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--once", action="store_true",
                   help="read what the sources have now, score it and exit (tests, batch jobs)")
    p.add_argument("--idle-exit", type=float, default=0.0, metavar="SECONDS",
                   help="stop after this many seconds without new records (0: never)")


def run(args: argparse.Namespace) -> int:
    from sidecar.service.lifecycle import build_service, close_all, install_signals, serve_metrics

    cfg = config_from_args(args)
    svc, metrics = build_service(cfg, idle_exit=args.idle_exit, once=args.once)
    try:
        serve_metrics(cfg, metrics)
    except BaseException:
        close_all(svc.sources)
        close_all(svc.sinks)
        raise
    restore = install_signals(svc)
    try:
        log.info("running: %d source(s), %d sink(s), model %s (%s)", len(svc.sources), len(svc.sinks),
                 svc.scorer.model_id, cfg.sidecar.engine)
        summary: dict[str, Any] = svc.run()
    finally:
        restore()
        if metrics is not None:
            metrics.stop()
    summary["unaccounted"] = summary.pop("inflight")
    print(f"summary: {orjson.dumps(summary).decode()}", file=sys.stderr, flush=True)
    return 0 if summary["unaccounted"] == 0 else 1
