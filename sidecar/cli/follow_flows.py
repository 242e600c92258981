"""``flows --follow``: tail one log into JSON lines with exact resume after ``kill -9``.

Order per poll: read complete lines → parse → append JSON to the output → flush +
fsync → checkpoint ``{inode, offset, header, out_offset}``. On start, the output is
truncated to the checkpoint's ``out_offset``: records written after the last
checkpoint are re-produced from the source, so nothing is lost and nothing is
written twice.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import orjson

from sidecar.errors import InputError
from sidecar.jsonlines import json_lines
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import FORMATS, detect_bytes
from sidecar.sources.follow import Follower, FollowState, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


def follow(args: argparse.Namespace) -> int:
    if len(args.input) != 1:
        raise InputError("--follow takes exactly one --input file")
    if args.out == "-" and args.checkpoint:
        raise InputError("--checkpoint needs --out FILE (stdout cannot be rewound)")
    path = Path(args.input[0])
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    state = (load_checkpoint(ckpt) if ckpt else None) or FollowState()
    out = sys.stdout.buffer if args.out == "-" else open(args.out, "ab")  # noqa: SIM115
    if out is not sys.stdout.buffer:
        keep = int(state.extra.get("out_offset", 0))
        out.truncate(keep)
        out.seek(keep)
    fol = Follower(path, state)
    stats = ReadStats()
    fmt = None if args.format == "auto" else args.format
    stop = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    idle_since = time.monotonic()
    try:
        while not stop:
            lines = fol.poll()
            if ckpt is not None and not ckpt.exists() and fol.state.inode >= 0:
                # Pin the file we started on (offset 0) so that a crash before the first real
                # checkpoint, followed by a rotation, resumes the rotated file instead of losing it.
                save_checkpoint(ckpt, FollowState(fol.state.inode, 0, [], {"out_offset": out.tell()}))
            if not lines:
                if args.idle_exit and time.monotonic() - idle_since > args.idle_exit:
                    break
                fol.wait(args.poll)  # inotify wake-up; args.poll is the fallback tick
                continue
            idle_since = time.monotonic()
            if fmt is None:
                fmt = detect_bytes(b"".join(
                    [h.encode() for h in fol.state.header] + lines[:8]))
            mod = importlib.import_module(FORMATS[fmt])
            refed = 0  # header lines fed again in front of this poll's lines (not counted again)
            if fmt == "zeek-tsv":  # the current header block, then the data lines
                body = [ln for ln in lines if not ln.startswith(b"#")]
                header = [h.encode() for h in fol.state.header if not h.startswith("#close")]
                feed = header + body if body else []
                refed = (len(header) if body else 0) - (len(lines) - len(body))  # minus this poll's "#" lines
            else:  # JSON: a "#" line is a bad record, counted by the reader
                feed = lines
            for batch in mod.read_lines(feed, stats, where=str(path)):
                out.write(json_lines(batch.iter_rows()))
            stats.ignored["header"] -= refed
            out.flush()
            if out is not sys.stdout.buffer:
                os.fsync(out.fileno())
            fol.commit()
            if ckpt is not None:
                fol.state.extra["out_offset"] = out.tell()
                save_checkpoint(ckpt, fol.state)
    finally:
        fol.close()
        if out is not sys.stdout.buffer:
            out.close()
    print(f"total: {orjson.dumps(stats.as_dict()).decode()}", file=sys.stderr)
    return 0
