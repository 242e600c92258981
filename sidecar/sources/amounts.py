"""Range check of a batch's amounts (duration, packet and byte counts), for readers whose
per-value parsing does not check them (eve, CICFlowMeter CSV).

The Zeek readers reject a corrupt amount while parsing (:func:`sidecar.sources.zeek_tsv_values.
check_amount`); this is the same rule, applied to whole columns: a row whose duration or a
count is negative, infinite or absurd is a corrupt record and is dropped, counted as one skip
``negative:<col>`` / ``bad-number:<col>`` / ``absurd:<col>`` (the first failing column, in
canonical order). NaN is *missing* and passes; the feature code handles it.

One exception: these readers *compute* the duration (eve: ``flow.end - flow.start``), and
a negative one means the capture's timestamps were out of order, not that the record is
corrupt. Its duration becomes missing (counted in ``stats.missing["negative:duration"]``,
logged) and the flow is kept.
"""

from __future__ import annotations

import numpy as np

from sidecar.flow import FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.sources.zeek_tsv_values import MAX_COUNT, MAX_DURATION

#: canonical amount columns and their absurd-value limits
AMOUNTS: tuple[tuple[str, float], ...] = (
    ("duration", MAX_DURATION),
    ("orig_pkts", MAX_COUNT),
    ("resp_pkts", MAX_COUNT),
    ("orig_bytes", MAX_COUNT),
    ("resp_bytes", MAX_COUNT),
    ("orig_ip_bytes", MAX_COUNT),
    ("resp_ip_bytes", MAX_COUNT),
)


def check_amounts(batch: FlowBatch, stats: ReadStats, where: str = "") -> FlowBatch:
    """``batch`` without its corrupt rows (each counted in ``stats.skipped``); the batch itself
    when every row passes (the common case: two comparisons per column).

    The caller counts ``stats.emitted`` for the batch it gets back.
    """
    dur = batch["duration"]
    with np.errstate(invalid="ignore"):
        neg = dur < 0
    if neg.any():
        # The end precedes the start (packet timestamps out of order at capture, e.g. several
        # capture threads): the duration is unknown, the flow itself is fine. Missing, not 0.
        i = int(np.flatnonzero(neg)[0])
        org = batch.origin[i] if batch.origin is not None else batch["uid"][i]
        stats.made_missing("negative:duration", int(neg.sum()), where=str(org) if org is not None else where,
                           detail=f"duration={float(dur[i])!r} (first of the batch)")
        dur = dur.copy()
        dur[neg] = np.nan
        batch.cols["duration"] = dur
    bad: np.ndarray | None = None
    with np.errstate(invalid="ignore"):
        for col, lim in AMOUNTS:
            a = batch[col]
            b = (a < 0) | (a > lim)  # NaN (missing) compares False: passes
            bad = b if bad is None else bad | b
    if bad is None or not bad.any():
        return batch
    seen = np.zeros(len(batch), dtype=bool)
    for col, lim in AMOUNTS:
        a = batch[col]
        for i in np.flatnonzero(((a < 0) | (a > lim)) & ~seen).tolist():
            v = float(a[i])
            reason = f"bad-number:{col}" if np.isinf(v) else f"negative:{col}" if v < 0 else f"absurd:{col}"
            org = batch.origin[i] if batch.origin is not None else batch["uid"][i]
            stats.skip(reason, where=str(org) if org is not None else where, detail=f"{col}={v!r}")
            seen[i] = True
    return batch.take(~bad)
