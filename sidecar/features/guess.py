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
from typing import ClassVar

import numpy as np

from sidecar.features.rate import CountRule, RateCounter, end_times, key_hash
from sidecar.flow import FlowBatch
from sidecar.memo import memo_map

#: interactive remote-login protocols, where a client opens a session to log in (Zeek ``service`` / eve
#: ``app_proto`` names, lower case; Zeek writes several as a comma-separated list). Left out on purpose:
#: protocols whose clients open a connection per request by design (SQL from application servers,
#: IMAP/POP3 from webmail, SMTP between mail servers, LDAP binds, Kerberos, NTLM over HTTP): counting
#: their sessions would flag busy servers, not guessers.
LOGIN_SERVICES = frozenset({"ssh", "ftp", "telnet", "rdp", "vnc", "rfb", "smb", "rlogin", "rsh"})
#: server ports of those protocols, used only when the record names no application protocol
LOGIN_PORTS = np.array([21, 22, 23, 445, 513, 514, 2222, 2323, 3389, 5900])
#: packets a login session has at least: SYN, ACK, request / SYN-ACK, reply
MIN_ORIG_PKTS, MIN_RESP_PKTS = 3, 2


@dataclass(frozen=True)
class GuessRule(CountRule):
    """Flag a login session when its key had at least ``threshold`` sessions in its window (0 = off)."""

    threshold: int = 10
    window_s: float = 60.0
    NAME: ClassVar[str] = "guess"
    MAX_WINDOW_S: ClassVar[float] = 86400.0


#: login port lookup (index = port); ports outside 0..65535 (missing: -1) are not login ports: looked up
#: with ``mode="clip"``, they land on port 0 or on the extra last entry, neither a login port
_IS_LOGIN_PORT = np.zeros((1 << 16) + 1, dtype=bool)
_IS_LOGIN_PORT[LOGIN_PORTS] = True
#: service kinds: :data:`NAMED_LOGIN`, :data:`NAMED_OTHER`, :data:`UNNAMED`
UNNAMED, NAMED_LOGIN, NAMED_OTHER = 0, 1, 2
_KIND: dict[object, int] = {}
_KIND_MAX = 4096


def _service_kind(s: object) -> int:
    if not isinstance(s, str) or s in ("", "-", "failed"):
        return UNNAMED
    return NAMED_LOGIN if any(part.strip().lower() in LOGIN_SERVICES for part in s.split(",")) else NAMED_OTHER


def _service_kinds(values: list[object]) -> np.ndarray:
    """:func:`_service_kind` of each value, through a bounded memo (a network has few service names)."""
    try:
        kinds = memo_map(values, _service_kind, _KIND, _KIND_MAX)
    except TypeError:  # an unhashable value (not a reader's output)
        kinds = list(map(_service_kind, values))
    return np.fromiter(kinds, dtype=np.int8, count=len(values))


def login_sessions(batch: FlowBatch) -> np.ndarray:
    """Boolean mask of the records the guessing rule counts (see the module docstring)."""
    out = np.zeros(len(batch), dtype=bool)
    out[_session_rows(batch)] = True
    return out


def _session_rows(batch: FlowBatch) -> np.ndarray:
    """Row numbers of the records the guessing rule counts, ascending (:func:`login_sessions`)."""
    if len(batch) == 0:
        return np.zeros(0, dtype=np.intp)
    # NaN (missing) compares False: a missing count is never "enough"
    ok = batch["orig_pkts"] >= MIN_ORIG_PKTS
    ok &= batch["resp_pkts"] >= MIN_RESP_PKTS
    ok &= batch["orig_bytes"] > 0
    ok &= batch["resp_bytes"] > 0
    cand = np.flatnonzero(ok)
    if len(cand) == 0:
        return cand
    cand = cand[batch["proto"][cand] == "tcp"]
    kinds = _service_kinds(batch["service"][cand].tolist())
    by_port = _IS_LOGIN_PORT.take(batch["resp_p"][cand], mode="clip")
    rows: np.ndarray = cand[(kinds == NAMED_LOGIN) | ((kinds == UNNAMED) & by_port)]
    return rows


#: hash-table slots of a guessing counter (login sessions are few: 16 Ki slots, 256 KB per source)
SLOTS = 1 << 14


class GuessCounter:
    """Login sessions per key over a sliding pair of time buckets; 0 for records that are not sessions."""

    def __init__(self, window_s: float = 60.0) -> None:
        self._rate = RateCounter(window_s, SLOTS)

    @property
    def untimed(self) -> int:
        return self._rate.untimed

    def update(self, batch: FlowBatch, t: np.ndarray | None = None, h: np.ndarray | None = None) -> np.ndarray:
        """Count the batch's login sessions; each record's count (0 for other records). ``t``/``h``: the
        batch's :func:`~sidecar.features.rate.end_times` and :func:`~sidecar.features.rate.key_hash`
        when the caller has them already (the scorer computes them once for both rules)."""
        out = np.zeros(len(batch), dtype=np.int32)
        idx = _session_rows(batch)
        if len(idx) == 0:
            return out
        if t is None or h is None:  # hash only the sessions
            sub = batch.take(idx)
            out[idx] = self._rate.count(end_times(sub), key_hash(sub))
        else:
            out[idx] = self._rate.count(t[idx], h[idx])
        return out
