"""A bounded memo for per-value functions over a column: readers and rules see few distinct values."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import numpy as np


def look_up_packed(vals: Sequence[Any], table: Mapping[Any, bytes], dtype: Any) -> np.ndarray:
    """``np.array([table[v] for v in vals])`` for a table of packed values (``dtype`` bytes each): one
    ``itemgetter`` call and one ``bytes.join``, ~35 % less than ``np.fromiter`` over dict lookups.
    Raises KeyError (a value not in the table) or TypeError (an unhashable value)."""
    got = itemgetter(*vals)(table) if len(vals) > 1 else [table[v] for v in vals]  # one key: not a tuple
    return np.frombuffer(b"".join(got), dtype=dtype)


def memo_map(vals: Sequence[Any], fn: Callable[[Any], Any], memo: dict[Any, Any] | None, max_size: int) -> list[Any]:
    """``[fn(v) for v in vals]`` computed once per distinct value (raises TypeError if one is unhashable).

    ``memo``: a dict kept across calls for the same ``fn``, cleared when it would grow past ``max_size``
    values (``None``: a memo for this call only). Only for values whose equal keys have equal results
    (``1 == 1.0 == True``): typed values, or an ``fn`` that gives such keys one answer. A value whose
    ``fn`` raises is never remembered.
    """
    if memo is None:
        m = {v: fn(v) for v in set(vals)}
        return list(map(m.__getitem__, vals))
    try:
        return list(map(memo.__getitem__, vals))
    except KeyError:
        pass
    new = set(vals).difference(memo)
    if len(memo) + len(new) > max_size:
        memo.clear()
    memo.update({v: fn(v) for v in new})
    return list(map(memo.__getitem__, vals))
