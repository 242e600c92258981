"""``bnn-sidecar flows``: read records of any format, write canonical flows as JSON lines."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import IO

import orjson

from sidecar.errors import InputError
from sidecar.flow import schema_table
from sidecar.jsonlines import json_lines
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import FORMATS, read_path

log = logging.getLogger(__name__)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", "-i", nargs="+", metavar="PATH", help="record files (plain or .gz)")
    p.add_argument("--format", "-f", default="auto", choices=["auto", *FORMATS])
    p.add_argument("--out", "-o", default="-", help="output file for JSON lines, '-' for stdout")
    p.add_argument("--no-records", action="store_true", help="only print the summary")
    p.add_argument("--schema", action="store_true", help="print the canonical record table and exit")
    p.add_argument("--follow", action="store_true", help="follow one growing conn.log/eve.json (rotation-safe)")
    p.add_argument("--checkpoint", help="with --follow: checkpoint file for exact resume after a crash")
    p.add_argument("--poll", type=float, default=0.2, help="with --follow: seconds between polls")
    p.add_argument("--idle-exit", type=float, default=0.0, help="with --follow: exit after this many idle seconds (0: never)")


def run(args: argparse.Namespace) -> int:
    if args.schema:
        print(schema_table())
        return 0
    if not args.input:
        raise InputError("flows needs --input PATH...")
    if args.follow:
        from sidecar.cli.follow_flows import follow

        return follow(args)
    out: IO[bytes] | None = None
    if not args.no_records:
        out = sys.stdout.buffer if args.out == "-" else open(args.out, "wb")  # noqa: SIM115
    total = ReadStats()
    failed = 0
    try:
        for path in args.input:
            stats = ReadStats()
            try:
                for batch in read_path(path, args.format, stats):
                    if out is not None:
                        out.write(json_lines(batch.iter_rows()))
            except InputError as exc:
                log.error("%s", exc)
                failed += 1
                continue
            total.merge(stats)
            print(f"{path}: {orjson.dumps(stats.as_dict()).decode()}", file=sys.stderr)
    finally:
        if out is not None and out is not sys.stdout.buffer:
            out.close()
    print(f"total: {orjson.dumps(total.as_dict()).decode()}", file=sys.stderr)
    return 1 if total.emitted == 0 and (failed or total.read == 0) else 0
