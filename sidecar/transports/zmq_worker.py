"""A minimal ZeroMQ scorer worker: PULL flows → score → PUSH verdicts.

``python -m sidecar.transports.zmq_worker --pull tcp://ship:5555 --push tcp://collector:5556``

The same thing ``bnn-sidecar run`` does with a ``zmq`` source and a ``zmq`` sink, as
one small loop (tests and ``scripts/bench_zmq.py`` use it). A batch the scorer cannot
handle is rejected to the collector with its reason (never silently dropped).
SIGTERM/SIGINT stop it within ~0.2 s; prints a JSON summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from sidecar.errors import SidecarError
from sidecar.features.guess import GuessRule
from sidecar.features.rate import RateRule
from sidecar.transports.zmq_flow import ZmqFlowSource, ZmqVerdictSink

log = logging.getLogger(__name__)
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "data" / "model" / "bnn.onnx"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sidecar.transports.zmq_worker", description=__doc__.splitlines()[0])
    p.add_argument("--pull", required=True, help="ship's endpoint to PULL flow batches from (connects)")
    p.add_argument("--push", required=True, help="collector's endpoint to PUSH verdicts to (connects)")
    p.add_argument("--engine", default="onnx", choices=["onnx", "numpy"])
    p.add_argument("--model", default=str(DEFAULT_MODEL))
    p.add_argument("--hwm", type=int, default=4, help="receive high-water mark (batches queued here)")
    p.add_argument("--curve-secret", default="", help="this worker's .key_secret (optional)")
    p.add_argument("--curve-ship-key", default="", help="ship's public .key (enables CURVE to ship)")
    p.add_argument("--curve-collector-key", default="", help="collector's public .key (enables CURVE to the collector)")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="your own decision threshold in (0, 1) instead of the model's")
    p.add_argument("--family-agreement", action="store_true",
                   help="flag only when the model's family head also names an attack")
    p.add_argument("--rate-threshold", type=int, default=RateRule.threshold, metavar="N",
                   help="flood rule threshold (0 = off); it counts only the records this worker receives")
    p.add_argument("--guess-threshold", type=int, default=GuessRule.threshold, metavar="N",
                   help="guessing rule threshold (0 = off); it counts only the records this worker receives")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sidecar.scorer import make_scorer

    try:
        rule = RateRule(args.rate_threshold)
        guess = GuessRule(args.guess_threshold)
    except ValueError as exc:
        log.error("--rate-threshold/--guess-threshold: %s", exc)
        return 2
    try:
        scorer = make_scorer(args.model, args.engine, rule, threshold=args.threshold,
                             family_agreement=args.family_agreement, guess=guess)
        src = ZmqFlowSource(args.pull, hwm=args.hwm, rejects=args.push, curve_secret=args.curve_secret,
                            curve_server=args.curve_ship_key, curve_rejects_server=args.curve_collector_key)
        sink = ZmqVerdictSink(args.push, curve_secret=args.curve_secret, curve_server=args.curve_collector_key)
    except SidecarError as exc:
        log.error("%s", exc)
        return 1

    def _stop(signum: int, frame: FrameType | None) -> None:
        src.close()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print("worker ready", file=sys.stderr, flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    scored = rejected = errors = 0
    try:
        for batch in src:
            try:
                v = scorer.score(batch)
            except (SidecarError, ValueError, TypeError, IndexError) as exc:
                log.error("cannot score a batch of %d records: %s", len(batch), exc)
                src.reject_batch(batch, "score-error", str(exc))
                rejected += len(batch)
                continue
            try:
                sink.write(v)
                scored += len(v)
            except SidecarError as exc:  # collector gone for send_timeout: ship will resend
                errors += 1
                log.error("%s", exc)
    finally:
        sink.close()
    summary = {"scored": scored, "rejected": rejected, "send_errors": errors, "batches": src.batches,
               **src.stats.as_dict(), "seconds": round(time.perf_counter() - t0, 3),
               "cpu_s": round(time.process_time() - c0, 3)}
    print(f"worker summary: {json.dumps(summary)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
