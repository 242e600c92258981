"""Minimal ONNX protobuf wire-format helpers (no ``onnx`` package at runtime).

Enough of the format to rewrite a model in memory: walk fields, read
initializers as numpy arrays, list nodes, prune a graph to the nodes some outputs
need, and encode new nodes, tensors, value infos and a small model. Field numbers
are those of ``onnx.proto3``. Anything unexpected raises ``ValueError``; callers
then fall back to the model as written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

# ONNX protobuf field numbers (onnx.proto3): ModelProto.graph, GraphProto.node,
# NodeProto.{input, output, name, op_type, attribute}, AttributeProto.{name, i, ints, type}
_MODEL_GRAPH, _GRAPH_NODE = 7, 1
_NODE_IN, _NODE_OUT, _NODE_NAME, _NODE_OP, _NODE_ATTR = 1, 2, 3, 4, 5
_ATTR_NAME, _ATTR_I, _ATTR_INTS, _ATTR_TYPE = 1, 3, 8, 20
_ATTR_INT, _ATTR_INTS_TYPE = 2, 7


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any, bytes]]:
    """(field number, wire type, value, raw bytes of the whole field) of one message."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _varint(buf, pos)
        wt = key & 7
        val: Any
        if wt == 0:
            val, pos = _varint(buf, pos)
        elif wt == 2:
            ln, pos = _varint(buf, pos)
            val = buf[pos : pos + ln]
            pos += ln
        elif wt in (1, 5):
            pos += 8 if wt == 1 else 4
            val = None
        else:
            raise ValueError(f"unsupported wire type {wt}")
        if pos > len(buf):
            raise ValueError("truncated field")
        yield key >> 3, wt, val, buf[start:pos]


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _enc_len(field: int, payload: bytes) -> bytes:
    return _enc_varint(field << 3 | 2) + _enc_varint(len(payload)) + payload


def _enc_int(field: int, v: int) -> bytes:
    return _enc_varint(field << 3) + _enc_varint(v & 0xFFFFFFFFFFFFFFFF)


def _node(op: str, inputs: list[str], outputs: list[str], name: str, attrs: bytes) -> bytes:
    body = b"".join(_enc_len(_NODE_IN, s.encode()) for s in inputs)
    body += b"".join(_enc_len(_NODE_OUT, s.encode()) for s in outputs)
    body += _enc_len(_NODE_NAME, name.encode()) + _enc_len(_NODE_OP, op.encode()) + attrs
    return _enc_len(_GRAPH_NODE, body)


def _int_attr(name: str, v: int) -> bytes:
    return _enc_len(_NODE_ATTR, _enc_len(_ATTR_NAME, name.encode()) + _enc_int(_ATTR_I, v) + _enc_int(_ATTR_TYPE, _ATTR_INT))


_PERM = _enc_len(
    _NODE_ATTR,
    _enc_len(_ATTR_NAME, b"perm") + _enc_int(_ATTR_INTS, 1) + _enc_int(_ATTR_INTS, 0) + _enc_int(_ATTR_TYPE, _ATTR_INTS_TYPE),
)


def _gather_axis1_of(node: bytes, x: str) -> tuple[str, str] | None:
    """(indices, output) if ``node`` is ``Gather(x, indices, axis=1)``, else None."""
    op = ""
    ins: list[str] = []
    outs: list[str] = []
    axis = 0
    for f, wt, v, _ in _fields(node):
        if f == _NODE_OP and wt == 2:
            op = v.decode()
        elif f == _NODE_IN and wt == 2:
            ins.append(v.decode())
        elif f == _NODE_OUT and wt == 2:
            outs.append(v.decode())
        elif f == _NODE_ATTR and wt == 2:
            attr = {af: av for af, awt, av, _ in _fields(v) if awt in (0, 2)}
            if attr.get(_ATTR_NAME) == b"axis" and _ATTR_I in attr:
                axis = attr[_ATTR_I]
    if op == "Gather" and len(ins) == 2 and ins[0] == x and len(outs) == 1 and axis in (1, (1 << 64) - 1):
        return ins[1], outs[0]
    return None


