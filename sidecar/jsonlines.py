"""JSON lines output shared by the CLI and the ``jsonl`` sink."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

_OPT = orjson.OPT_APPEND_NEWLINE


def json_lines(rows: Iterable[dict[str, Any]]) -> bytes:
    """One JSON object per line, newline-terminated (orjson appends the newline: no extra copy)."""
    dumps = orjson.dumps
    return b"".join([dumps(r, option=_OPT) for r in rows])
