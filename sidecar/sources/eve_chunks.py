"""Chunked fast path of the eve reader: many flow lines per msgspec call.

:func:`read_chunked` takes the lines in chunks of :data:`CHUNK`. Within a chunk,
non-flow events are counted from their ``event_type`` without a parse, exactly
as the line-by-line reader does (``eve.read_lines_one_by_one``: same bytes
checks, same counts), and the flow lines are decoded with ONE ``msgspec`` call
(``decode_lines`` into the strict ``eve_columns._EvS`` struct) and turned into
value columns for :func:`sidecar.sources.eve_columns.compute_columns`. A chunk
is only accepted when every line is one of those two kinds and the flow lines
are provably one JSON object per line (:func:`decode_chunk`) that msgspec maps;
any other chunk (bad JSON, blank lines, invalid UTF-8, a missing or odd value,
a line only a full parse can classify) is halved until small, then handed to
the line-by-line reader, which counts every bad line with its file and line
number exactly as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import compress, repeat
from operator import add, getitem, gt, not_
from typing import Any, cast

import numpy as np

from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats

try:
    import msgspec as _ms
except ImportError:  # pragma: no cover - exercised where msgspec is absent
    _ms = None  # type: ignore[assignment]

#: lines per msgspec call: small enough that a chunk's objects stay in the CPU cache
#: (e12: 256 read real eve files 4-6 % faster than 512, and than 192 or 1024)
CHUNK = 256
#: a failing chunk is halved until it has at most this many lines, then read line by line
MIN_SPLIT = 8
#: a chunk holds at most about this many bytes (10 MB lines must not pile up 512 deep)
MAX_CHUNK_BYTES = 4 << 20

_LINES_DECODER: Any = None
_MS_ERRORS: tuple[type[BaseException], ...] = ()

if _ms is not None:
    from sidecar.sources.eve_columns import _EvS

    _LINES_DECODER = _ms.json.Decoder(_EvS).decode_lines
    _MS_ERRORS = (_ms.DecodeError, _ms.ValidationError, RecursionError)

#: the first ``"event_type":"`` of a compact line, and what follows it on a flow line
PAT = b'"event_type":"'
PAT_FLOW = b'flow"'


def quick_type(line: bytes, i: int) -> str | None:
    """The event type of a compact, complete-looking non-flow line without parsing it, else None.

    ``i`` is the index just after the first ``"event_type":"``. Only used to skip
    non-flow events cheaply: in valid JSON that first occurrence is a key (a raw
    quote cannot occur inside a string), Suricata writes it at the top level, and
    the line must start with ``{`` and end with ``}``. A malformed non-flow line
    that passes these checks is counted as ignored instead of ``bad-json``;
    anything else takes the full parse.
    """
    j = line.find(b'"', i)
    et = line[i:j]
    if j < 0 or not et.replace(b"_", b"a").isalnum() or line[:1] != b"{" or line[-4:].rstrip()[-1:] != b"}":
        return None
    return et.decode("ascii")


def classify(chunk: list[bytes], keys: dict[bytes, str]) -> tuple[list[int], Counter[str]] | None:
    """(indexes of flow-event lines, non-flow counts by ``event:<type>``), or None if a
    line needs the full parse. ``keys`` caches event type bytes -> ``event:<type>``.

    The same answer as :func:`classify_per_line` (the reference), with the per-line work
    done by C-level ``map`` calls over the chunk: the common chunk (every line holds the
    pattern, every non-flow type was seen before, every non-flow line ends in ``}``) costs
    a few C passes; any other chunk is handed to the reference, which fills ``keys``.
    """
    pos = list(map(bytes.find, chunk, repeat(PAT)))
    if -1 in pos:
        return None  # the reference returns None at the first such line, whatever the others
    fl = list(map(bytes.startswith, chunk, repeat(_PAT_AND_FLOW), pos))  # line[i : i + 5] == PAT_FLOW
    n = len(chunk)
    flows = list(compress(range(n), fl))
    if len(flows) == n:
        return flows, Counter()
    nf = list(compress(range(n), map(not_, fl)))
    lines = list(map(chunk.__getitem__, nf))
    at = list(map(add, map(pos.__getitem__, nf), repeat(len(PAT))))
    ends = list(map(bytes.find, lines, repeat(b'"'), at))
    ets: list[bytes] = list(map(getitem, lines, map(slice, at, ends)))  # type: ignore[arg-type]
    got = list(map(keys.get, ets))
    if (
        None in got  # a type not seen yet, or an empty one (never cached)
        or not all(map(gt, ends, at))  # no closing quote (-1) or an empty type
        or not all(map(bytes.startswith, lines, repeat(b"{")))
        or not all(map(bytes.endswith, lines, repeat(_CLOSED)))
    ):
        return classify_per_line(chunk, keys)
    return flows, Counter(cast("list[str]", got))


_PAT_AND_FLOW = PAT + PAT_FLOW
#: line ends the reference (``line[-4:].rstrip()[-1:] == b"}"``) surely accepts; any other
#: ending is judged by the reference itself
_CLOSED = (b"}\n", b"}", b"}\r\n")


def classify_per_line(chunk: list[bytes], keys: dict[bytes, str]) -> tuple[list[int], Counter[str]] | None:
    """The reference of :func:`classify`: one line at a time."""
    flows: list[int] = []
    quick: Counter[str] = Counter()
    plen = len(PAT)
    for n, line in enumerate(chunk):
        i = line.find(PAT)
        if i < 0:
            return None
        i += plen
        if line[i : i + 5] == PAT_FLOW:
            flows.append(n)
            continue
        key = nonflow_key(line, i, keys)
        if key is None:
            return None
        quick[key] += 1
    return flows, quick


def nonflow_key(line: bytes, i: int, keys: dict[bytes, str]) -> str | None:
    """``event:<type>`` of a non-flow line whose type is read without parsing (``i`` just after
    :data:`PAT`; see :func:`quick_type`), else None (the line needs the full parse). ``keys``
    caches event type bytes -> ``event:<type>``."""
    j = line.find(b'"', i)
    key = keys.get(line[i:j]) if j > i else None
    if key is not None and line[:1] == b"{" and line[-4:].rstrip()[-1:] == b"}":
        return key  # a type seen before, on a complete-looking line
    et = quick_type(line, i)
    if et is None:
        return None
    key = f"event:{et}"
    keys[et.encode("ascii")] = key
    return key


_OPEN, _CLOSE, _NL = ord("{"), ord("}"), ord("\n")


def decode_chunk(chunk: list[bytes], decode_lines: Any = None, max_line: int = 0) -> list[Any] | None:
    """One struct per line, or None if the chunk is not provably one JSON object per line.

    ``decode_lines``: a msgspec ``Decoder.decode_lines`` (default: eve events);
    ``max_line``: if > 0, a chunk with a longer line is refused too.

    Accepted only when the joined buffer is valid UTF-8 (orjson, the reference,
    rejects invalid UTF-8 anywhere; msgspec checks it only where it decodes), every line
    starts with ``{``, every line but the last ends with ``}`` + newline (or with
    ``}`` when the lines come without line ends; a newline is then put between
    them), and ``decode_lines`` returns exactly one object per line. Why that is
    enough: a newline cannot occur inside a JSON string, so each ``}`` before a
    line break is structural; inside an object or array a ``{`` cannot follow a
    ``}``, so every line break is between top-level values; every line starts a
    value, so equal counts mean exactly one value per line.
    """
    n = len(chunk)
    lens = np.fromiter(map(len, chunk), dtype=np.int64, count=n)
    if n > 1 and int(lens.sum()) > MAX_CHUNK_BYTES:
        return None  # split: never join more than about MAX_CHUNK_BYTES
    sep = b"" if chunk[0][-1:] == b"\n" else b"\n"
    buf = sep.join(chunk)
    if not buf.isascii():
        try:  # orjson (the reference) rejects invalid UTF-8 anywhere, msgspec only where it decodes
            buf.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if int(lens.min()) < 2 or (max_line > 0 and int(lens.max()) > max_line):
        return None
    ends = np.cumsum(lens + len(sep)) - len(sep)  # exclusive end of each line in buf
    a = np.frombuffer(buf, dtype=np.uint8)
    if not (a[ends - lens] == _OPEN).all():
        return None
    e = ends[:-1]
    if sep:
        if not (a[e - 1] == _CLOSE).all():
            return None
    elif not ((a[e - 1] == _NL) & (a[e - 2] == _CLOSE)).all():
        return None
    try:
        items: list[Any] = (decode_lines or _LINES_DECODER)(buf)
    except _MS_ERRORS:
        return None
    return items if len(items) == n else None


def chunks(lines: Iterable[bytes], n: int) -> Iterator[list[bytes]]:
    """``lines`` in lists of ``n`` (a list is sliced); from an iterator (a file), a list
    is also closed once it holds :data:`MAX_CHUNK_BYTES`, so huge lines never pile up."""
    if isinstance(lines, list):
        for i in range(0, len(lines), n):
            yield lines[i : i + n]
        return
    chunk: list[bytes] = []
    size = 0
    for ln in lines:
        chunk.append(ln)
        size += len(ln)
        if len(chunk) >= n or size >= MAX_CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


#: ``read_lines_one_by_one(lines, stats, where, batch_size, use_msgspec, first_line)``
PerLine = Callable[[list[bytes], ReadStats, str, int, bool, int], Iterator[FlowBatch]]
#: ``_convert_columns(value_columns, raws, nos, where, stats) -> FlowBatch | None``
Convert = Callable[[list[list[Any]], list[bytes], list[int], str, ReadStats], "FlowBatch | None"]

_NCOLS = 7 + 8 + 2
_ASTUPLE: Any = None
if _ms is not None:
    from sidecar.sources.eve_columns import _EV_FIELDS, _FLOW_FIELDS, RAW_COLUMNS, _FlowS, _TcpS

    # value_columns reads the structs' fields by position (``astuple``: one C loop per struct,
    # measured 1.7x faster than an attrgetter of the names): pin the order it relies on
    assert _EvS.__struct_fields__ == _EV_FIELDS == (
        "flow", "proto", "src_ip", "dest_ip", "event_type", "flow_id", "src_port", "dest_port", "app_proto", "tcp"
    )  # fmt: skip
    assert _FlowS.__struct_fields__ == _FLOW_FIELDS
    assert _TcpS.__struct_fields__ == ("tcp_flags_ts", "tcp_flags_tc")
    assert (*_EV_FIELDS[1:4], *_EV_FIELDS[5:9], *_FLOW_FIELDS, *_TcpS.__struct_fields__) == RAW_COLUMNS
    _ASTUPLE = _ms.structs.astuple


def value_columns(events: list[Any]) -> list[tuple[Any, ...]] | None:
    """The :data:`~sidecar.sources.eve_columns.RAW_COLUMNS` of ``_EvS`` structs (one tuple of
    fields per struct, then one transposition per chunk); None if one's (last) ``event_type``
    is not ``"flow"`` (the line reader decides that line)."""
    if not events:
        return [()] * _NCOLS
    top = list(zip(*map(_ASTUPLE, events), strict=True))
    if top[4].count("flow") != len(events):
        return None
    in_flow = zip(*map(_ASTUPLE, top[0]), strict=True)
    in_tcp = zip(*map(_ASTUPLE, top[9]), strict=True)
    return [*top[1:4], *top[5:9], *in_flow, *in_tcp]


def read_chunked(
    lines: Iterable[bytes],
    stats: ReadStats,
    where: str,
    batch_size: int,
    per_line: PerLine,
    convert: Convert,
) -> Iterator[FlowBatch]:
    """Eve lines → flow batches of ``batch_size`` records (the last one shorter).

    A chunk's flow structs are turned into value columns at once, while they are
    still in the CPU cache; the columns wait in lists until a batch is full.
    """
    cols: list[list[Any]] = [[] for _ in range(_NCOLS)]
    raws: list[bytes] = []
    nos: list[int] = []
    lineno = 0
    ignored = stats.ignored
    keys: dict[bytes, str] = {}
    batch_size = max(1, batch_size)

    def emit(k: int) -> FlowBatch | None:
        stats.read += k
        fb = convert([c[:k] for c in cols], raws[:k], nos[:k], where, stats)
        for c in cols:
            del c[:k]
        del raws[:k], nos[:k]
        return fb

    def take(chunk: list[bytes], base: int) -> Iterator[FlowBatch]:
        """Decode ``chunk`` (its first line is line ``base``); halve it on failure."""
        vals: list[tuple[Any, ...]] | None = None
        cls = classify(chunk, keys)
        if cls is not None:
            idx, quick = cls
            flow_lines = chunk if len(idx) == len(chunk) else [chunk[i] for i in idx]
            got = decode_chunk(flow_lines) if flow_lines else []
            if got is not None:
                vals = value_columns(got)
        if vals is None:
            if len(chunk) > MIN_SPLIT:  # the bad lines are usually few: keep the rest fast
                h = len(chunk) // 2
                yield from take(chunk[:h], base)
                yield from take(chunk[h:], base + h)
                return
            while raws:
                fb = emit(min(batch_size, len(raws)))
                if fb is not None:
                    yield fb
            yield from per_line(chunk, stats, where, batch_size, True, base)
            return
        ignored.update(quick)
        raws.extend(flow_lines)
        nos.extend(range(base, base + len(idx)) if len(idx) == len(chunk) else map(base.__add__, idx))
        for c, v in zip(cols, vals, strict=True):
            c.extend(v)
        while len(raws) >= batch_size:
            fb = emit(batch_size)
            if fb is not None:
                yield fb

    for chunk in chunks(lines, CHUNK):
        yield from take(chunk, lineno + 1)
        lineno += len(chunk)
    while raws:
        fb = emit(min(batch_size, len(raws)))
        if fb is not None:
            yield fb


def coalesce(batches: Iterable[FlowBatch], batch_size: int) -> Iterator[FlowBatch]:
    """Merge neighbouring batches while the result stays within ``batch_size`` rows.

    The chunked readers hand a failing chunk to the line-by-line reader, which
    yields its own (small) batches; this keeps the output in batches of about
    ``batch_size`` as before. Batches are only merged when both have labels or
    both have none (and likewise origins), so nothing is dropped by the merge.
    """
    held: list[FlowBatch] = []
    n = 0
    for b in batches:
        if held and (
            n + len(b) > batch_size
            or (b.label is None) is not (held[0].label is None)
            or (b.origin is None) is not (held[0].origin is None)
        ):
            yield FlowBatch.concat(held)
            held, n = [], 0
        if len(b) >= batch_size:
            yield b
            continue
        held.append(b)
        n += len(b)
    if held:
        yield FlowBatch.concat(held)
