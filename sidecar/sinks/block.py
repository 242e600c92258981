"""Blocking sink: put flagged originators into Suricata's ``bnn-block`` ip dataset.

For each malicious verdict (optionally only some ``classes`` and ``score >= min_score``)
the originator ``orig_h`` is added with ``dataset-add <dataset> ip <addr>`` over
Suricata's unix command socket (:mod:`sidecar.suricata_cmd`). The inline drop rule in
``suricata/bnn.rules`` (``ip.src; dataset:isset,bnn-block``) then drops its packets.
After ``ttl_s`` the address is removed again with ``dataset-remove``; expiry is
checked on every :meth:`write`, :meth:`flush`, :meth:`tick` and at :meth:`close`
(``unblock_on_close`` removes every block this sink made, so a stopped sidecar leaves
no blocks behind).

Safety:

* **Allowlist**: addresses inside any ``allowlist`` CIDR (IPv4 and IPv6, ``ipaddress``;
  IPv4-mapped IPv6 is checked as IPv4) are never blocked. :data:`DEFAULT_ALLOWLIST`
  (loopback, unspecified, link-local, multicast) always applies; ``allowlist`` adds to
  it: put the sensor, gateways, DNS/NTP servers and management hosts there.
* **Rate limit**: a token bucket of ``max_blocks_per_min`` tokens refilled at
  ``max_blocks_per_min / 60`` per second. A new block takes one token; with none
  left the block is refused (``rate-limited``), counted, logged and audited, never
  queued. Re-flagging an already blocked address only extends its expiry.
* **Verified sources** (``require_handshake``): only block TCP originators whose flow
  shows a completed handshake (originator sent SYN and ACK, responder sent SYN+ACK),
  which a spoofed source cannot produce. Off by default (it would also stop blocking
  SYN scanners); see ``suricata/README.md``.
* **Dry run** (the default): nothing is sent to Suricata; what would be done is logged
  and audited with ``"dry_run": true``.
* **Audit log** (``audit_log``): one JSON line per block, unblock, refusal and error,
  with the reason.

Active blocks are bounded by ``max_blocks_per_min * (ttl_s / 60) + max_blocks_per_min``.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import numpy as np
import orjson

from sidecar.errors import ConfigError, SidecarError
from sidecar.flow import ACK, SYN
from sidecar.networks import Network, parse_networks
from sidecar.suricata_cmd import SuricataCommandClient
from sidecar.verdict import VerdictBatch

log = logging.getLogger(__name__)

DEFAULT_ALLOWLIST: tuple[str, ...] = (
    "127.0.0.0/8",
    "::1/128",
    "0.0.0.0/8",
    "::/128",
    "169.254.0.0/16",
    "fe80::/10",
    "224.0.0.0/4",
    "255.255.255.255/32",
    "ff00::/8",
)
#: log at most this many refusals per reason, then only count (floods must not flood logs)
MAX_LOGGED_PER_REASON = 20
#: after a failed command, new blocks are not tried for this long (a hung Suricata must
#: not stall the sink for ``timeout_s`` per verdict); unblocks are retried on each check
BACKOFF_S = 5.0
#: the clock of TTLs and the rate limit (tests replace it)
_monotonic = time.monotonic


@dataclass
class Block:
    ip: str
    expires: float  # on the _monotonic() clock
    added_wall: float


class TokenBucket:
    def __init__(self, per_min: int, now: float) -> None:
        self.capacity = float(per_min)
        self.rate = per_min / 60.0
        self.tokens = float(per_min)
        self.at = now

    def refund(self) -> None:
        self.tokens = min(self.capacity, self.tokens + 1.0)

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


def parse_allowlist(items: Sequence[str]) -> list[Network]:
    try:
        return parse_networks(items, what="allowlist entry")
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


class SuricataBlockSink:
    """Block flagged originators through a Suricata ip dataset (see module doc)."""

    name = "block"

    def __init__(
        self,
        socket: str,
        dataset: str = "bnn-block",
        ttl_s: float = 600.0,
        allowlist: list[str] | None = None,
        max_blocks_per_min: int = 10,
        dry_run: bool = True,
        audit_log: str | None = None,
        min_score: float = 0.0,
        classes: list[str] | None = None,
        require_handshake: bool = False,
        unblock_on_close: bool = True,
        timeout_s: float = 5.0,
    ) -> None:
        if ttl_s <= 0:
            raise ConfigError("ttl_s must be > 0")
        if max_blocks_per_min < 0:
            raise ConfigError("max_blocks_per_min must be >= 0")
        if not dataset or any(c.isspace() for c in dataset):
            raise ConfigError(f"bad dataset name {dataset!r}")
        self.socket = str(socket)
        self.dataset = dataset
        self.ttl_s = float(ttl_s)
        self.allowlist = parse_allowlist([*DEFAULT_ALLOWLIST, *(allowlist or [])])
        self.max_blocks_per_min = int(max_blocks_per_min)
        self.dry_run = bool(dry_run)
        self.audit_path = audit_log
        self.min_score = float(min_score)
        self.classes = None if classes is None else {str(c) for c in classes}
        self.require_handshake = bool(require_handshake)
        self.unblock_on_close = bool(unblock_on_close)
        #: counters: blocked, extended, unblocked, refused:<reason>, error:<op>
        self.stats: Counter[str] = Counter()
        self.active: dict[str, Block] = {}
        self._lock = threading.RLock()
        self._bucket = TokenBucket(self.max_blocks_per_min, _monotonic())
        self._client = None if self.dry_run else SuricataCommandClient(self.socket, timeout=timeout_s)
        self._audit: IO[bytes] | None = None
        self._closed = False
        self._down_until = 0.0
        self._open_audit()

    # -- Sink protocol -------------------------------------------------------

    def write(self, verdicts: VerdictBatch) -> None:
        with self._lock:
            if self._closed:
                raise SidecarError("block sink is closed")
            now = _monotonic()
            self._expire(now)
            idx = np.flatnonzero(verdicts.malicious)
            if len(idx) == 0:
                return
            f = verdicts.flows
            oh = f["orig_h"][idx].tolist()
            uid = f["uid"][idx].tolist()
            proto = f["proto"][idx].tolist()
            of, rf = f["orig_flags"][idx].tolist(), f["resp_flags"][idx].tolist()
            score = verdicts.score[idx].tolist()
            cls = verdicts.cls[idx].tolist()
            for i in range(len(idx)):
                ctx = {"uid": uid[i], "class": str(cls[i]), "score": round(float(score[i]), 6)}
                if self.classes is not None and ctx["class"] not in self.classes:
                    self.stats["skipped:class"] += 1
                    continue
                if score[i] < self.min_score:
                    self.stats["skipped:score"] += 1
                    continue
                if self.require_handshake and not _handshake(proto[i], of[i], rf[i]):
                    self._refuse(str(oh[i]), "unverified-source", ctx)
                    continue
                self._block(oh[i], ctx, _monotonic())

    def flush(self) -> None:
        self.tick()
        with self._lock:
            if self._audit is not None:
                self._audit.flush()

    def tick(self) -> int:
        """Remove expired blocks now; returns how many were removed."""
        with self._lock:
            if self._closed:
                return 0
            return self._expire(_monotonic())

    def reopen(self) -> None:
        with self._lock:
            if self._audit is not None:
                self._audit.close()
                self._audit = None
            self._open_audit()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            now = _monotonic()
            self._expire(now)
            if self.unblock_on_close:
                for ip in list(self.active):
                    self._unblock(ip, "shutdown")
            self._closed = True
            if self._client is not None:
                self._client.close()
            if self._audit is not None:
                self._audit.close()
                self._audit = None

    # -- blocking ------------------------------------------------------------

    def _block(self, raw_ip: Any, ctx: dict[str, Any], now: float) -> None:
        try:
            addr = ipaddress.ip_address(str(raw_ip).strip())
        except ValueError:
            self._refuse(str(raw_ip), "bad-address", ctx)
            return
        ip = str(addr)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            ip = str(addr.ipv4_mapped)
            addr = addr.ipv4_mapped
        net = next((n for n in self.allowlist if addr.version == n.version and addr in n), None)
        if net is not None:
            self._refuse(ip, "allowlisted", {**ctx, "network": str(net)})
            return
        cur = self.active.get(ip)
        if cur is not None:
            cur.expires = now + self.ttl_s
            self.stats["extended"] += 1
            return
        if not self._bucket.take(now):
            self._refuse(ip, "rate-limited", {**ctx, "max_blocks_per_min": self.max_blocks_per_min})
            return
        reply = "dry-run"
        if self._client is not None:
            if now < self._down_until:  # Suricata failed recently: do not stall on it again
                self._bucket.refund()
                self._error("dataset-add", ip, "command socket unavailable (backing off)", ctx)
                return
            try:
                rep = self._client.dataset_add(self.dataset, "ip", ip)
            except SidecarError as exc:
                self._down_until = _monotonic() + BACKOFF_S
                self._bucket.refund()
                self._error("dataset-add", ip, str(exc), ctx)
                return
            if not rep.ok:
                self._error("dataset-add", ip, str(rep.message), ctx)
                return
            reply = str(rep.message)
        else:
            log.info("dry run: would dataset-add %s ip %s for %d s (%s)", self.dataset, ip, self.ttl_s, ctx)
        self.active[ip] = Block(ip, now + self.ttl_s, time.time())
        self.stats["blocked"] += 1
        self._audit_line("block", ip, "malicious", {**ctx, "ttl_s": self.ttl_s, "suricata": reply})
        if self._client is not None:
            log.warning("blocked %s via dataset %s for %.0f s (%s)", ip, self.dataset, self.ttl_s, ctx)

    def _expire(self, now: float) -> int:
        due = [b.ip for b in self.active.values() if b.expires <= now]
        n = 0
        for ip in due:
            n += self._unblock(ip, "ttl-expired")
        return n

    def _unblock(self, ip: str, reason: str) -> int:
        reply = "dry-run"
        if self._client is not None:
            try:
                rep = self._client.dataset_remove(self.dataset, "ip", ip)
            except SidecarError as exc:  # keep it; retried on the next expiry check
                self._error("dataset-remove", ip, str(exc), {"reason": reason})
                return 0
            reply = str(rep.message)
            if not rep.ok:  # not in the set (Suricata restarted?): nothing left to undo
                log.info("dataset-remove %s: %s", ip, rep.message)
        else:
            log.info("dry run: would dataset-remove %s ip %s (%s)", self.dataset, ip, reason)
        b = self.active.pop(ip)
        self.stats["unblocked"] += 1
        held = round(time.time() - b.added_wall, 3)
        self._audit_line("unblock", ip, reason, {"held_s": held, "suricata": reply})
        return 1

    def _refuse(self, ip: str, reason: str, ctx: dict[str, Any]) -> None:
        key = f"refused:{reason}"
        self.stats[key] += 1
        if self.stats[key] <= MAX_LOGGED_PER_REASON:
            log.warning("not blocking %s: %s (%s)", ip, reason, ctx)
        elif self.stats[key] == MAX_LOGGED_PER_REASON + 1:
            log.warning("further %s refusals are counted and audited, not logged", reason)
        self._audit_line("refuse", ip, reason, ctx)

    def _error(self, op: str, ip: str, detail: str, ctx: dict[str, Any]) -> None:
        key = f"error:{op}"
        self.stats[key] += 1
        if self.stats[key] <= MAX_LOGGED_PER_REASON:
            log.error("%s %s ip %s failed: %s", op, self.dataset, ip, detail)
        self._audit_line("error", ip, f"{op} failed", {**ctx, "detail": detail[:300]})

    # -- audit ---------------------------------------------------------------

    def _open_audit(self) -> None:
        if self.audit_path:
            self._audit = open(self.audit_path, "ab")  # noqa: SIM115 - long-lived handle

    def _audit_line(self, action: str, ip: str, reason: str, extra: dict[str, Any]) -> None:
        if self._audit is None:
            return
        rec: dict[str, Any] = {
            "ts": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000"),
            "action": action,
            "ip": ip,
            "reason": reason,
            "dataset": self.dataset,
            "dry_run": self.dry_run,
        }
        rec.update(extra)
        self._audit.write(orjson.dumps(rec, default=str) + b"\n")
        self._audit.flush()


def _handshake(proto: Any, orig_flags: int, resp_flags: int) -> bool:
    """TCP flow whose originator sent SYN and ACK and whose responder sent SYN+ACK."""
    if not isinstance(proto, str) or proto.lower() != "tcp" or orig_flags < 0 or resp_flags < 0:
        return False
    return (orig_flags & (SYN | ACK)) == (SYN | ACK) and (resp_flags & (SYN | ACK)) == (SYN | ACK)
