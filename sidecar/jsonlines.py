"""JSON lines output shared by the CLI, the benchmarks and the ``jsonl`` sink."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from sidecar.flow import FlowBatch
    from sidecar.scorer import Scorer

_OPT = orjson.OPT_APPEND_NEWLINE


def json_lines(rows: Iterable[dict[str, Any]]) -> bytes:
    """One JSON object per line, newline-terminated (orjson appends the newline: no extra copy)."""
    dumps = orjson.dumps
    return b"".join([dumps(r, option=_OPT) for r in rows])


def score_to_json_lines(
    batches: Iterable[FlowBatch], scorer: Scorer, write: Callable[[bytes], Any], only_malicious: bool = False
) -> int:
    """What ``bnn-sidecar score`` does per batch (and what ``bench e2e`` times): score each batch and
    write one JSON verdict per flow. Returns the number of flows scored."""
    n = 0
    for batch in batches:
        v = scorer.score(batch)
        if only_malicious:
            v = v.take(v.malicious)
        write(v.json_lines())
        n += len(batch)
    return n
