"""The one canonical flow record, as a columnar batch.

Every source (Zeek conn.log TSV/JSON, Zeek WebSocket events, Suricata eve ``flow``
events, CICFlowMeter CSV, ZeroMQ batches) yields :class:`FlowBatch` objects whose
columns are exactly :data:`FIELDS`. Features, engines and sinks only ever see this.

Missing is not zero: a value the source did not have is ``NaN`` (float columns),
``-1`` (port / flag columns, which can never be negative) or ``None`` (string
columns). Never fill a missing value with 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sidecar.errors import SchemaError

# TCP flag bits used in ``orig_flags`` / ``resp_flags`` (same bit order as the TCP header).
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128
TCP_FLAG_BITS = {"F": FIN, "S": SYN, "R": RST, "P": PSH, "A": ACK, "U": URG, "E": ECE, "C": CWR}

F64 = np.dtype(np.float64)
I32 = np.dtype(np.int32)
I16 = np.dtype(np.int16)
OBJ = np.dtype(object)


@dataclass(frozen=True)
class Field:
    name: str
    dtype: np.dtype[Any]
    unit: str
    doc: str

    @property
    def missing(self) -> Any:
        if self.dtype == F64:
            return np.nan
        if self.dtype in (I32, I16):
            return -1
        return None


FIELDS: tuple[Field, ...] = (
    Field("ts", F64, "s (UNIX epoch)", "flow start time"),
    Field("uid", OBJ, "str", "Zeek uid, Suricata flow_id (decimal string) or a reader-made id"),
    Field("orig_h", OBJ, "str", "originator (client) IP address, textual"),
    Field("orig_p", I32, "port", "originator port; ICMP: type; -1 missing"),
    Field("resp_h", OBJ, "str", "responder (server) IP address, textual"),
    Field("resp_p", I32, "port", "responder port; ICMP: code; -1 missing"),
    Field("proto", OBJ, "str", "transport protocol, lower case: tcp, udp, icmp, icmp6, or the IANA number"),
    Field("service", OBJ, "str", "application protocol (Zeek service / eve app_proto), None if unknown"),
    Field("duration", F64, "s", "last packet time minus first packet time"),
    Field("orig_pkts", F64, "packets", "packets originator -> responder"),
    Field("resp_pkts", F64, "packets", "packets responder -> originator"),
    Field("orig_bytes", F64, "bytes", "transport PAYLOAD bytes originator -> responder"),
    Field("resp_bytes", F64, "bytes", "transport PAYLOAD bytes responder -> originator"),
    Field("orig_ip_bytes", F64, "bytes", "IP-layer bytes (headers + payload) originator -> responder"),
    Field("resp_ip_bytes", F64, "bytes", "IP-layer bytes (headers + payload) responder -> originator"),
    Field("conn_state", OBJ, "str", "Zeek conn_state vocabulary (S0, SF, REJ, ...); None if the source has none"),
    Field("history", OBJ, "str", "Zeek history string; None if the source has none"),
    Field("flow_state", OBJ, "str", "Suricata flow.state (new/established/closed/bypassed); None elsewhere"),
    Field("flow_reason", OBJ, "str", "Suricata flow.reason (timeout/forced/shutdown); None elsewhere"),
    Field("orig_flags", I16, "bitmask", "union of TCP flags sent by originator (FIN=1 SYN=2 RST=4 PSH=8 ACK=16 URG=32 ECE=64 CWR=128); -1 missing"),
    Field("resp_flags", I16, "bitmask", "union of TCP flags sent by responder; -1 missing"),
)
FIELD_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
COLUMN_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)

#: IP header bytes per packet for payload estimates from IP bytes (options and IPv6 extension
#: headers are not known and not subtracted)
IP_HDR, IP6_HDR = 20, 40


def ip_header_bytes(addr: object) -> int:
    """IP header bytes of an address's family: 40 for IPv6 text (it has a colon), else 20."""
    return IP6_HDR if isinstance(addr, str) and ":" in addr else IP_HDR


