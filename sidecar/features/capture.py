"""Capture health: does the sensor see every packet twice?

A mirror (SPAN) port that copies both directions of a link, or a capture on two interfaces of one
path, hands Zeek or Suricata each packet twice. Neither removes exact duplicates, so every packet
and IP-byte count is doubled, bytes per packet are halved, and the model scores records unlike
anything it was trained on. The labelled CTU mixed Zeek captures in ``shared/data`` look like this
(``docs/CROSS_SOURCE.md``, diagnosis item 10).

The telltale is the unanswered SYN. A connection attempt that got no reply is one packet on a clean
sensor, and a retransmission comes a second or more later. On a duplicating sensor the attempt is two
packets microseconds apart. :class:`DuplicateCheck` counts, per source tag, the TCP records that are
SYN without ACK, with no responder packet and one or two originator packets. Among those it counts
the *twins*: two packets less than :data:`TWIN_S` apart. It reads the feature matrix the scorer
already has (a few column comparisons per batch) and decides once enough such records were seen.
On real data, twins are 99.7–100 % of the two-packet attempts in the CTU mixed captures and none in
IoT-23 34-1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from sidecar.features.table import FEATURE_NAMES

log = logging.getLogger(__name__)

#: two SYNs closer than this are one packet seen twice (a retransmission waits about a second)
TWIN_S = 1e-4
#: unanswered attempts a source must show before the check says anything
MIN_ATTEMPTS = 100
#: share of twins among the unanswered attempts above which the sensor is reported as duplicating
TWIN_SHARE = 0.5

_F = {n: i for i, n in enumerate(FEATURE_NAMES)}
# the values extract() writes, in its own float32 rounding
_ONE, _TWO = np.float32(np.log1p(1.0)), np.float32(np.log1p(2.0))
_TWIN_DUR = np.float32(np.log1p(TWIN_S))


@dataclass
class SourceTally:
    #: unanswered SYN-only TCP records with one or two originator packets
    attempts: int = 0
    #: of those, two packets less than TWIN_S apart
    twins: int = 0
    reported: bool = False

    @property
    def share(self) -> float:
        return self.twins / self.attempts if self.attempts else 0.0

    @property
    def duplicating(self) -> bool:
        return self.attempts >= MIN_ATTEMPTS and self.share >= TWIN_SHARE


class DuplicateCheck:
    """Per source tag: unanswered SYN attempts and how many of them are one packet seen twice."""

    def __init__(self) -> None:
        self.sources: dict[str, SourceTally] = {}

    def update(self, source: str, x: np.ndarray) -> None:
        """Count the rows of one feature matrix ``x`` (``extract`` output) from ``source``."""
        if not len(x):
            return
        op = x[:, _F["log_orig_pkts"]]
        attempt = (
            (x[:, _F["proto_tcp"]] == 1)
            & (x[:, _F["log_resp_pkts"]] == 0)
            & (x[:, _F["flag_syn"]] == 1)
            & (x[:, _F["flag_ack"]] == 0)
            & ((op == _ONE) | (op == _TWO))
        )
        n = int(np.count_nonzero(attempt))
        if not n:
            return
        twin = attempt & (op == _TWO) & (x[:, _F["log_duration"]] < _TWIN_DUR)
        t = self.sources.setdefault(source, SourceTally())
        t.attempts += n
        t.twins += int(np.count_nonzero(twin))
        if not t.reported and t.duplicating:
            t.reported = True
            log.warning(
                "source %s: the sensor seems to see every packet twice (%d of %d unanswered SYN attempts are "
                "two packets < %g s apart); packet and byte counts are doubled and verdicts are less reliable. "
                "De-duplicate at the tap or packet broker, or capture one direction of the mirror port.",
                source, t.twins, t.attempts, TWIN_S,
            )

    def summary(self) -> dict[str, dict[str, object]]:
        """Per source: attempts, twins, share and the verdict (for summaries and metrics)."""
        return {
            s: {"unanswered_syn": t.attempts, "twin_syn": t.twins, "share": round(t.share, 4), "duplicating": t.duplicating}
            for s, t in sorted(self.sources.items())
        }
