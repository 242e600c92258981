"""Opening record files: plain or gzip (by magic bytes), after one leading UTF-8 byte order mark.

Windows tools and some CSV exports start a file with a UTF-8 BOM (``EF BB BF``). A file read
with one must give exactly what the same file gives without it, in every reader and in
``--format auto``. Only the first bytes of a FILE are checked, once per file: a BOM further
on (a line of a stream that starts with one) stays part of that line, which the reader then
counts as a bad record. The follower (:mod:`sidecar.sources.follow`) does the same at
offset 0 of each file it opens.
"""

from __future__ import annotations

import gzip
import os
from typing import IO

#: the UTF-8 encoding of U+FEFF
BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"


def strip_bom(head: bytes) -> bytes:
    """``head`` (the first bytes of a file) without one leading UTF-8 BOM."""
    return head[3:] if head[:3] == BOM else head


def _open(path: str | os.PathLike[str]) -> IO[bytes]:
    f: IO[bytes] = open(path, "rb")  # noqa: SIM115
    if f.read(2) != GZIP_MAGIC:
        f.seek(0)
        return f
    f.close()
    return gzip.open(path, "rb")  # type: ignore[return-value]  # closing it closes its file too


def is_gzip(f: IO[bytes]) -> bool:
    return isinstance(f, gzip.GzipFile)


def open_records(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open a plain or gzip (by magic bytes) file for binary reading, positioned after one
    leading UTF-8 BOM. A gzip stream too damaged to show its first bytes is reopened at its
    start untouched: the reader then meets the damage and counts it (``truncated-input``)."""
    f = _open(path)
    try:
        head = f.peek(3)[:3]  # type: ignore[attr-defined]  # BufferedReader and GzipFile: no rewind needed
        short = 0 < len(head) < 3 and BOM.startswith(head)  # a short peek: read to be sure
        if (head == BOM or short) and f.read(3) != BOM:
            f.seek(0)
    except (OSError, EOFError):  # gzip.BadGzipFile is an OSError
        f.close()
        return _open(path)
    return f
