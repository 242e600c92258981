"""``bnn-sidecar score``: score record files with the model, one JSON verdict per flow.

``--follow`` tails one growing log (rotation-safe, optional ``--checkpoint``) and scores
it with bounded-latency micro-batching: a batch closes at ``--batch`` records or
``--batch-ms`` milliseconds after its first record, whichever comes first (the same
service loop as ``bnn-sidecar run``). SIGTERM/SIGINT drain and exit.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

import orjson

from sidecar.errors import InputError
from sidecar.features.guess import GuessRule
from sidecar.features.rate import RateRule
from sidecar.jsonlines import score_to_json_lines
from sidecar.networks import split_networks
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import FORMATS, read_path

if TYPE_CHECKING:
    from sidecar.scorer import Scorer

log = logging.getLogger(__name__)
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "data" / "model" / "bnn.onnx"


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", "-i", nargs="+", required=True, metavar="PATH")
    p.add_argument("--format", "-f", default="auto", choices=["auto", *FORMATS])
    p.add_argument("--model", "-m", default=str(DEFAULT_MODEL), help="ONNX model (its .sha256 must sit beside it)")
    p.add_argument("--engine", "-e", default="onnx", choices=["onnx", "numpy"])
    p.add_argument("--out", "-o", default="-", help="verdict JSON lines file, '-' for stdout")
    p.add_argument("--only-malicious", action="store_true", help="write only malicious verdicts")
    p.add_argument("--batch", type=int, default=1024, help="records per micro-batch")
    p.add_argument("--batch-ms", type=float, default=50.0,
                   help="with --follow: a micro-batch closes this many ms after its first record")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="your own decision threshold in (0, 1) instead of the model's bnn.threshold1 (0.269 shipped): "
                        "lower finds more and flags more benign traffic")
    p.add_argument("--family-agreement", action="store_true",
                   help="flag only when the model's family vote also names an attack: fewer benign alerts, "
                        "some scans missed (model card, 'Operating points')")
    p.add_argument("--rate-threshold", type=int, default=RateRule.threshold, metavar="N",
                   help="flood rule: flag a flow when its client sent N or more records to the same service "
                        "(resp_h, resp_p, proto) within 1-2 time buckets; 0 = off (default %(default)s)")
    p.add_argument("--rate-window", type=float, default=RateRule.window_s, metavar="SECONDS",
                   help="flood rule: time bucket in seconds; the count covers 1-2 buckets (default %(default)s)")
    p.add_argument("--rate-ignore", default="", metavar="CIDR[,CIDR...]",
                   help="flood and guessing rules: client networks they never flag (proxies, NAT gateways, "
                        "load balancers, monitoring hosts)")
    p.add_argument("--guess-threshold", type=int, default=GuessRule.threshold, metavar="N",
                   help="guessing rule: flag a login session (SSH, FTP, telnet, ...) when its client opened N or more "
                        "to the same service within 1-2 time buckets; 0 = off (default %(default)s)")
    p.add_argument("--guess-window", type=float, default=GuessRule.window_s, metavar="SECONDS",
                   help="guessing rule: time bucket in seconds (default %(default)s)")
    p.add_argument("--follow", action="store_true", help="follow one growing conn.log/eve.json (rotation-safe)")
    p.add_argument("--checkpoint", help="with --follow: checkpoint file (resume after a restart)")
    p.add_argument("--poll-ms", type=int, default=200, help="with --follow: milliseconds between polls when idle")
    p.add_argument("--idle-exit", type=float, default=0.0,
                   help="with --follow: exit after this many seconds without new records (0: never)")


def run(args: argparse.Namespace) -> int:
    from sidecar.scorer import make_scorer

    try:
        rule = RateRule(args.rate_threshold, args.rate_window, split_networks(args.rate_ignore))
        guess = GuessRule(args.guess_threshold, args.guess_window)
    except ValueError as exc:
        log.error("--rate-threshold/--rate-window/--rate-ignore/--guess-threshold/--guess-window: %s", exc)
        return 2
    scorer = make_scorer(args.model, args.engine, rule, threshold=args.threshold,
                         family_agreement=args.family_agreement, guess=guess)
    if args.follow:
        return _follow(args, scorer)
    out: IO[bytes] = sys.stdout.buffer if args.out == "-" else open(args.out, "wb")  # noqa: SIM115
    total = ReadStats()
    t0 = time.perf_counter()
    try:
        for path in args.input:
            stats = ReadStats()
            try:
                score_to_json_lines(read_path(path, args.format, stats, batch_size=args.batch), scorer,
                                    out.write, args.only_malicious)
            except InputError as exc:
                log.error("%s", exc)
            total.merge(stats)
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    dt = time.perf_counter() - t0
    summary = {**total.as_dict(), "scored": scorer.scored, "flagged": dict(scorer.flagged),
               "flagged_by_rate_rule": scorer.rate_flagged, "spared_by_rate_ignore": scorer.rate_ignored,
               "reclassed_by_rate_rule": scorer.rate_relabelled,
               "flagged_by_guess_rule": scorer.guess_flagged, "reclassed_by_guess_rule": scorer.guess_relabelled,
               "vetoed_by_family_agreement": scorer.family_vetoed,
               "duplicate_packet_check": scorer.capture.summary(),
               "seconds": round(dt, 3), "model": scorer.model_id}
    print(f"summary: {orjson.dumps(summary).decode()}", file=sys.stderr)
    return 1 if scorer.scored == 0 else 0


def _follow(args: argparse.Namespace, scorer: Scorer) -> int:
    from sidecar.service.follow_source import FollowSource
    from sidecar.service.lifecycle import install_signals
    from sidecar.service.pipeline import Service
    from sidecar.sinks.jsonl import JsonlSink

    if len(args.input) != 1:
        raise InputError("--follow takes exactly one --input file")
    if args.batch < 1 or args.batch_ms <= 0:
        raise InputError("--batch must be >= 1 and --batch-ms > 0")
    try:
        src = FollowSource(args.input[0], args.format, args.checkpoint, args.poll_ms, args.batch)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    sink = JsonlSink(args.out, only_malicious=args.only_malicious)
    svc = Service([("follow", src)], [("out", sink)], scorer, batch_max=args.batch, batch_ms=args.batch_ms,
                  idle_exit=args.idle_exit)
    restore = install_signals(svc)
    t0 = time.perf_counter()
    try:
        acc = svc.run()
    finally:
        restore()
    summary = {**src.stats.as_dict(), "scored": acc["scored"], "flagged": dict(scorer.flagged),
               "seconds": round(time.perf_counter() - t0, 3), "model": scorer.model_id}
    print(f"summary: {orjson.dumps(summary).decode()}", file=sys.stderr)
    return 0
