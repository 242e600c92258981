"""The str-based vectorised Zeek TSV conversion, used for small blocks.

For a handful of lines the per-column numpy set-up of the bytes path
(:mod:`sidecar.sources.zeek_tsv_fast`) costs more than it saves; this path splits
the decoded lines once and converts per value in C-level ``map`` calls. Same
contract: ``None`` when any value is bad (the caller then uses the reference).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sidecar.flow import FlowBatch
from sidecar.sources.zeek_tsv_values import (
    FLOAT_COLS,
    MAX_COUNT,
    MAX_DURATION,
    PORT_COLS,
    SOURCE,
    combine_label,
    flags_from_history,
)


def _split_cols(lines: list[str], hdr: Any) -> list[Any] | None:
    """Column-major raw strings of column-checked lines (one split for the whole block)."""
    sep, nc, n = hdr.sep, hdr.ncols, len(lines)
    if len(sep) != 1 or not n:
        return None
    allp = sep.join(lines).split(sep)
    if len(allp) != n * nc:
        return None
    base: list[Any] = [allp[i::nc] for i in range(nc)]
    ci = hdr.combined
    if ci is None:
        return base
    subs = [v.split() for v in base[ci]]
    k = hdr.combined_n
    if any(len(x) != k for x in subs):
        return None
    return base[:ci] + list(zip(*subs, strict=True)) + base[ci + 1 :]


def str_batch(lines: list[str], hdr: Any) -> FlowBatch | None:
    """Vectorised conversion of column-checked lines; None if any value is bad."""
    n = len(lines)
    cols_t = _split_cols(lines, hdr)
    if cols_t is None:
        return None
    unset, empty = hdr.unset, hdr.empty
    miss = {unset, empty, ""}
    dnan = dict.fromkeys(miss, "nan")
    dneg = dict.fromkeys(miss, "-1")
    dnone: dict[str, str | None] = dict.fromkeys(miss, None)
    cols: dict[str, Any] = {}
    with np.errstate(invalid="ignore"):
        for c, i in hdr.index.items():
            col = cols_t[i]
            if c in FLOAT_COLS:
                try:
                    v = np.array(list(map(float, map(dnan.get, col, col))), dtype=np.float64)  # type: ignore[arg-type]
                except ValueError:
                    return None
                ok = np.isfinite(v)
                if not ok.all():
                    m = np.fromiter(map(miss.__contains__, col), dtype=bool, count=n)
                    if (~ok & ~m).any():
                        return None
                else:
                    m = None
                if c != "ts":
                    lim = MAX_DURATION if c == "duration" else MAX_COUNT
                    good = (v >= 0) & (v <= lim)
                    if m is not None:
                        good |= m
                    if not good.all():
                        return None
                cols[c] = v
            elif c in PORT_COLS:
                try:
                    iv = np.array(list(map(int, map(dneg.get, col, col))), dtype=np.int64)  # type: ignore[arg-type]
                except (ValueError, OverflowError):
                    return None
                good = iv <= 65535
                neg = iv < 0
                if neg.any():
                    m = np.fromiter(map(miss.__contains__, col), dtype=bool, count=n)
                    good &= ~neg | m
                if not good.all():
                    return None
                cols[c] = iv.astype(np.int32)
            elif c == "proto":
                pl = {x: (None if x in miss else x.lower()) for x in set(col)}
                cols[c] = list(map(pl.__getitem__, col))
            else:
                cols[c] = list(map(dnone.get, col, col))
    hist = cols.get("history")
    proto = cols.get("proto")
    if hist is not None and proto is not None:
        fl = [flags_from_history(h, p) for h, p in zip(hist, proto, strict=True)]
        cols["orig_flags"] = np.array([f[0] for f in fl], dtype=np.int16)
        cols["resp_flags"] = np.array([f[1] for f in fl], dtype=np.int16)
    labels: list[Any] | None = None
    if hdr.label_i is not None:
        lab_c = cols_t[hdr.label_i]
        if hdr.detail_i is not None:
            pairs = list(zip(lab_c, cols_t[hdr.detail_i], strict=True))
            lm = {pr: combine_label(dnone.get(pr[0], pr[0]), dnone.get(pr[1], pr[1])) for pr in set(pairs)}
            labels = list(map(lm.__getitem__, pairs))
        else:
            labels = list(map(dnone.get, lab_c, lab_c))
    return FlowBatch.from_columns(cols, SOURCE, n=n, label=labels)
