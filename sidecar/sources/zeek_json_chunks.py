"""Chunked fast path of the Zeek JSON reader: many lines per msgspec call.

Lines are taken :data:`CHUNK` at a time and decoded with one ``decode_lines``
call into :class:`_ConnC` structs, accepted only when the chunk is provably one
JSON object per line (:func:`sidecar.sources.eve_chunks.decode_chunk`). Both structs
have the fields of ``zeek_json.CONN_FIELDS`` (made by ``zeek_json.conn_struct``); this
one is stricter than the line-by-line one (``zeek_json._ConnS``): everything that
would send a line to the reference path there makes the whole chunk fail here in
C: no ``id.orig_h`` key, a ``_path`` other than ``conn``, any ``id_orig_h``-style
or detailed-label key, a wrong type or an out-of-range value, a line longer than
``MAX_LINE``, invalid UTF-8. A failing chunk is halved until it is small, then
read by ``zeek_json.read_lines_one_by_one``, which counts each bad line with its
file and line number exactly as before. Columns are pulled off a chunk's structs
at once (while they are in the CPU cache) and wait in lists until a batch is full.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter
from typing import Any

from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.sources.eve_chunks import chunks, decode_chunk
from sidecar.sources.zeek_json import _FIELDS, _UNSET, MAX_LINE, REQUIRED, columns_batch, conn_struct
from sidecar.sources.zeek_tsv import combine_label

try:
    import msgspec as _ms
except ImportError:  # pragma: no cover - exercised where msgspec is absent
    _ms = None  # type: ignore[assignment]

#: lines per msgspec call
CHUNK = 512
#: a failing chunk is halved until it has at most this many lines, then read line by line
MIN_SPLIT = 8

_LINES_DECODER: Any = None
#: the chunk struct's type and default per field kind of ``zeek_json.CONN_FIELDS``
CHUNK_KINDS: dict[str, tuple[Any, Any]] = {}

if _ms is not None:
    from typing import Literal

    # no range constraints here (they cost a fifth of the decode): columns_batch
    # checks the ranges of a whole batch and the batch's lines are re-read line by
    # line if one is out of range
    CHUNK_KINDS = {
        "ts": (float | None, None),
        "str": (str | None, None),
        "orig_h": (str | None, REQUIRED),  # a line without it is judged line by line
        "port": (int | None, None),
        "count": (float | None, None),
        "dur": (float | None, None),
        "path": (Literal["conn"] | None, None),
        "label": (Any, _UNSET),
        "other": (_ms.UnsetType, _UNSET),  # any value for such a key fails the chunk
    }
    _ConnC = conn_struct("_ConnC", CHUNK_KINDS, __name__, kw_only=True)
    _LINES_DECODER = _ms.json.Decoder(_ConnC).decode_lines

#: the :data:`_FIELDS` of a struct as one tuple (one call per row, then one transposition
#: per chunk: measured faster than one attrgetter pass per field)
_ROW = attrgetter(*_FIELDS)
_LABEL = attrgetter("label")
_EMPTY_LABELS = (None, "", "-", "(empty)")

#: ``read_lines_one_by_one(lines, stats, where, batch_size, use_msgspec, first_line)``
PerLine = Callable[[list[bytes], ReadStats, str, int, bool, int], Iterator[FlowBatch]]


def _label(v: Any) -> str | None:
    return combine_label(None if v in _EMPTY_LABELS else str(v), None)


def read_chunked(
    lines: Iterable[bytes], stats: ReadStats, where: str, batch_size: int, per_line: PerLine
) -> Iterator[FlowBatch]:
    """Zeek JSON lines → batches of at most ``batch_size`` records."""
    cols: list[list[Any]] = [[] for _ in _FIELDS]
    labels: list[Any] = []
    raws: list[bytes] = []  # the lines of the rows in ``cols``: consecutive lines from ``first``
    first = 1
    labelled = False  # whether the rows waiting in ``cols`` have a label key
    batch_size = max(1, batch_size)

    def emit(k: int) -> Iterator[FlowBatch]:
        nonlocal first
        try:
            fb = columns_batch([c[:k] for c in cols], [_label(v) for v in labels[:k]] if labelled else None)
        except (ValueError, OverflowError):  # a value out of range: the line reader judges these lines
            yield from per_line(raws[:k], stats, where, batch_size, True, first)
        else:
            stats.read += k
            stats.emitted += k
            yield fb
        for c in cols:
            del c[:k]
        del labels[:k], raws[:k]
        first += k

    def flush() -> Iterator[FlowBatch]:
        while raws:
            yield from emit(min(batch_size, len(raws)))

    def take(chunk: list[bytes], base: int) -> Iterator[FlowBatch]:
        nonlocal labelled, first
        got = decode_chunk(chunk, _LINES_DECODER, MAX_LINE)
        labs: list[Any] = []
        unset = 0
        if got is not None:
            labs = list(map(_LABEL, got))
            unset = labs.count(_UNSET)
            if 0 < unset < len(labs):
                got = None  # labelled and unlabelled lines mixed: the line reader splits batches there
        if got is None:
            if len(chunk) > MIN_SPLIT:
                h = len(chunk) // 2
                yield from take(chunk[:h], base)
                yield from take(chunk[h:], base + h)
                return
            yield from flush()
            yield from per_line(chunk, stats, where, batch_size, True, base)
            return
        has_label = unset == 0
        if has_label is not labelled:
            yield from flush()
            labelled = has_label
        if not raws:
            first = base
        raws.extend(chunk)
        for c, v in zip(cols, zip(*map(_ROW, got), strict=True), strict=True):
            c.extend(v)
        if has_label:
            labels.extend(labs)
        while len(raws) >= batch_size:
            yield from emit(batch_size)

    lineno = 0
    for chunk in chunks(lines, CHUNK):
        yield from take(chunk, lineno + 1)
        lineno += len(chunk)
    yield from flush()