def transpose_gathers(model: bytes, x: str = "x") -> tuple[bytes, int]:
    """Rewrite every ``Gather(x, i, axis=1)`` (x rank 2) as row gathers; returns (model, count)."""
    out_model: list[bytes] = []
    count = 0
    for f, wt, v, raw in _fields(model):
        if f != _MODEL_GRAPH or wt != 2:
            out_model.append(raw)
            continue
        graph: list[bytes] = []
        for gf, gwt, gv, graw in _fields(v):
            hit = _gather_axis1_of(gv, x) if (gf == _GRAPH_NODE and gwt == 2) else None
            if hit is None:
                graph.append(graw)
                continue
            idx, out = hit
            xt = f"{x}__rows"
            if count == 0:
                graph.append(_node("Transpose", [x], [xt], "sidecar_transpose_x", _PERM))
            graph.append(_node("Gather", [xt, idx], [out + "__rows"], f"sidecar_gather_{count}", _int_attr("axis", 0)))
            graph.append(_node("Transpose", [out + "__rows"], [out], f"sidecar_transpose_{count}", _PERM))
            count += 1
        out_model.append(_enc_len(_MODEL_GRAPH, b"".join(graph)))
    return b"".join(out_model), count



# ModelProto / GraphProto / TensorProto / ValueInfoProto field numbers
_MODEL_IR, _MODEL_OPSET = 1, 8
_GRAPH_NAME, _GRAPH_INIT, _GRAPH_INPUT, _GRAPH_OUTPUT = 2, 5, 11, 12
_T_DIMS, _T_TYPE, _T_FLOAT, _T_INT32, _T_INT64, _T_NAME, _T_RAW, _T_EXTERNAL = 1, 2, 4, 5, 7, 8, 9, 13
#: ONNX TensorProto.DataType -> numpy dtype
DTYPES: dict[int, Any] = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_}
FLOAT, UINT8, INT8, INT32, INT64 = 1, 2, 3, 6, 7


def _ints(wt: int, v: Any) -> list[int]:
    """Varints of a repeated int field, packed (wire type 2) or one per field."""
    if wt == 0:
        vals = [v]
    else:
        vals, pos = [], 0
        while pos < len(v):
            x, pos = _varint(v, pos)
            vals.append(x)
    return [x - (1 << 64) if x >= 1 << 63 else x for x in vals]


def decode_tensor(buf: bytes) -> tuple[str, np.ndarray]:
    """A TensorProto → (name, array). Raw, int32/int64 and packed float data; no external data."""
    dims: list[int] = []
    dt, name = 0, ""
    raw: bytes | None = None
    ints: list[int] = []
    floats: bytes = b""
    for f, wt, v, _ in _fields(buf):
        if f == _T_DIMS:
            dims += _ints(wt, v)
        elif f == _T_TYPE and wt == 0:
            dt = v
        elif f == _T_NAME and wt == 2:
            name = v.decode()
        elif f == _T_RAW and wt == 2:
            raw = v
        elif f in (_T_INT32, _T_INT64):
            ints += _ints(wt, v)
        elif f == _T_FLOAT and wt == 2:
            floats += v
        elif f == _T_EXTERNAL:
            raise ValueError(f"tensor {name!r}: external data is not supported")
    if dt not in DTYPES:
        raise ValueError(f"tensor {name!r}: unsupported data type {dt}")
    dtype = np.dtype(DTYPES[dt])
    if raw is not None:
        arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)
    elif dt == FLOAT:
        arr = np.frombuffer(floats, dtype="<f4").astype(np.float32)
    else:
        arr = np.array(ints, dtype=np.int64).astype(dtype)
    n = int(np.prod(dims)) if dims else 1
    if arr.size != n:
        raise ValueError(f"tensor {name!r}: {arr.size} values for shape {dims}")
    return name, arr.reshape(dims)


def encode_tensor(name: str, arr: np.ndarray) -> bytes:
    """A numpy array → TensorProto bytes (raw little-endian data)."""
    code = {np.dtype(v): k for k, v in DTYPES.items()}[arr.dtype]
    body = b"".join(_enc_int(_T_DIMS, int(d)) for d in arr.shape) + _enc_int(_T_TYPE, code)
    le = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return body + _enc_len(_T_NAME, name.encode()) + _enc_len(_T_RAW, le.tobytes())


def value_info(name: str, elem: int, dims: list[int | str]) -> bytes:
    """A ValueInfoProto for a tensor of ONNX element type ``elem`` (str dims are symbolic)."""
    dim = b"".join(
        _enc_len(1, _enc_len(2, d.encode()) if isinstance(d, str) else _enc_int(1, d)) for d in dims
    )
    tensor = _enc_int(1, elem) + _enc_len(2, dim)
    return _enc_len(1, name.encode()) + _enc_len(2, _enc_len(1, tensor))


def _str_fields(buf: bytes, field: int) -> list[str]:
    return [v.decode() for f, wt, v, _ in _fields(buf) if f == field and wt == 2]


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    raw: bytes  # the NodeProto bytes (without the graph's field tag)


