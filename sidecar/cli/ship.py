"""``bnn-sidecar ship``: read (or follow) records on the sensor and PUSH msgpack batches over ZeroMQ.

Workers (``bnn-sidecar run`` with a ``zmq`` source, or ``python -m
sidecar.transports.zmq_worker``) PULL the batches, score them and PUSH verdicts to a
collector, which acks ``(stream, seq)`` back on ``--acks``. Unacked batches are resent
after ``--resend-after`` s. With ``--follow --checkpoint F`` the checkpoint only ever
covers lines whose batches were all acked. See docs/ZMQ.md for the guarantee.

Exit status 0 when every batch sent was acked (scored or rejected with a reason) and, without
``--follow``, every input was read to its end; 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from sidecar.errors import ConfigError, InputError
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import FORMATS, detect_bytes, read_path
from sidecar.sources.follow import Follower, FollowState, load_checkpoint, save_checkpoint
from sidecar.transports.zmq_ship import Shipper

log = logging.getLogger(__name__)


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", "-i", nargs="+", metavar="PATH", help="record file(s); one with --follow")
    p.add_argument("--format", "-f", default="auto", choices=["auto", *FORMATS])
    p.add_argument("--follow", action="store_true", help="tail the file across rotation (like tail -F)")
    p.add_argument("--checkpoint", help="with --follow: resume file; advanced only past acked batches")
    p.add_argument("--push", help="endpoint workers PULL from: tcp://HOST:PORT | ipc://PATH")
    p.add_argument("--connect", action="store_true", help="connect --push instead of binding it")
    p.add_argument("--acks", default="", help="collector's ack endpoint (PUB) to connect to; '' = no guarantee")
    p.add_argument("--stream", default="", help="stream id (default: host-pid-random, new every run)")
    p.add_argument("--batch", type=int, default=1024, help="records per batch")
    p.add_argument("--window", type=int, default=64, help="max unacked batches (then reading blocks)")
    p.add_argument("--hwm", type=int, default=8, help="send high-water mark per worker (batches)")
    p.add_argument("--resend-after", type=float, default=5.0, help="resend a batch not acked after S seconds")
    p.add_argument("--drain-timeout", type=float, default=60.0, help="at the end, wait up to S s for acks")
    p.add_argument("--poll", type=float, default=0.2, help="--follow: seconds between polls when idle")
    p.add_argument("--idle-exit", type=float, default=0.0, help="--follow: exit after S idle seconds (0 = never)")
    p.add_argument("--curve-secret", default="", help="ship's CURVE .key_secret (encrypts the push socket)")
    p.add_argument("--curve-clients", default="", help="directory of allowed worker .key files")
    p.add_argument("--curve-collector-key", default="", help="collector's public .key (CURVE on the ack link)")
    p.add_argument("--curve-keygen", nargs=2, metavar=("DIR", "NAME"), help="write DIR/NAME.key(+_secret) and exit")


def _shipper(args: argparse.Namespace) -> Shipper:
    if not args.push:
        raise ConfigError("--push is required")
    return Shipper(args.push, acks=args.acks, bind=not args.connect, hwm=args.hwm, window=args.window,
                   resend_after=args.resend_after, stream=args.stream, curve_secret=args.curve_secret,
                   curve_server=args.curve_collector_key, curve_clients=args.curve_clients)


def run(args: argparse.Namespace) -> int:
    if args.curve_keygen:
        from sidecar.transports.zmq_common import keygen

        pub, sec = keygen(*args.curve_keygen)
        print(f"public: {pub}\nsecret: {sec}")
        return 0
    if not args.input:
        raise ConfigError("--input is required")
    if args.batch < 1:
        raise ConfigError("--batch must be >= 1")
    if args.checkpoint and not args.follow:
        raise ConfigError("--checkpoint needs --follow")
    shipper = _shipper(args)
    if not shipper.tracking:
        log.warning("no --acks endpoint: fire-and-forget, batches lost by a dying worker are not resent")

    def _stop(signum: int, frame: FrameType | None) -> None:
        shipper.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stats = ReadStats()
    failed = False
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        if args.follow:
            _follow(args, shipper, stats)
        else:
            for path in args.input:
                try:
                    for batch in read_path(path, args.format, stats, batch_size=args.batch):
                        if not shipper.send(batch):
                            break
                except InputError as exc:
                    log.error("%s", exc)
                    failed = True
        # stopped while following: unsent lines are not checkpointed, so a restart re-reads them
        done = shipper.drain(args.drain_timeout) and (args.follow or not shipper.stopped) and not failed
        if args.follow and args.checkpoint:
            _save(shipper, Path(args.checkpoint))
    finally:
        shipper.close()
    summary = {**stats.as_dict(), **shipper.summary(), "seconds": round(time.perf_counter() - t0, 3),
               "cpu_s": round(time.process_time() - c0, 3)}
    print(f"ship summary: {orjson.dumps(summary).decode()}", file=sys.stderr)
    return 0 if done else 1


def _save(shipper: Shipper, ckpt: Path) -> None:
    mark = shipper.safe_mark()
    if mark is not None:
        save_checkpoint(ckpt, mark)


def _follow(args: argparse.Namespace, shipper: Shipper, stats: ReadStats) -> None:
    if len(args.input) != 1:
        raise InputError("--follow takes exactly one --input file")
    path = Path(args.input[0])
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    state = (load_checkpoint(ckpt) if ckpt else None) or FollowState()
    fol = Follower(path, state)
    fmt = None if args.format == "auto" else args.format
    idle_since = time.monotonic()
    try:
        while not shipper.stopped:
            lines = fol.poll()
            if not lines:
                if args.idle_exit and time.monotonic() - idle_since > args.idle_exit:
                    break
                shipper.pump(int(args.poll * 1000))
                if ckpt is not None:
                    shipper.add_mark(_snapshot(fol))
                    _save(shipper, ckpt)
                continue
            idle_since = time.monotonic()
            if fmt is None:
                fmt = detect_bytes(b"".join([h.encode() for h in fol.state.header] + lines[:8]))
            if not _ship_lines(importlib.import_module(FORMATS[fmt]), fol, lines, shipper, stats, args, ckpt):
                return  # stopped: the lines not sent are not checkpointed, a restart re-reads them
            fol.commit()
    finally:
        fol.close()


def _ship_lines(mod: Any, fol: Follower, lines: list[bytes], shipper: Shipper, stats: ReadStats,
                args: argparse.Namespace, ckpt: Path | None) -> bool:
    """Parse and send one poll's lines in chunks of ``--batch`` records, a checkpoint mark after
    each chunk (so a restart repeats at most ``--window`` + 1 batches: the unacked ones, plus those
    whose acks arrived while the last send waited, before the next checkpoint write). False if stopped."""
    header = [h.encode() for h in fol.state.header if not h.startswith("#close")]
    pos = fol.state.offset  # the poll's lines start where the previous poll was committed
    chunk: list[bytes] = []
    nrec = 0
    for i, ln in enumerate(lines):
        chunk.append(ln)
        nrec += not ln.startswith(b"#")
        if nrec < args.batch and i < len(lines) - 1:
            continue
        body = [x for x in chunk if not x.startswith(b"#")]
        for batch in mod.read_lines(header + body, stats, where=str(fol.path), batch_size=args.batch):
            if not shipper.send(batch):
                return False
        pos += sum(map(len, chunk))
        if ckpt is not None:
            shipper.add_mark(FollowState(fol.state.inode, pos, list(fol.state.header), {}))
            _save(shipper, ckpt)
        chunk, nrec = [], 0
    return True


def _snapshot(fol: Follower) -> FollowState:
    st = fol.state
    return FollowState(st.inode, st.offset, list(st.header), {})
