"""The one feature schema the model uses, computed identically from every source.

:func:`extract` turns a canonical :class:`~sidecar.flow.FlowBatch` into a float32
matrix ``[n, F]`` in :data:`FEATURES` order. Only canonical columns are used (never
``ts``, IP addresses, ``uid`` or the originator port), so no feature can leak
capture time or host identity. A value the source lacks is ``NaN`` in the output,
never 0: ``NaN`` inputs propagate, ``-1`` ports/flags and ``None`` protocols become
``NaN``.

Per-source notes (see the readers' docstrings):

* Zeek (TSV/JSON): ``orig_bytes``/``resp_bytes`` are transport payload bytes as Zeek
  reports them; TCP flags are derived by the reader from ``history``.
* Suricata eve: payload bytes are an ESTIMATE from whole-packet bytes
  (``bytes - pkts * (14 + 20 + transport header)``, TCP options not subtracted).
* CICFlowMeter: ``TotLen Fwd/Bwd Pkts`` are payload bytes; the canonical flag bitmasks
  are missing, so flag presence is taken from the ``extra`` columns
  ``FIN/SYN/RST/PSH/ACK Flag Cnt`` (> 0 means present). CIC counts span both
  directions, which matches the ``orig_flags | resp_flags`` union used for the
  other sources.

Zeek's unset ``duration`` (all Zeek sources: ``zeek-tsv``, ``zeek-json``, ``broker``): Zeek's
``conn.log`` writes ``duration``, ``orig_bytes`` and ``resp_bytes`` **only when the duration is
> 0** (``base/protocols/conn/main.zeek``, ``set_conn``: ``if ( c$duration > 0secs )``), while
``orig_pkts``/``orig_ip_bytes`` are always written. So an unset duration with known packet
counts is not missing, it is exactly 0 (all packets seen in one instant: single-SYN scans,
one-datagram DNS/NTP) - the case CICFlowMeter writes as ``Flow Duration`` 0. For such rows
:func:`zeek_zero_duration` sets the duration to 0 and the payload bytes to an estimate from the
IP bytes (``ip_bytes - pkts * (20 + L4 header)``, like eve; TCP whose direction sent only SYN
(no ACK) carries no payload -> 0). Without this every single-packet Zeek flow had NaN
duration/bytes, an input CIC training data never has.

Packets per second use ``max(duration, DURATION_FLOOR)`` as the denominator so
single-packet flows (duration 0) give a finite rate; missing duration gives ``NaN``.

Cross-source fixes (measured in ``docs/CROSS_SOURCE.md``, H10 experiment):

* A TCP direction whose flags are known and show SYN without ACK (a half-open
  connection attempt, a SYN scan/flood probe, a rejected connect) carries no payload:
  its payload bytes are 0. The eve / PyPI-cicflowmeter estimate would otherwise count
  the SYN's TCP options (20 B on Linux) as payload, where CIC and Zeek have 0.
* TCP flag features are 0, not missing, when the protocol is known and is not TCP
  (CIC writes 0 flag counts for UDP/ICMP; eve and Zeek have no TCP flags there).

Both leave every CIC training row unchanged (CIC has no per-direction flags and writes 0
flag counts for non-TCP rows), so models trained on schema version 1 stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sidecar.flow import ACK, FIN, PSH, RST, SYN, FlowBatch

FEATURE_SCHEMA_VERSION = "1"

#: Seconds; lower bound of the duration used as the packets/s denominator.
DURATION_FLOOR = 1e-6

_ZEEK_PAYLOAD = "payload bytes as reported"
_ZEEK_ZERO = "Zeek, duration unset (= 0): `*_ip_bytes` - pkts*(20+L4 hdr), SYN-only TCP 0"
_EVE_PAYLOAD = "estimate: bytes - pkts*(14+20+L4 hdr; tcp 20, udp/icmp 8), clamped >= 0"
_FLAG_ZEEK = "`history` letters -> flag bits (reader)"
_FLAG_EVE = "`tcp.tcp_flags_ts` \\| `tcp.tcp_flags_tc` (hex)"
_SYN_ONLY = "0 for a TCP direction that sent SYN without ACK"


@dataclass(frozen=True)
class Feature:
    """One model input column and how each source feeds it (model-card row)."""

    name: str
    unit: str
    derivation: str
    cic: str
    zeek: str
    eve: str
    conversion: str


def _flag_feature(word: str, cic_col: str) -> Feature:
    return Feature(
        f"flag_{word}",
        "0/1",
        f"1 if {word.upper()} seen in either direction ((orig_flags \\| resp_flags) & {word.upper()}); "
        "0 if proto is known and not TCP; else NaN if flags missing",
        f"`{cic_col}` > 0 (count over both directions)",
        f"`history` ({_FLAG_ZEEK})",
        "`tcp.tcp_flags_ts`, `tcp.tcp_flags_tc`",
        f"CIC: count>0 from `extra`; Zeek: {_FLAG_ZEEK}; eve: {_FLAG_EVE}",
    )


FEATURES: tuple[Feature, ...] = (
    Feature(
        "log_duration",
        "log1p(s)",
        "log1p(duration)",
        "`Flow Duration`",
        "`duration`",
        "`flow.end` - `flow.start`",
        "CIC: us / 1e6 -> s; Zeek: unset with packets counted = 0 s (Zeek logs duration only if > 0)",
    ),
    Feature(
        "log_orig_pkts",
        "log1p(packets)",
        "log1p(orig_pkts)",
        "`Tot Fwd Pkts`",
        "`orig_pkts`",
        "`flow.pkts_toserver`",
        "none",
    ),
    Feature(
        "log_resp_pkts",
        "log1p(packets)",
        "log1p(resp_pkts)",
        "`Tot Bwd Pkts`",
        "`resp_pkts`",
        "`flow.pkts_toclient`",
        "none",
    ),
    Feature(
        "log_orig_bytes",
        "log1p(bytes)",
        f"log1p(orig_bytes) (payload; {_SYN_ONLY})",
        "`TotLen Fwd Pkts`",
        "`orig_bytes`",
        "`flow.bytes_toserver`, `flow.pkts_toserver`",
        f"eve: {_EVE_PAYLOAD}; {_ZEEK_ZERO}",
    ),
    Feature(
        "log_resp_bytes",
        "log1p(bytes)",
        f"log1p(resp_bytes) (payload; {_SYN_ONLY})",
        "`TotLen Bwd Pkts`",
        "`resp_bytes`",
        "`flow.bytes_toclient`, `flow.pkts_toclient`",
        f"eve: {_EVE_PAYLOAD}; {_ZEEK_ZERO}",
    ),
    Feature(
        "orig_bytes_per_pkt",
        "bytes/packet",
        f"orig_bytes / orig_pkts ({_SYN_ONLY}); NaN if orig_pkts is 0 or missing",
        "`TotLen Fwd Pkts` / `Tot Fwd Pkts`",
        "`orig_bytes` / `orig_pkts`",
        "estimated payload / `flow.pkts_toserver`",
        f"eve: {_EVE_PAYLOAD}",
    ),
    Feature(
        "resp_bytes_per_pkt",
        "bytes/packet",
        f"resp_bytes / resp_pkts ({_SYN_ONLY}); NaN if resp_pkts is 0 or missing",
        "`TotLen Bwd Pkts` / `Tot Bwd Pkts`",
        "`resp_bytes` / `resp_pkts`",
        "estimated payload / `flow.pkts_toclient`",
        f"eve: {_EVE_PAYLOAD}",
    ),
    Feature(
        "resp_orig_pkt_ratio",
        "ratio",
        "resp_pkts / orig_pkts; NaN if orig_pkts is 0 or missing",
        "`Tot Bwd Pkts` / `Tot Fwd Pkts`",
        "`resp_pkts` / `orig_pkts`",
        "`flow.pkts_toclient` / `flow.pkts_toserver`",
        "none",
    ),
    Feature(
        "no_response",
        "0/1",
        "1 if resp_pkts == 0; NaN if resp_pkts missing",
        "`Tot Bwd Pkts` == 0",
        "`resp_pkts` == 0",
        "`flow.pkts_toclient` == 0",
        "none",
    ),
    Feature(
        "proto_tcp",
        "0/1",
        "proto == tcp; NaN if proto missing",
        "`Protocol` == 6",
        "`proto` == tcp",
        "`proto` == TCP",
        "CIC: IANA number -> name",
    ),
    Feature(
        "proto_udp",
        "0/1",
        "proto == udp; NaN if proto missing",
        "`Protocol` == 17",
        "`proto` == udp",
        "`proto` == UDP",
        "CIC: IANA number -> name",
    ),
    Feature(
        "proto_icmp",
        "0/1",
        "proto in (icmp, icmp6); NaN if proto missing",
        "`Protocol` == 1",
        "`proto` == icmp",
        "`proto` == ICMP / IPv6-ICMP",
        "CIC: IANA number -> name",
    ),
    Feature(
        "resp_port_well_known",
        "0/1",
        "resp_p < 1024; NaN if resp_p missing (-1)",
        "`Dst Port`",
        "`id.resp_p`",
        "`dest_port` (ICMP: `icmp_code`)",
        "ICMP: port column holds the code",
    ),
    Feature(
        "log_resp_port",
        "log1p(port)",
        "log1p(resp_p); NaN if resp_p missing (-1)",
        "`Dst Port`",
        "`id.resp_p`",
        "`dest_port` (ICMP: `icmp_code`)",
        "ICMP: port column holds the code",
    ),
    Feature(
        "log_pkts_per_s",
        "log1p(packets/s)",
        f"log1p((orig_pkts + resp_pkts) / max(duration, {DURATION_FLOOR:g} s)); NaN if any input missing",
        "`Tot Fwd Pkts` + `Tot Bwd Pkts`, `Flow Duration`",
        "`orig_pkts` + `resp_pkts`, `duration`",
        "`flow.pkts_toserver` + `flow.pkts_toclient`, `flow.end` - `flow.start`",
        f"duration floored at {DURATION_FLOOR:g} s",
    ),
    _flag_feature("syn", "SYN Flag Cnt"),
    _flag_feature("fin", "FIN Flag Cnt"),
    _flag_feature("rst", "RST Flag Cnt"),
    _flag_feature("psh", "PSH Flag Cnt"),
    _flag_feature("ack", "ACK Flag Cnt"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)

#: flag feature name -> (bit, CIC flag-count column in ``FlowBatch.extra``)
_FLAGS: dict[str, tuple[int, str]] = {
    "flag_syn": (SYN, "SYN Flag Cnt"),
    "flag_fin": (FIN, "FIN Flag Cnt"),
    "flag_rst": (RST, "RST Flag Cnt"),
    "flag_psh": (PSH, "PSH Flag Cnt"),
    "flag_ack": (ACK, "ACK Flag Cnt"),
}


def _f64(batch: FlowBatch, name: str) -> np.ndarray:
    return np.asarray(batch[name], dtype=np.float64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    ok = np.isfinite(num) & np.isfinite(den) & (den > 0)
    np.divide(num, den, out=out, where=ok)
    return out


def _log1p(x: np.ndarray) -> np.ndarray:
    # inputs are counts/durations (>= 0); clip guards a stray negative against -inf/NaN noise
    with np.errstate(invalid="ignore"):
        return np.log1p(np.where(np.isnan(x), np.nan, np.maximum(x, 0.0)))


def _indicator(cond: np.ndarray, missing: np.ndarray) -> np.ndarray:
    return np.where(missing, np.nan, cond.astype(np.float64))


#: sources carrying Zeek conn-record semantics (duration/payload bytes unset when duration == 0)
ZEEK_SOURCES = frozenset({"zeek-tsv", "zeek-json", "broker"})
_L4_HDR = {"tcp": 20.0, "udp": 8.0, "icmp": 8.0, "icmp6": 8.0}


def zeek_zero_duration(
    batch: FlowBatch, dur: np.ndarray, op: np.ndarray, rp: np.ndarray, ob: np.ndarray, rb: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zeek rows with unset duration but known packet counts: duration 0, payload from IP bytes."""
    fix = np.isnan(dur) & np.isfinite(op) & np.isfinite(rp)
    if not fix.any():
        return dur, ob, rb
    proto = batch["proto"]
    hdr = np.array([_L4_HDR.get(p, np.nan) if isinstance(p, str) else np.nan for p in proto], dtype=np.float64)
    out = []
    for pk, ipb, b, flags in (
        (op, _f64(batch, "orig_ip_bytes"), ob, batch["orig_flags"]),
        (rp, _f64(batch, "resp_ip_bytes"), rb, batch["resp_flags"]),
    ):
        est = np.maximum(ipb - pk * (20.0 + hdr), 0.0)  # NaN if IP bytes or proto unknown
        syn_only = _syn_only(np.asarray(flags, dtype=np.int32), np.asarray(proto == "tcp", dtype=bool))
        est = np.where(syn_only | (pk == 0), 0.0, est)
        out.append(np.where(fix & np.isnan(b), est, b))
    return np.where(fix, 0.0, dur), out[0], out[1]


