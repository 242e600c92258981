"""A direction's payload is at most what its seen packets carried (``sidecar.features.schema``).

Zeek derives ``orig_bytes``/``resp_bytes`` from TCP sequence numbers, so on a sensor that lost
packets they count bytes no seen packet held (``missed_bytes`` > 0). The feature code caps the
payload at ``ip_bytes - pkts * (20 + L4 header)``. Checked on real records: a lossy Zeek capture
(raw fields read independently of the sidecar's reader), and the lab's eve and cicflowmeter CSV
records, which must not change at all.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from zeek_cut import cut

from sidecar.features.schema import FEATURE_NAMES, extract
from sidecar.flow import ACK, SYN, FlowBatch
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path

LAB = Path(__file__).parent / "data" / "lab"
LOSSY = "zeek-labeled/stratosphere-security-datasets-for-testing/011-zeek-mixed/conn.log.labeled.gz"
F = {n: i for i, n in enumerate(FEATURE_NAMES)}


def _read(path: Path) -> FlowBatch:
    batches = list(read_path(path, "auto", ReadStats(), batch_size=65536))
    return FlowBatch.concat(batches)


RAW = ("uid", "proto", "duration", "resp_bytes", "resp_pkts", "resp_ip_bytes", "missed_bytes")


def _raw_tcp_rows(path: Path) -> dict[str, dict[str, str]]:
    """uid -> raw conn.log fields of the TCP rows with a duration, read with tests/zeek_cut.py."""
    with gzip.open(path, "rt") as fh:
        rows = (dict(zip(RAW, line.split("\t"), strict=True)) for line in cut(fh, RAW))
        return {r["uid"]: r for r in rows if r["proto"] == "tcp" and r["duration"] != "-"}


def test_lossy_zeek_payload_capped_by_ip_bytes(shared: Path) -> None:
    path = shared / LOSSY
    assert path.is_file(), path
    raw = _raw_tcp_rows(path)
    b = _read(path)
    x = extract(b)
    uid = list(b["uid"])
    rf = np.asarray(b["resp_flags"], np.int32)
    over = kept = lossy_over = 0
    for i, u in enumerate(uid):
        r = raw.get(u)
        if r is None or (rf[i] >= 0 and rf[i] & SYN and not rf[i] & ACK):
            continue  # not TCP with a duration, or a SYN-only side (payload 0 by another rule)
        rb, rpk, ripb = float(r["resp_bytes"]), float(r["resp_pkts"]), float(r["resp_ip_bytes"])
        bound = max(ripb - 40.0 * rpk, 0.0)
        want = min(rb, bound)
        assert x[i, F["log_resp_bytes"]] == pytest.approx(np.log1p(want), rel=1e-6), (u, rb, bound)
        if rb > bound:
            over += 1
            lossy_over += int(r["missed_bytes"]) > 0
        else:
            kept += 1
    # the capture really has both kinds, and the capped rows are mostly ones Zeek marked lossy
    assert over > 100 and kept > 1000, (over, kept)
    assert lossy_over > over / 2, (lossy_over, over)


@pytest.mark.parametrize("kind", ["eve", "csv"])
def test_lab_records_unchanged_by_cap(kind: str) -> None:
    files = sorted((LAB / kind).glob("*.gz"))
    assert len(files) == 9
    for f in files:
        b = _read(f)
        assert np.isfinite(np.asarray(b["orig_ip_bytes"], np.float64)).any(), f  # the cap could apply
        without = FlowBatch.from_columns(
            {**b.cols, "orig_ip_bytes": np.full(len(b), np.nan), "resp_ip_bytes": np.full(len(b), np.nan)},
            source=b.source,
            extra=b.extra,
        )
        np.testing.assert_array_equal(extract(b), extract(without), err_msg=str(f))
