"""The msgspec path for ``BNN::Flow`` messages: :func:`decode_message`.

Parses a whole ``BNN::flow`` / ``BNN::flows`` message straight into typed structs that mirror
:data:`sidecar.sources.broker_flow_ref.FLOW_LAYOUT`, so tags, types, arities and count ranges are
checked in C, then reads the columns off the structs. ``_FLOW_DECODER`` is None without msgspec.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

from sidecar.sources.broker_flow_fast import _span, _timestamps, _Unexpected, _via
from sidecar.sources.broker_flow_ref import _ADDRS, _PORTS, AMOUNTS, FLOW_LAYOUT, _address, _port
from sidecar.sources.zeek_tsv import MAX_COUNT, MAX_DURATION, flags_from_history

# --- the msgspec path: typed parse of a whole BNN::flow(s) message --------------------------
# Slotted, untracked structs parse ~3x faster than orjson builds dicts. A message this path
# does not take goes the orjson way, so results never depend on msgspec being installed.

try:
    import msgspec as _msgspec
except ImportError:  # pragma: no cover - exercised where msgspec is absent
    _msgspec = None  # type: ignore[assignment]

_FLOW_DECODER: Any = None
_FLOWS_DECODER: Any = None
_UNSET: Any = None
if _msgspec is not None:
    from typing import Annotated, Literal

    _UNSET = _msgspec.UNSET
    _Count = Annotated[int, _msgspec.Meta(ge=0, le=int(MAX_COUNT))]
    _Empty = Annotated[dict[str, Any], _msgspec.Meta(max_length=0)]

    def _tagged_struct(tag: str, data: Any = None) -> Any:
        """The struct of a Broker value with this ``@data-type`` (``data`` None: no data field)."""
        fields = [] if data is None else [("data", data)]
        return _msgspec.defstruct("_B", fields, tag_field="@data-type", tag=tag, gc=False)

    _Never = _tagged_struct("\x00never")  # a one-type union still demands the tag
    _Str, _Enum = _tagged_struct("string", str), _tagged_struct("enum-value", str)
    _Ts, _Span = _tagged_struct("timestamp", str), _tagged_struct("timespan", str)
    _Addr, _Port = _tagged_struct("address", str), _tagged_struct("port", str)
    _Cnt, _NoneV = _tagged_struct("count", _Count), _tagged_struct("none", _Empty)
    _One = _tagged_struct("count", Literal[1])
    _Name = _tagged_struct("string", Literal["BNN::flow", "BNN::flows"])
    # array_like structs ignore trailing items: a last ``more`` field catches one (-> decline)
    _Cid = _msgspec.defstruct("_Cid", [("oh", _Addr | _Never), ("op", _Port | _Never), ("rh", _Addr | _Never),
                                       ("rp", _Port | _Never)], array_like=True, gc=False)
    _FlowRec = _msgspec.defstruct("_FlowRec", [
        ("ts", _Ts | _Never), ("uid", _Str | _Never), ("id", _tagged_struct("vector", _Cid) | _Never),
        ("proto", _Enum | _Never), ("service", _Str | _NoneV), ("duration", _Span | _NoneV),
        *((c, _Cnt | _NoneV) for c in ("orig_bytes", "resp_bytes")), ("conn_state", _Str | _NoneV),
        ("history", _Str | _NoneV), *((c, _Cnt | _NoneV) for c in ("orig_pkts", "orig_ip_bytes", "resp_pkts",
                                                                   "resp_ip_bytes")),
        ("more", Any, _UNSET)], array_like=True, gc=False)
    _FlowV = _tagged_struct("vector", _FlowRec)

    def _message(args: Any) -> Any:
        body = _msgspec.defstruct("_Body", [("name", _Name | _Never), ("args", args), ("meta", Any, _UNSET),
                                            ("more", Any, _UNSET)], array_like=True, gc=False)
        frame = _msgspec.defstruct("_Frame", [("fmt", _One | _Never), ("kind", _One | _Never),
                                              ("body", _tagged_struct("vector", body) | _Never),
                                              ("more", Any, _UNSET)], array_like=True, gc=False)
        return _msgspec.defstruct("_FlowMsg", [("type", Literal["data-message"]), ("topic", str),
                                               ("t", Literal["vector"], _msgspec.field(name="@data-type")),
                                               ("data", frame)], gc=False)

    def _one(item: Any) -> Any:
        return _tagged_struct("vector", _msgspec.defstruct("_Args", [("arg", item), ("more", Any, _UNSET)],
                                                           array_like=True, gc=False)) | _Never

    _FLOW_DECODER = _msgspec.json.Decoder(_message(_one(_FlowV | _Never)))
    _FLOWS_DECODER = _msgspec.json.Decoder(_message(_one(_tagged_struct("vector", list[_FlowV | _Never]) | _Never)))  # type: ignore[valid-type]

_G = {name: attrgetter(f"{name}.data") for name, _, _ in FLOW_LAYOUT if name != "id"}
_CID = attrgetter("id.data")
_G.update({c: attrgetter(f"{f}.data") for c, f in (("orig_h", "oh"), ("orig_p", "op"), ("resp_h", "rh"), ("resp_p", "rp"))})
_MORE = attrgetter("more")


def _nulls(vals: list[Any]) -> list[Any]:
    """An optional column read off the structs: ``none``'s ``{}`` -> None."""
    return [None if type(v) is dict else v for v in vals] if dict in set(map(type, vals)) else vals


