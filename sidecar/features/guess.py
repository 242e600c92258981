"""The guessing rule beside the BNN: one client opening login session after login session to one service.

nmap's ``ssh-brute``, hydra and Mirai-style telnet guessers each open a new connection per password
(or per few). Each connection is a complete, ordinary-looking login: key exchange, one or two
attempts, close. Flow by flow it is a failed login, which the CIC training rows label benign unless
the tool is the one CIC used (patator). What gives it away is the count. Zeek's
``SSH::Password_Guessing`` and Suricata's ET SCAN threshold rules use counts for the same reason.

:class:`GuessCounter` counts, per key ``(orig_h, resp_h, resp_p, proto)``, the **login sessions**:
* TCP records with payload in both directions and at least :data:`MIN_ORIG_PKTS` / :data:`MIN_RESP_PKTS`
  packets (a handshake, a request, a reply): an unanswered or reset probe is a scan, not a guess, and
  the packet counts keep eve's payload estimates, which include TCP options and Ethernet padding of
  tiny packets, from turning a SYN + RST into a "session";
* to a login service: the record's application protocol is one of :data:`LOGIN_SERVICES`
  (Zeek ``service``, Suricata ``app_proto``), or, when the sensor named none, the server port is one
  of :data:`LOGIN_PORTS` (CIC rows carry no service).

Sessions are counted in time buckets of ``window_s`` like the flood rule (:mod:`sidecar.features.rate`,
the same counter: fixed memory, exact for records in time order, batch-independent). The scorer flags
a session the model calls benign whose count reaches the threshold: stage ``STAGE_GUESS``, class
``bruteforce``. It re-classes a model ``scan`` verdict on such a session as ``bruteforce``.
Other records are never counted or flagged by this rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sidecar.features.rate import RateCounter
from sidecar.flow import FlowBatch

#: application protocols that authenticate a client per connection (Zeek ``service`` / eve
#: ``app_proto`` names, lower case; Zeek writes several as a comma-separated list)
LOGIN_SERVICES = frozenset(
    {"ssh", "ftp", "telnet", "rdp", "vnc", "rfb", "mysql", "postgresql", "pgsql", "tds", "mssql", "pop3",
     "imap", "smtp", "smb", "ldap", "krb", "krb_tcp", "ntlm", "sip", "rlogin", "rsh"}
)  # fmt: skip
#: server ports of those protocols, used only when the record names no application protocol
#: packets a login session has at least: SYN, ACK, request / SYN-ACK, reply
MIN_ORIG_PKTS, MIN_RESP_PKTS = 3, 2
LOGIN_PORTS = np.array([21, 22, 23, 110, 143, 389, 445, 513, 514, 993, 995, 1433, 2222, 2323, 3306, 3389, 5432, 5900])


@dataclass(frozen=True)
class GuessRule:
    """Flag a login session when its key had at least ``threshold`` sessions in its window (0 = off)."""

    threshold: int = 10
    window_s: float = 60.0

    def __post_init__(self) -> None:
        if self.threshold < 0:
            raise ValueError(f"guess_threshold must be >= 0 (0 = off), got {self.threshold}")
        if not 0 < self.window_s <= 86400:
            raise ValueError(f"guess_window_s must be in (0, 86400], got {self.window_s}")

    @property
    def enabled(self) -> bool:
        return self.threshold > 0


_SERVICE_MEMO: dict[object, bool | None] = {}


def _service_kind(s: object) -> bool | None:
    """True: a login service; False: another named service; None: no service named."""
    got = _SERVICE_MEMO.get(s, 0)
    if got != 0:
        return got  # type: ignore[return-value]
    if not isinstance(s, str) or s in ("", "-", "failed"):
        kind: bool | None = None
    else:
        kind = any(part.strip().lower() in LOGIN_SERVICES for part in s.split(","))
    if len(_SERVICE_MEMO) < 4096:
        _SERVICE_MEMO[s] = kind
    return kind


def login_sessions(batch: FlowBatch) -> np.ndarray:
    """Boolean mask of the records the guessing rule counts (see the module docstring)."""
    n = len(batch)
    if n == 0:
        return np.zeros(0, dtype=bool)
    two_way = (np.nan_to_num(batch["orig_bytes"], nan=0.0) > 0) & (np.nan_to_num(batch["resp_bytes"], nan=0.0) > 0)
    exchange = (np.nan_to_num(batch["orig_pkts"], nan=0.0) >= MIN_ORIG_PKTS) & (
        np.nan_to_num(batch["resp_pkts"], nan=0.0) >= MIN_RESP_PKTS
    )
    cand = np.flatnonzero(two_way & exchange & (batch["proto"] == "tcp"))
    out = np.zeros(n, dtype=bool)
    if len(cand) == 0:
        return out
    kinds = [_service_kind(s) for s in batch["service"][cand].tolist()]
    named = np.fromiter((k is True for k in kinds), dtype=bool, count=len(cand))
    unnamed = np.fromiter((k is None for k in kinds), dtype=bool, count=len(cand))
    out[cand] = named | (unnamed & np.isin(batch["resp_p"][cand], LOGIN_PORTS))
    return out


class GuessCounter:
    """Login sessions per key over a sliding pair of time buckets; 0 for records that are not sessions."""

    def __init__(self, window_s: float = 60.0) -> None:
        self._rate = RateCounter(window_s)

    @property
    def untimed(self) -> int:
        return self._rate.untimed

    def update(self, batch: FlowBatch) -> np.ndarray:
        out = np.zeros(len(batch), dtype=np.int32)
        idx = np.flatnonzero(login_sessions(batch))
        if len(idx):
            out[idx] = self._rate.update(batch.take(idx) if len(idx) < len(batch) else batch)
        return out
