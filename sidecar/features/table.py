"""The model's input columns as a table: one :class:`Feature` row per column, in model order.

Each row says how every source feeds the column (the model card, rendered by
:func:`sidecar.features.schema.schema_markdown`); :func:`sidecar.features.schema.extract`
computes them. Import these names from :mod:`sidecar.features.schema`.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Seconds; lower bound of the duration used as the packets/s denominator.
DURATION_FLOOR = 1e-6

_ZEEK_CAP = "Zeek: capped at `*_ip_bytes` - pkts*(20+L4 hdr) (sequence-number bytes count what a lossy sensor missed)"
_ZEEK_ZERO = "Zeek, duration unset (= 0): `*_ip_bytes` - pkts*(IP hdr+L4 hdr), SYN-only TCP 0"
_EVE_PAYLOAD = "estimate: bytes - pkts*(14+IP hdr+L4 hdr; IP 20, IPv6 40; tcp 20, udp/icmp 8), clamped >= 0"
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
        f"eve: {_EVE_PAYLOAD}; {_ZEEK_CAP}; {_ZEEK_ZERO}",
    ),
    Feature(
        "log_resp_bytes",
        "log1p(bytes)",
        f"log1p(resp_bytes) (payload; {_SYN_ONLY})",
        "`TotLen Bwd Pkts`",
        "`resp_bytes`",
        "`flow.bytes_toclient`, `flow.pkts_toclient`",
        f"eve: {_EVE_PAYLOAD}; {_ZEEK_CAP}; {_ZEEK_ZERO}",
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
