"""``--format auto``: tell a record format from the first bytes of a file, and open it.

Formats: ``zeek-tsv``, ``zeek-json``, ``eve``, ``cic-csv``. Each format is one reader
module exposing ``read_path(path, stats, batch_size)``.
"""

from __future__ import annotations

import gzip
import importlib
from collections.abc import Iterator
from pathlib import Path

import orjson

from sidecar.errors import FormatDetectionError, InputError
from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.sources.bom import strip_bom

FORMATS: dict[str, str] = {
    "zeek-tsv": "sidecar.sources.zeek_tsv",
    "zeek-json": "sidecar.sources.zeek_json",
    "eve": "sidecar.sources.eve",
    "cic-csv": "sidecar.sources.cic_csv",
}
_CIC_MARKERS = (b"dst port", b"destination port", b"flow duration", b"dst_port", b"flow_duration", b"tot fwd")


def head_bytes(path: Path, n: int = 65536) -> bytes:
    """The first ``n`` bytes of a file, decompressed when it is gzip."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
        if magic == b"\x1f\x8b":
            with gzip.open(path, "rb") as gz:
                return _read_upto(gz, n)
        with open(path, "rb") as fh:
            return fh.read(n)
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc


def _read_upto(gz: gzip.GzipFile, n: int) -> bytes:
    """Up to ``n`` decompressed bytes; a stream cut mid-way gives what came before the cut
    (the reader then counts the cut), an error only if nothing at all could be read."""
    parts: list[bytes] = []
    got = 0
    try:
        while got < n:
            b = gz.read1(n - got)
            if not b:
                break
            parts.append(b)
            got += len(b)
    except (EOFError, OSError):  # cut short, or a bad CRC at the end (gzip.BadGzipFile)
        if not got:
            raise
    return b"".join(parts)


def detect_bytes(head: bytes) -> str:
    """The format of a stream whose first bytes are ``head`` (after one leading UTF-8 BOM)."""
    text = strip_bom(head).lstrip()
    if text.startswith(b"#separator") or text.startswith(b"#fields"):
        return "zeek-tsv"
    first = text.split(b"\n", 1)[0].strip()
    if first.startswith(b"{"):
        try:
            obj = orjson.loads(first)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            if "event_type" in obj:
                return "eve"
            if "id.orig_h" in obj or "id_orig_h" in obj or "uid" in obj:
                return "zeek-json"
    low = first.lower()
    if b"," in low and any(m in low for m in _CIC_MARKERS):
        return "cic-csv"
    raise FormatDetectionError("unknown record format (not Zeek TSV/JSON, Suricata eve or CICFlowMeter CSV)")


def detect_path(path: Path) -> str:
    try:
        return detect_bytes(head_bytes(path))
    except FormatDetectionError as exc:
        raise FormatDetectionError(f"{path}: {exc}") from None


def read_path(path: str | Path, fmt: str, stats: ReadStats, batch_size: int = 4096) -> Iterator[FlowBatch]:
    """Batches from one file in format ``fmt`` (``auto`` detects it)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    if fmt == "auto":
        fmt = detect_path(p)
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; choose one of auto, {', '.join(FORMATS)}")
    mod = importlib.import_module(FORMATS[fmt])
    batches: Iterator[FlowBatch] = mod.read_path(p, stats, batch_size=batch_size)
    return batches