def _syn_only(flags: np.ndarray, is_tcp: np.ndarray) -> np.ndarray:
    """TCP rows whose (known) flag union for one direction has SYN and no ACK."""
    return is_tcp & (flags >= 0) & ((flags & SYN) != 0) & ((flags & ACK) == 0)


def extract(batch: FlowBatch) -> np.ndarray:
    """Features for every row of ``batch``: float32 ``[n, F]`` in :data:`FEATURES` order."""
    n = len(batch)
    dur = _f64(batch, "duration")
    op = _f64(batch, "orig_pkts")
    rp = _f64(batch, "resp_pkts")
    ob = _f64(batch, "orig_bytes")
    rb = _f64(batch, "resp_bytes")
    if batch.source in ZEEK_SOURCES:
        dur, ob, rb = zeek_zero_duration(batch, dur, op, rp, ob, rb)

    proto = batch["proto"]
    proto_missing = np.asarray(np.equal(proto, np.array(None, dtype=object)), dtype=bool)
    is_tcp = np.asarray(proto == "tcp", dtype=bool)
    is_udp = proto == "udp"
    is_icmp = (proto == "icmp") | (proto == "icmp6")

    of = batch["orig_flags"].astype(np.int32)
    rf = batch["resp_flags"].astype(np.int32)
    # a TCP direction that sent SYN but never ACK carried no payload (estimates count the SYN's options)
    ob = np.where(_syn_only(of, is_tcp) & ~np.isnan(ob), 0.0, ob)
    rb = np.where(_syn_only(rf, is_tcp) & ~np.isnan(rb), 0.0, rb)

    rport = batch["resp_p"].astype(np.float64)
    rport[rport < 0] = np.nan

    with np.errstate(invalid="ignore"):
        pps = (op + rp) / np.maximum(dur, DURATION_FLOOR)  # NaN propagates from any input

    cols: dict[str, np.ndarray] = {
        "log_duration": _log1p(dur),
        "log_orig_pkts": _log1p(op),
        "log_resp_pkts": _log1p(rp),
        "log_orig_bytes": _log1p(ob),
        "log_resp_bytes": _log1p(rb),
        "orig_bytes_per_pkt": _safe_div(ob, op),
        "resp_bytes_per_pkt": _safe_div(rb, rp),
        "resp_orig_pkt_ratio": _safe_div(rp, op),
        "no_response": _indicator(rp == 0, np.isnan(rp)),
        "proto_tcp": _indicator(is_tcp, proto_missing),
        "proto_udp": _indicator(np.asarray(is_udp, dtype=bool), proto_missing),
        "proto_icmp": _indicator(np.asarray(is_icmp, dtype=bool), proto_missing),
        "resp_port_well_known": _indicator(rport < 1024, np.isnan(rport)),
        "log_resp_port": _log1p(rport),
        "log_pkts_per_s": _log1p(pps),
    }

    have_o, have_r = of >= 0, rf >= 0
    not_tcp = ~proto_missing & ~is_tcp  # UDP/ICMP/other: no TCP flags by protocol -> 0, not missing
    union = np.where(have_o, of, 0) | np.where(have_r, rf, 0)
    have_any = have_o | have_r
    for name, (bit, cic_col) in _FLAGS.items():
        vals = np.where(have_any, ((union & bit) != 0).astype(np.float64), np.nan)
        cnt = batch.extra.get(cic_col)
        if cnt is not None:
            # CIC mapping: flag-count columns (both directions) where canonical flags are missing
            c = np.asarray(cnt, dtype=np.float64)
            use = ~have_any & ~np.isnan(c)
            vals = np.where(use, (c > 0).astype(np.float64), vals)
        cols[name] = np.where(not_tcp, 0.0, vals)

    out = np.empty((n, len(FEATURES)), dtype=np.float32)
    for j, f in enumerate(FEATURES):
        out[:, j] = cols[f.name]
    return out


def schema_markdown() -> str:
    """The feature schema as a Markdown table (model card)."""
    lines = [
        f"Feature schema version {FEATURE_SCHEMA_VERSION}; float32, NaN = missing (never 0-filled).",
        "",
        "| # | feature | unit | derivation | CIC column(s) | Zeek field(s) | eve field(s) | conversion |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, f in enumerate(FEATURES):
        lines.append(
            f"| {i} | `{f.name}` | {f.unit} | {f.derivation} | {f.cic} | {f.zeek} | {f.eve} | {f.conversion} |"
        )
    return "\n".join(lines)