def decode_message(raw: str | bytes) -> tuple[str, int, dict[str, list[Any]]] | None:
    """A whole ``BNN::flow`` / ``BNN::flows`` message of plain records -> (topic, number of
    records, columns), the same as the orjson path gives; None for anything else (no
    msgspec, another message, a record off the plain shape...): the caller then parses
    with orjson. Never raises."""
    if _FLOW_DECODER is None:
        return None
    try:
        flows = (b"BNN::flows" in raw) if isinstance(raw, bytes) else ("BNN::flows" in raw)
        msg = (_FLOWS_DECODER if flows else _FLOW_DECODER).decode(raw)
        body = msg.data.body.data
        args = body.args.data
        if msg.data.more is not _UNSET or body.more is not _UNSET or args.more is not _UNSET:
            return None
        if body.name.data != ("BNN::flows" if flows else "BNN::flow"):
            return None
        recs = [r.data for r in args.arg.data] if flows else [args.arg.data]
        if not recs or set(map(_MORE, recs)) != {_UNSET}:
            return None
        return msg.topic, len(recs), _struct_columns(recs)
    except Exception:  # any surprise: the orjson path decides
        return None


def _struct_columns(recs: list[Any]) -> dict[str, list[Any]]:
    g = _G
    out: dict[str, list[Any]] = {"ts": _timestamps(list(map(g["ts"], recs))), "uid": list(map(g["uid"], recs))}
    cids = list(map(_CID, recs))
    for c, fn, cache in (("orig_h", _address, _ADDRS), ("orig_p", _port, _PORTS), ("resp_h", _address, _ADDRS),
                         ("resp_p", _port, _PORTS)):
        out[c] = _via(cache, fn, list(map(g[c], cids)))
    protos = out["proto"] = list(map(str.lower, map(g["proto"], recs)))
    for c in ("service", "conn_state", "history", *AMOUNTS):
        out[c] = _nulls(list(map(g[c], recs)))
    spans = _nulls(list(map(g["duration"], recs)))
    if str in set(map(type, spans)):
        vals = [d for d in spans if d is not None]
        secs = list(map(_span, vals))
        if not 0 <= min(secs) <= max(secs) <= MAX_DURATION:
            raise _Unexpected
        it = iter(secs)
        spans = [None if d is None else next(it) for d in spans]
    out["duration"] = spans
    flags = list(map(flags_from_history, out["history"], protos))
    out["orig_flags"], out["resp_flags"] = (list(c) for c in zip(*flags, strict=True))
    return out