@dataclass
class FlowBatch:
    """A columnar batch of canonical flow records.

    ``cols`` has one numpy array per :data:`FIELDS` entry, all of length ``n``.
    ``source`` tags where the records came from (``zeek-tsv``, ``zeek-json``, ``eve``,
    ``cic-csv``, ``broker``, ``zmq``...). ``label`` holds ground-truth labels when the
    input carries them (labelled Zeek logs, CIC CSV), else ``None``. ``extra`` holds
    additional per-record numeric/object columns a source has beyond the canonical
    record (e.g. the full CICFlowMeter feature set); consumers must not rely on them
    for cross-source features. ``origin`` optionally holds "file:line" strings.
    """

    cols: dict[str, np.ndarray]
    source: str
    label: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    origin: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = None
        for f in FIELDS:
            if f.name not in self.cols:
                raise SchemaError(f"FlowBatch is missing column {f.name!r}")
            arr = self.cols[f.name]
            if arr.dtype != f.dtype:
                raise SchemaError(f"column {f.name!r} has dtype {arr.dtype}, want {f.dtype}")
            if n is None:
                n = len(arr)
            elif len(arr) != n:
                raise SchemaError(f"column {f.name!r} has {len(arr)} rows, want {n}")
        others: list[tuple[str, np.ndarray | None]] = [*self.extra.items(), ("label", self.label)]
        others.append(("origin", self.origin))
        for name, opt in others:
            if opt is not None and len(opt) != (n or 0):
                raise SchemaError(f"column {name!r} has {len(opt)} rows, want {n}")

    def __len__(self) -> int:
        return len(self.cols["ts"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]

    @classmethod
    def empty(cls, source: str = "") -> FlowBatch:
        return cls({f.name: np.empty(0, dtype=f.dtype) for f in FIELDS}, source)

    @classmethod
    def from_columns(
        cls,
        columns: Mapping[str, Sequence[Any] | np.ndarray],
        source: str,
        n: int | None = None,
        label: Sequence[Any] | np.ndarray | None = None,
        extra: dict[str, np.ndarray] | None = None,
        origin: Sequence[str] | np.ndarray | None = None,
    ) -> FlowBatch:
        """Build a batch from per-column lists; absent columns are all-missing.

        Python ``None`` in a numeric column becomes the field's missing value.
        """
        if n is None:
            n = len(next(iter(columns.values()))) if columns else 0
        cols: dict[str, np.ndarray] = {}
        for f in FIELDS:
            vals = columns.get(f.name)
            if vals is None:
                arr = np.full(n, f.missing, dtype=f.dtype)
            elif isinstance(vals, np.ndarray) and vals.dtype == f.dtype:
                arr = vals
            elif f.dtype == OBJ:
                arr = np.empty(len(vals), dtype=OBJ)
                arr[:] = list(vals)
            else:
                miss = f.missing
                arr = np.asarray([miss if v is None else v for v in vals], dtype=f.dtype)
            cols[f.name] = arr
        lab = None
        if label is not None:
            lab = np.empty(len(label), dtype=OBJ)
            lab[:] = list(label)
        org = None
        if origin is not None:
            org = np.empty(len(origin), dtype=OBJ)
            org[:] = list(origin)
        return cls(cols, source, lab, dict(extra or {}), org)

    def take(self, idx: np.ndarray) -> FlowBatch:
        """Rows selected by an index array or boolean mask."""
        return FlowBatch(
            {k: v[idx] for k, v in self.cols.items()},
            self.source,
            None if self.label is None else self.label[idx],
            {k: v[idx] for k, v in self.extra.items()},
            None if self.origin is None else self.origin[idx],
        )

    @staticmethod
    def concat(batches: Sequence[FlowBatch]) -> FlowBatch:
        """Concatenate batches. Labels/extras are kept only if every batch has them."""
        if not batches:
            return FlowBatch.empty()
        if len(batches) == 1:
            return batches[0]
        cols = {f.name: np.concatenate([b.cols[f.name] for b in batches]) for f in FIELDS}
        label = None
        if all(b.label is not None for b in batches):
            label = np.concatenate([b.label for b in batches if b.label is not None])
        origin = None
        if all(b.origin is not None for b in batches):
            origin = np.concatenate([b.origin for b in batches if b.origin is not None])
        common = set.intersection(*(set(b.extra) for b in batches))
        extra = {k: np.concatenate([b.extra[k] for b in batches]) for k in sorted(common)}
        sources = {b.source for b in batches}
        return FlowBatch(cols, sources.pop() if len(sources) == 1 else "mixed", label, extra, origin)

    def iter_rows(self, with_label: bool = True) -> Iterator[dict[str, Any]]:
        """Rows as JSON-ready dicts; missing values become ``None`` (JSON null)."""
        names = COLUMN_NAMES
        lists = [_to_json_list(self.cols[nm], FIELD_BY_NAME[nm]) for nm in names]
        labels = self.label.tolist() if (with_label and self.label is not None) else None
        for i in range(len(self)):
            row = {nm: col[i] for nm, col in zip(names, lists, strict=True)}
            row["source"] = self.source
            if labels is not None:
                row["label"] = labels[i]
            yield row


def _to_json_list(arr: np.ndarray, f: Field) -> list[Any]:
    if f.dtype == F64:
        out: list[Any] = arr.tolist()
        return [None if v != v else v for v in out]
    if f.dtype in (I32, I16):
        return [None if v < 0 else v for v in arr.tolist()]
    return arr.tolist()


def schema_table() -> str:
    """The canonical record as a Markdown table (used in docs and ``flows --schema``)."""
    lines = ["| field | type | unit | meaning |", "|---|---|---|---|"]
    for f in FIELDS:
        t = {F64: "float64 (NaN=missing)", I32: "int32 (-1=missing)", I16: "int16 (-1=missing)"}.get(
            f.dtype, "str (None=missing)"
        )
        lines.append(f"| `{f.name}` | {t} | {f.unit} | {f.doc} |")
    return "\n".join(lines)


def flags_from_letters(letters: Iterable[str]) -> int:
    """Union of TCP flag bits from letters like ``"SAF"`` (eve/CIC style)."""
    v = 0
    for ch in letters:
        v |= TCP_FLAG_BITS.get(ch.upper(), 0)
    return v
