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
IP bytes (``ip_bytes - pkts * (IP header + L4 header)``, IP header 20 or 40 for IPv6, like eve;
TCP whose direction sent only SYN
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
* A direction's payload bytes are at most what its packets can carry, ``ip_bytes - pkts *
  (20 + L4 header)``. Zeek's ``orig_bytes``/``resp_bytes`` come from TCP sequence numbers and,
  when the sensor lost packets (``missed_bytes`` > 0, history ``g``), exceed what the seen
  packets held; CICFlowMeter counts seen packets only. eve's and the PyPI CSV's estimates are
  never above the bound, and CIC rows carry no IP bytes, so only such Zeek rows change.

Both leave every CIC training row unchanged (CIC has no per-direction flags and writes 0
flag counts for non-TCP rows), so models trained on schema version 1 stay valid.
"""

from __future__ import annotations

from itertools import repeat

import numpy as np

from sidecar.features.table import DURATION_FLOOR, FEATURE_NAMES, FEATURES, Feature
from sidecar.flow import ACK, FIN, IP_HDR, PSH, RST, SYN, FlowBatch, ip_header_bytes
from sidecar.memo import look_up_packed

__all__ = [
    "DURATION_FLOOR",
    "FEATURES",
    "FEATURE_NAMES",
    "FEATURE_SCHEMA_VERSION",
    "ZEEK_SOURCES",
    "Feature",
    "extract",
    "schema_markdown",
]

FEATURE_SCHEMA_VERSION = "1"

#: flag feature name -> (bit, CIC flag-count column in ``FlowBatch.extra``)
_FLAGS: dict[str, tuple[int, str]] = {
    "flag_syn": (SYN, "SYN Flag Cnt"),
    "flag_fin": (FIN, "FIN Flag Cnt"),
    "flag_rst": (RST, "RST Flag Cnt"),
    "flag_psh": (PSH, "PSH Flag Cnt"),
    "flag_ack": (ACK, "ACK Flag Cnt"),
}

#: sources carrying Zeek conn-record semantics (duration/payload bytes unset when duration == 0)
ZEEK_SOURCES = frozenset({"zeek-tsv", "zeek-json", "broker"})

# --- extraction ---------------------------------------------------------------------------
# Small batches are what follow mode scores, and there the number of numpy calls, not the
# rows, sets the cost (~1 us each). So everything constant is built here, once, and extract()
# makes about 55 calls on whole blocks (the 7 log1p inputs at once, the 3 ratios at once, both
# flag directions at once, the 5 flag features by one table look-up) where the one-column-at-
# a-time version before it made about 175. The element-wise operations on every value are the
# same, in the same order, so the output is bit-identical to that version at every batch size
# (tests/test_e7_extract.py keeps it as the oracle).


def _span(*names: str) -> slice:
    """The output columns of ``names``, which must be adjacent in :data:`FEATURES` order."""
    j = FEATURE_NAMES.index(names[0])
    if FEATURE_NAMES[j : j + len(names)] != names:
        raise RuntimeError(f"features {names} must be adjacent and in this order")
    return slice(j, j + len(names))


#: rows of the work array: the inputs of the log1p features (the two blocks below, in order)
_W_DUR, _W_OP, _W_RP, _W_OB, _W_RB, _W_PORT, _W_PPS = range(7)
_LOG_A = _span("log_duration", "log_orig_pkts", "log_resp_pkts", "log_orig_bytes", "log_resp_bytes")
_LOG_B = _span("log_resp_port", "log_pkts_per_s")
_DIV = _span("orig_bytes_per_pkt", "resp_bytes_per_pkt", "resp_orig_pkt_ratio")
_DIV_NUM = np.array([_W_OB, _W_RB, _W_RP], dtype=np.intp)
_DIV_DEN = np.array([_W_OP, _W_RP, _W_OP], dtype=np.intp)
_NO_RESP = _span("no_response").start
_PROTO = _span("proto_tcp", "proto_udp", "proto_icmp")
_WELL_KNOWN = _span("resp_port_well_known").start
_FLAG = _span(*(nm for nm in FEATURE_NAMES if nm in _FLAGS))
_FILLED = [j for s in (_LOG_A, _LOG_B, _DIV, _PROTO, _FLAG) for j in range(s.start, s.stop)]
if sorted([*_FILLED, _NO_RESP, _WELL_KNOWN]) != list(range(len(FEATURES))):
    raise RuntimeError("extract() does not fill every feature column exactly once")


#: protocol -> code: 0 missing, 1 tcp, 2 udp, 3 icmp/icmp6, _OTHER any other value (known, not TCP)
_PROTO_CODE: dict[object, int] = {None: 0, "tcp": 1, "udp": 2, "icmp": 3, "icmp6": 3}
_OTHER = 4
_NAN = np.nan
#: code -> (proto_tcp, proto_udp, proto_icmp), one row per feature
_PROTO_ONEHOT = np.array(
    [[_NAN, 1.0, 0.0, 0.0, 0.0], [_NAN, 0.0, 1.0, 0.0, 0.0], [_NAN, 0.0, 0.0, 1.0, 0.0]], dtype=np.float64
)
#: code -> transport header bytes for the Zeek IP-bytes payload estimate (NaN: unknown)
_L4_HDR = np.array([_NAN, 20.0, 8.0, 8.0, _NAN], dtype=np.float64)
_N_PROTO = 5

# TCP flags by table look-up. A direction's int16 flags (as uint16) -> code: its FIN..ACK bits
# (0..31) if known, _MISSING if negative (-1: missing). (proto code, orig code, resp code)
# -> the 5 flag features, filled by the rule in the module docstring: 0 if the protocol is
# known and not TCP, else NaN if both directions are missing, else bit of the union.
_MISSING = 32
_N_CODE = _MISSING + 1
_U16 = np.arange(1 << 16, dtype=np.int64)
_DIR_CODE = np.where(_U16 < (1 << 15), _U16 & 31, _MISSING).astype(np.uint8)
_SYN_BY_CODE = np.array([c < _MISSING and (c & (SYN | ACK)) == SYN for c in range(_N_CODE)], dtype=bool)
_FLAG_CIC = tuple(_FLAGS[nm][1] for nm in FEATURE_NAMES[_FLAG])


def _flag_table() -> np.ndarray:
    bits = np.array([_FLAGS[nm][0] for nm in FEATURE_NAMES[_FLAG]])
    tab = np.empty((len(bits), _N_PROTO, _N_CODE, _N_CODE), dtype=np.float64)
    for pc in range(_N_PROTO):
        for c0 in range(_N_CODE):
            for c1 in range(_N_CODE):
                if pc >= 2:  # udp, icmp, other
                    tab[:, pc, c0, c1] = 0.0
                elif c0 == c1 == _MISSING:
                    tab[:, pc, c0, c1] = _NAN
                else:
                    union = (c0 % _MISSING) | (c1 % _MISSING)
                    tab[:, pc, c0, c1] = (union & bits) != 0
    return tab.reshape(len(bits), -1)


_FLAG_TAB = _flag_table()


def _proto_code(p: object) -> int:
    try:
        return _PROTO_CODE.get(p, _OTHER)
    except TypeError:  # unhashable: no protocol name, so "other" (as comparing it with each name finds)
        return _OTHER


#: :data:`_PROTO_CODE` as native intp bytes, for :func:`_proto_codes`
_PROTO_CODE_BYTES = {k: np.intp(v).tobytes() for k, v in _PROTO_CODE.items()}


def _proto_codes(proto: np.ndarray) -> np.ndarray:
    """Protocol code per row (intp, read-only).

    The usual protocols by one ``itemgetter`` call over the column's list and one ``bytes.join``
    (about a third less than ``np.fromiter`` over ``dict.get``); a column with any other value takes the
    per-value path."""
    vals = proto.tolist()
    if len(vals) > 1:
        try:
            return look_up_packed(vals, _PROTO_CODE_BYTES, np.intp)
        except (KeyError, TypeError):  # another protocol (code _OTHER), or an unhashable value
            pass
    try:
        return np.fromiter(map(_PROTO_CODE.get, vals, repeat(_OTHER)), dtype=np.intp, count=len(vals))
    except TypeError:
        return np.fromiter(map(_proto_code, vals), dtype=np.intp, count=len(vals))


def _ip_byte_cols(cols: dict[str, np.ndarray]) -> np.ndarray:
    """``[2, n]`` float64: IP-layer bytes per direction (NaN where the source has none, e.g. CIC)."""
    return np.array((cols["orig_ip_bytes"], cols["resp_ip_bytes"]), dtype=np.float64)


def _zeek_fix(
    w: np.ndarray, ipb: np.ndarray, cols: dict[str, np.ndarray], codes: np.ndarray, syn_only: np.ndarray
) -> None:
    """In the work array: Zeek rows with unset duration but both packet counts known get
    duration 0 and, where missing, payload bytes estimated from the IP bytes ``ipb``."""
    dur, pk = w[_W_DUR], w[_W_OP : _W_RP + 1]
    fix = np.isnan(dur) & np.isfinite(pk[0]) & np.isfinite(pk[1])
    rows = np.flatnonzero(fix)
    if not len(rows):
        return
    ip_hdr = np.full(len(dur), float(IP_HDR))
    ip_hdr[rows] = [ip_header_bytes(a) for a in cols["orig_h"][rows]]  # 40 for IPv6 (only the rows fixed)
    est = np.maximum(ipb - pk * (ip_hdr + _L4_HDR[codes]), 0.0)  # NaN if IP bytes or proto unknown
    np.copyto(est, 0.0, where=syn_only | (pk == 0))
    pay = w[_W_OB : _W_RB + 1]
    np.copyto(pay, est, where=fix & np.isnan(pay))
    np.copyto(dur, 0.0, where=fix)


def _cap_payload(w: np.ndarray, ipb: np.ndarray, codes: np.ndarray) -> None:
    """In the work array: a direction's payload is at most what its packets carried,
    ``ip_bytes - pkts * (20 + L4 header)`` (an upper bound: IP/TCP options, and the 20 more bytes
    of an IPv6 header, are not subtracted).

    Zeek derives ``orig_bytes``/``resp_bytes`` from TCP sequence numbers, so with capture loss
    they count bytes the sensor never saw; CICFlowMeter (and eve) count seen packets only. Rows
    without IP bytes (CIC) or packet counts are unchanged; a missing payload stays missing."""
    cap = ipb - w[_W_OP : _W_RP + 1] * (IP_HDR + _L4_HDR[codes])  # NaN if any input is unknown
    np.maximum(cap, 0.0, out=cap)
    pay = w[_W_OB : _W_RB + 1]
    with np.errstate(invalid="ignore"):
        np.copyto(pay, cap, where=pay > cap)  # False wherever either side is NaN


def _syn_only(cols: dict[str, np.ndarray], is_tcp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flag codes ``[2, n]`` orig/resp, TCP directions whose known flags have SYN and no ACK)."""
    fl = np.array((cols["orig_flags"], cols["resp_flags"]), dtype=np.int16)
    code = _DIR_CODE.take(fl.view(np.uint16))
    return code, _SYN_BY_CODE.take(code) & is_tcp


def _work(cols: dict[str, np.ndarray]) -> np.ndarray:
    """Work array ``[7, n]`` float64: the canonical columns feeding the log1p features (a copy)."""
    rp = cols["resp_p"]
    names = ("duration", "orig_pkts", "resp_pkts", "orig_bytes", "resp_bytes")
    return np.array((*(cols[k] for k in names), rp, rp), dtype=np.float64)


def zeek_zero_duration(
    batch: FlowBatch, dur: np.ndarray, op: np.ndarray, rp: np.ndarray, ob: np.ndarray, rb: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zeek rows with unset duration but known packet counts: duration 0, payload from IP bytes."""
    codes = _proto_codes(batch["proto"])
    w = np.array((dur, op, rp, ob, rb), dtype=np.float64)
    _zeek_fix(w, _ip_byte_cols(batch.cols), batch.cols, codes, _syn_only(batch.cols, codes == 1)[1])
    return w[_W_DUR], w[_W_OB], w[_W_RB]


def extract(batch: FlowBatch) -> np.ndarray:
    """Features for every row of ``batch``: float32 ``[n, F]`` in :data:`FEATURES` order."""
    cols = batch.cols
    n = len(batch)
    codes = _proto_codes(cols["proto"])
    fcode, syn_only = _syn_only(cols, codes == 1)
    w = _work(cols)
    ipb = _ip_byte_cols(cols)
    if batch.source in ZEEK_SOURCES:
        _zeek_fix(w, ipb, cols, codes, syn_only)
    _cap_payload(w, ipb, codes)
    # a TCP direction that sent SYN but never ACK carried no payload (estimates count the SYN's options)
    pay = w[_W_OB : _W_RB + 1]
    pay[syn_only & (pay == pay)] = 0.0

    m = np.empty((len(FEATURES), n), dtype=np.float64)  # one row per feature, transposed at the end
    port, rp = w[_W_PORT], w[_W_RP]
    with np.errstate(invalid="ignore"):
        port[cols["resp_p"] < 0] = _NAN
        pps = np.add(w[_W_OP], rp, out=w[_W_PPS])
        np.divide(pps, np.maximum(w[_W_DUR], DURATION_FLOOR), out=pps)  # NaN propagates from any input
        num, den = w.take(_DIV_NUM, axis=0), w.take(_DIV_DEN, axis=0)
        ratio = m[_DIV]
        ratio.fill(_NAN)  # NaN where the denominator is 0 or either side missing
        np.divide(num, den, out=ratio, where=np.isfinite(num) & np.isfinite(den) & (den > 0))
        for row, val, present in ((_NO_RESP, rp == 0, rp), (_WELL_KNOWN, port < 1024, port)):
            m[row] = val
            m[row][np.isnan(present)] = _NAN
        _PROTO_ONEHOT.take(codes, axis=1, out=m[_PROTO])
        # inputs are counts/durations (>= 0); clip guards a stray negative against -inf/NaN noise
        np.maximum(w, 0.0, out=w)
        w[np.isnan(w)] = _NAN  # one NaN bit pattern, whatever the input's
        np.log1p(w[: _W_RB + 1], out=m[_LOG_A])
        np.log1p(w[_W_PORT:], out=m[_LOG_B])

    flags = m[_FLAG]
    _FLAG_TAB.take((codes * _N_CODE + fcode[0]) * _N_CODE + fcode[1], axis=1, out=flags)
    if batch.extra:
        cic = [batch.extra.get(col) for col in _FLAG_CIC]
        if any(c is not None for c in cic):
            # CIC mapping: flag-count columns (both directions) where canonical flags are missing
            # and the protocol is not known to be other than TCP; an absent column counts as NaN
            nan_row = np.full(n, _NAN)
            cnt = np.array([nan_row if c is None else c for c in cic], dtype=np.float64)
            use = (fcode[0] == _MISSING) & (fcode[1] == _MISSING) & (codes < 2) & ~np.isnan(cnt)
            np.copyto(flags, cnt > 0, where=use)

    return m.T.astype(np.float32, order="C")


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
