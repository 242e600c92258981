"""onnxruntime engine (lazy import; raises EngineUnavailable when missing).

Session: one intra-op and one inter-op thread (the sidecar scales by processes,
one per core), sequential execution, all graph optimisations.

Load-time layout rewrite (speed only, exact): onnxruntime's ``Gather`` along
axis 1 copies element by element and was over half the run time of the contract
graph at batch 1024. Each thermometer ``Gather(x, idx, axis=1)`` is therefore run
as ``Transpose(Gather(Transpose(x), idx, axis=0))`` — whole-row copies. This is
pure data movement, so the integer outputs are identical (the engine tests
compare them with the numpy engine bit for bit). The rewrite edits the model's
protobuf bytes in memory with the small wire-format helpers below (no ``onnx``
package needed at runtime); the file on disk and its sha256 are untouched, and if
the graph does not have the expected shape the model is loaded as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sidecar.engines.base import EngineOutput
from sidecar.errors import EngineUnavailable, ModelError

log = logging.getLogger(__name__)

OUTPUTS = ["bin_logit", "fam_logits", "stage2_logit"]

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


class OnnxEngine:
    name = "onnx"

    def __init__(self, path: str | Path, intra_op_threads: int = 1, rewrite: bool = True) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineUnavailable("onnxruntime is not installed; use the numpy engine") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            blob = Path(path).read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read ONNX model {path}: {exc}") from exc
        model = blob
        if rewrite:
            try:
                model, n = transpose_gathers(blob)
                log.debug("%s: %d thermometer gathers run as row gathers", path, n)
            except (ValueError, UnicodeDecodeError) as exc:
                log.debug("%s: layout rewrite skipped (%s)", path, exc)
                model = blob
        try:
            self._sess: Any = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            if model is blob:
                raise ModelError(f"cannot load ONNX model {path}: {exc}") from exc
            log.warning("%s: rewritten graph rejected (%s); loading it unchanged", path, exc)
            try:
                self._sess = ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
            except Exception as exc2:
                raise ModelError(f"cannot load ONNX model {path}: {exc2}") from exc2
        self._input = self._sess.get_inputs()[0].name

    def metadata(self) -> dict[str, str]:
        return dict(self._sess.get_modelmeta().custom_metadata_map)

    def run(self, x: np.ndarray) -> EngineOutput:
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.float32)
        b, f, s = self._sess.run(OUTPUTS, {self._input: x})
        if b.dtype != np.int32 or f.dtype != np.int32 or s.dtype != np.int32:
            b, f, s = (np.asarray(a, dtype=np.int32) for a in (b, f, s))
        return EngineOutput(bin_logit=b, fam_logits=f, stage2_logit=s)
