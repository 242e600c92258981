"""``bnn-sidecar score``: score record files with the model, one JSON verdict per flow."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import IO

import orjson

from sidecar.errors import InputError
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import FORMATS, read_path

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


def run(args: argparse.Namespace) -> int:
    from sidecar.scorer import make_scorer

    scorer = make_scorer(args.model, args.engine)
    out: IO[bytes] = sys.stdout.buffer if args.out == "-" else open(args.out, "wb")  # noqa: SIM115
    total = ReadStats()
    t0 = time.perf_counter()
    try:
        for path in args.input:
            stats = ReadStats()
            try:
                for batch in read_path(path, args.format, stats, batch_size=args.batch):
                    v = scorer.score(batch)
                    if args.only_malicious:
                        v = v.take(v.malicious)
                    out.write(b"".join(orjson.dumps(r) + b"\n" for r in v.iter_json()))
            except InputError as exc:
                log.error("%s", exc)
            total.merge(stats)
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    dt = time.perf_counter() - t0
    summary = {**total.as_dict(), "scored": scorer.scored, "flagged": dict(scorer.flagged),
               "seconds": round(dt, 3), "model": scorer.model_id}
    print(f"summary: {orjson.dumps(summary).decode()}", file=sys.stderr)
    return 1 if scorer.scored == 0 else 0