@dataclass
class Graph:
    """The parts of one model a rewrite needs; ``head``/``tail`` keep every other model field."""

    nodes: list[Node]
    inits: dict[str, bytes]  # name -> TensorProto bytes
    inputs: list[bytes]  # ValueInfoProto bytes
    outputs: dict[str, bytes]  # name -> ValueInfoProto bytes
    other: list[bytes]  # other graph fields, raw (name, value_info, ...)
    model_fields: list[bytes]  # raw ModelProto fields before the graph
    model_tail: list[bytes]  # raw ModelProto fields after the graph

    def init_array(self, name: str) -> np.ndarray:
        return decode_tensor(self.inits[name])[1]

    def consumer_of(self, op: str, input_name: str, pos: int) -> Node | None:
        return next((n for n in self.nodes if n.op == op and len(n.inputs) > pos and n.inputs[pos] == input_name), None)


def parse_model(model: bytes) -> Graph:
    g = Graph([], {}, [], {}, [], [], [])
    seen_graph = False
    for f, wt, v, raw in _fields(model):
        if f != _MODEL_GRAPH or wt != 2:
            (g.model_tail if seen_graph else g.model_fields).append(raw)
            continue
        seen_graph = True
        for gf, gwt, gv, graw in _fields(v):
            if gf == _GRAPH_NODE and gwt == 2:
                op = next((x.decode() for nf, nwt, x, _ in _fields(gv) if nf == _NODE_OP and nwt == 2), "")
                g.nodes.append(Node(op, _str_fields(gv, _NODE_IN), _str_fields(gv, _NODE_OUT), gv))
            elif gf == _GRAPH_INIT and gwt == 2:
                g.inits[_str_fields(gv, _T_NAME)[0]] = gv
            elif gf == _GRAPH_INPUT and gwt == 2:
                g.inputs.append(gv)
            elif gf == _GRAPH_OUTPUT and gwt == 2:
                g.outputs[_str_fields(gv, 1)[0]] = gv
            else:
                g.other.append(graw)
    if not seen_graph:
        raise ValueError("model has no graph")
    return g


def build_model(
    g: Graph, outputs: list[str], extra_outputs: dict[str, bytes], nodes: list[Node], inits: dict[str, bytes],
    inputs: list[bytes] | None = None,
) -> bytes:
    """``g`` (plus ``nodes``/``inits``) pruned to what ``outputs`` need, with those outputs.

    ``outputs`` names outputs of ``g`` or keys of ``extra_outputs`` (their ValueInfoProto).
    Graph ``value_info`` entries are dropped (shapes are re-inferred at load).
    """
    all_nodes = g.nodes + nodes
    all_inits = {**g.inits, **inits}
    need = set(outputs)
    keep: list[Node] = []
    for n in reversed(all_nodes):
        if need.intersection(n.outputs):
            keep.append(n)
            need.update(i for i in n.inputs if i)
    keep.reverse()
    body = [_enc_len(_GRAPH_NODE, n.raw) for n in _topo_sorted(keep)]
    body += [_enc_len(_GRAPH_INIT, t) for k, t in all_inits.items() if k in need]
    body += [_enc_len(_GRAPH_INPUT, i) for i in (g.inputs if inputs is None else inputs)]
    for o in outputs:
        vi = g.outputs.get(o) or extra_outputs.get(o)
        if vi is None:
            raise ValueError(f"no value info for output {o!r}")
        body.append(_enc_len(_GRAPH_OUTPUT, vi))
    names = [raw for raw in g.other if next(_fields(raw))[0] == _GRAPH_NAME]
    body += names or [_enc_len(_GRAPH_NAME, b"sidecar")]
    return b"".join(g.model_fields) + _enc_len(_MODEL_GRAPH, b"".join(body)) + b"".join(g.model_tail)


def _topo_sorted(nodes: list[Node]) -> list[Node]:
    """``nodes`` in an order where each node follows the producers of its inputs (stable; ONNX
    requires it). Inputs no node produces are graph inputs or initializers."""
    produced = {o for n in nodes for o in n.outputs}
    ready = {i for n in nodes for i in n.inputs if i not in produced}
    out: list[Node] = []
    todo = list(nodes)
    while todo:
        rest = [n for n in todo if not all(i in ready or not i for i in n.inputs)]
        if len(rest) == len(todo):
            raise ValueError("graph has a cycle")
        for n in todo:
            if n not in rest:
                out.append(n)
                ready.update(n.outputs)
        todo = rest
    return out


def make_node(op: str, inputs: list[str], outputs: list[str], name: str, attrs: bytes = b"") -> Node:
    raw = _node(op, inputs, outputs, name, attrs)
    _, _, body, _ = next(_fields(raw))
    return Node(op, inputs, outputs, body)
