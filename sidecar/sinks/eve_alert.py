"""Sink writing malicious verdicts as Suricata-style EVE ``alert`` lines (JSON lines).

One line per malicious verdict, shaped like Suricata's own ``event_type: "alert"``
records so existing EVE tooling (jq, Filebeat/Elastic, Splunk, EveBox) can consume it:

* ``timestamp``: flow start time in Suricata's format, always UTC
  (``2021-06-06T15:57:01.123456+0000``); the write time when the flow has no ``ts``.
* ``flow_id``: the Suricata flow id (int) when ``uid`` is a decimal flow id, else a
  stable 51-bit int hash (blake2b) of ``uid``. The uid is always kept in ``bnn.uid``.
* ``event_type``: ``"alert"``.
* ``src_ip``, ``src_port``, ``dest_ip``, ``dest_port``: the flow's originator /
  responder. Ports are omitted when missing (-1). For ICMP the FlowBatch ports are
  type/code, written as ``icmp_type`` / ``icmp_code`` as Suricata does.
* ``proto``: upper case as Suricata writes it (``TCP``, ``UDP``, ``ICMP``, ``IPv6-ICMP``,
  ``SCTP``; otherwise the flow's proto text upper-cased).
* ``app_proto``: the flow's service, when known.
* ``direction``: ``"to_server"`` (the alert is about the originator's flow).
* ``flow``: like the ``flow`` object of Suricata 7 alerts: ``pkts_toserver``,
  ``pkts_toclient``, ``bytes_toserver``, ``bytes_toclient``, ``start``, ``src_ip``,
  ``dest_ip`` and (not for ICMP) ``src_port``, ``dest_port``. Bytes are IP bytes plus
  14 per packet (Ethernet framing, the inverse of the eve reader's conversion, so eve
  input round-trips); keys whose value the flow lacks are omitted.
* ``host``: the configured sensor name, when given (like Suricata's ``sensor-name``).

Key order follows Suricata 7 (checked against a real ``suricata -r`` run in
``tests/test_eve_alert.py``); packet-level keys Suricata adds (``pcap_cnt``,
``pkt_src``, ``tx_id``, ``vlan``, ``ether``, app-layer objects) are absent because a
verdict is about a flow, not a packet.
* ``alert``: ``action``, ``gid``, ``signature_id``, ``rev`` (1),
  ``signature`` (``BNN-SIDECAR <family> flow (stage N)``), ``category`` (a
  classtype description from Suricata/ET ``classification.config``) and
  ``severity`` (that classtype's priority, 1 = highest .. 3).
* ``bnn``: ``uid``, ``score``, ``score2`` (null when stage 2 did not run), ``class``,
  ``stage``, ``model``.

Signature ids: the sink owns the range ``sid_base`` .. ``sid_base + 99``, by default
**9100000-9100099** (inside the 9000000-9999999 block sid-allocation leaves for local
use). ``sid_base + i`` where ``i`` is the family's index in
:data:`sidecar.features.labels.FAMILIES` (9100000 benign, 9100001 scan,
9100002 bruteforce, 9100003 dos, 9100004 ddos, 9100005 web, 9100006 infiltration,
9100007 botnet); ``sid_base + 50`` (9100050) for a flow only the flood rule flagged
(``stage`` 3, signature ``BNN-SIDECAR dos flood (stage 3, rate rule)``) and
``sid_base + 51`` (9100051) for a login session only the guessing rule flagged (``stage`` 4,
``BNN-SIDECAR bruteforce password guessing (stage 4, guessing rule)``), so they can be
suppressed or thresholded apart from the model's verdicts; ``sid_base + 99`` for a class
not in ``FAMILIES``.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime
from typing import IO, Any

import numpy as np
import orjson

from sidecar.features.labels import FAMILIES
from sidecar.verdict import STAGE_CASCADE, STAGE_GUESS, STAGE_RATE, VerdictBatch

SID_BASE = 9_100_000
#: Ethernet header bytes per packet (eve byte counts include it; see sidecar/sources/eve.py)
ETH_HDR = 14
SID_UNKNOWN_OFFSET = 99
#: the flood rule's own signature (stage 3: the model said benign, the rate rule flagged it)
SID_RATE_OFFSET = 50
#: ``sid_base + SID_GUESS_OFFSET``: a login session only the guessing rule flagged (stage 4)
SID_GUESS_OFFSET = 51
FLOW_ID_BITS = 51
_FLOW_ID_MASK = (1 << FLOW_ID_BITS) - 1

#: family -> (classification.config description, priority = severity)
CATEGORY: dict[str, tuple[str, int]] = {
    "benign": ("Misc activity", 3),
    "scan": ("Detection of a Network Scan", 3),
    "bruteforce": ("Attempted User Privilege Gain", 1),
    "dos": ("Detection of a Denial of Service Attack", 2),
    "ddos": ("Detection of a Denial of Service Attack", 2),
    "web": ("Web Application Attack", 1),
    "infiltration": ("A Network Trojan was detected", 1),
    "botnet": ("Malware Command and Control Activity Detected", 1),
}
DEFAULT_CATEGORY = ("Misc Attack", 2)

_PROTO = {"tcp": "TCP", "udp": "UDP", "icmp": "ICMP", "icmp6": "IPv6-ICMP", "sctp": "SCTP"}


def suricata_ts(ts: float) -> str:
    """UNIX epoch seconds -> ``2021-06-06T13:57:01.123456+0000`` (UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def flow_id_for(uid: str | None) -> int:
    """Suricata flow id for a decimal uid, else a stable 51-bit hash of the uid."""
    if uid is None:
        uid = ""
    if uid.isascii() and uid.isdigit() and 0 < int(uid) < (1 << 63):
        return int(uid)
    return int.from_bytes(hashlib.blake2b(uid.encode(), digest_size=8).digest(), "big") & _FLOW_ID_MASK


def suricata_proto(proto: str | None) -> str:
    if proto is None:
        return "UNKNOWN"
    return _PROTO.get(proto.lower(), proto.upper())


class EveAlertSink:
    """Append Suricata-style alert JSON lines to ``path`` (see module docstring)."""

    name = "eve-alert"

    def __init__(
        self,
        path: str | os.PathLike[str],
        only_malicious: bool = True,
        sid_base: int = SID_BASE,
        gid: int = 1,
        action: str = "allowed",
        host: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.only_malicious = only_malicious
        self.sid_base = sid_base
        self.gid = gid
        self.action = action
        self.host = host
        self.written = 0
        self._fh: IO[bytes] | None = open(self.path, "ab")  # noqa: SIM115 - long-lived handle

    def signature_id(self, cls: str, stage: int = STAGE_CASCADE) -> int:
        if stage == STAGE_RATE:
            return self.sid_base + SID_RATE_OFFSET
        if stage == STAGE_GUESS:
            return self.sid_base + SID_GUESS_OFFSET
        try:
            return self.sid_base + FAMILIES.index(cls)
        except ValueError:
            return self.sid_base + SID_UNKNOWN_OFFSET

    def _alerts(self, v: VerdictBatch) -> list[dict[str, Any]]:
        f = v.flows
        idx = np.flatnonzero(v.malicious) if self.only_malicious else np.arange(len(v))
        if len(idx) == 0:
            return []
        ts = f["ts"][idx].tolist()
        uid = f["uid"][idx].tolist()
        oh, op = f["orig_h"][idx].tolist(), f["orig_p"][idx].tolist()
        rh, rp = f["resp_h"][idx].tolist(), f["resp_p"][idx].tolist()
        proto = f["proto"][idx].tolist()
        service = f["service"][idx].tolist()
        pk_o, pk_r = f["orig_pkts"][idx].tolist(), f["resp_pkts"][idx].tolist()
        ib_o, ib_r = f["orig_ip_bytes"][idx].tolist(), f["resp_ip_bytes"][idx].tolist()
        score = np.round(v.score[idx], 6).tolist()
        score2 = np.round(v.score2[idx], 6).tolist()
        cls = v.cls[idx].tolist()
        stage = v.stage[idx].tolist()
        now = time.time()
        out: list[dict[str, Any]] = []
        for i in range(len(idx)):
            t = ts[i] if ts[i] == ts[i] else now
            p = proto[i].lower() if isinstance(proto[i], str) else None
            c = str(cls[i])
            category, severity = CATEGORY.get(c, DEFAULT_CATEGORY)
            u = None if uid[i] is None else str(uid[i])
            ev: dict[str, Any] = {
                "timestamp": suricata_ts(t),
                "flow_id": flow_id_for(u),
                "event_type": "alert",
                "src_ip": oh[i],
            }
            icmp = p in ("icmp", "icmp6")
            if op[i] >= 0 and not icmp:
                ev["src_port"] = op[i]
            ev["dest_ip"] = rh[i]
            if rp[i] >= 0 and not icmp:
                ev["dest_port"] = rp[i]
            ev["proto"] = suricata_proto(p)
            if icmp:
                if op[i] >= 0:
                    ev["icmp_type"] = op[i]
                if rp[i] >= 0:
                    ev["icmp_code"] = rp[i]
            ev["alert"] = {
                "action": self.action,
                "gid": self.gid,
                "signature_id": self.signature_id(c, stage[i]),
                "rev": 1,
                "signature": _signature(c, int(stage[i])),
                "category": category,
                "severity": severity,
            }
            if service[i] is not None:
                ev["app_proto"] = service[i]
            ev["direction"] = "to_server"
            fl: dict[str, Any] = {}
            for key, val in (("pkts_toserver", pk_o[i]), ("pkts_toclient", pk_r[i])):
                if val == val:
                    fl[key] = int(val)
            for key, val, pk in (("bytes_toserver", ib_o[i], pk_o[i]), ("bytes_toclient", ib_r[i], pk_r[i])):
                if val == val and pk == pk:
                    fl[key] = round(val + ETH_HDR * pk)
            if ts[i] == ts[i]:
                fl["start"] = suricata_ts(ts[i])
            fl["src_ip"], fl["dest_ip"] = oh[i], rh[i]
            if not icmp and op[i] >= 0:
                fl["src_port"] = op[i]
            if not icmp and rp[i] >= 0:
                fl["dest_port"] = rp[i]
            ev["flow"] = fl
            if self.host is not None:
                ev["host"] = self.host
            ev["bnn"] = {
                "uid": u,
                "score": score[i],
                "score2": None if score2[i] != score2[i] else score2[i],
                "class": c,
                "stage": stage[i],
                "model": v.model,
            }
            out.append(ev)
        return out

    def write(self, verdicts: VerdictBatch) -> None:
        if self._fh is None:
            raise ValueError(f"{self.name} sink is closed")
        alerts = self._alerts(verdicts)
        if not alerts:
            return
        self._fh.write(b"".join(orjson.dumps(a) + b"\n" for a in alerts))
        self.written += len(alerts)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def reopen(self) -> None:
        """Close and reopen ``path`` (SIGHUP after logrotate moved the file)."""
        if self._fh is not None:
            self._fh.close()
        self._fh = open(self.path, "ab")  # noqa: SIM115 - long-lived handle

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _signature(cls: str, stage: int) -> str:
    if stage == STAGE_RATE:
        return f"BNN-SIDECAR {cls} flood (stage {STAGE_RATE}, rate rule)"
    if stage == STAGE_GUESS:
        return f"BNN-SIDECAR {cls} password guessing (stage {STAGE_GUESS}, guessing rule)"
    return f"BNN-SIDECAR {cls} flow (stage {stage})"
