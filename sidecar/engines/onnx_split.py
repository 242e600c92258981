"""The contract graph split in memory for onnxruntime (no ``onnx`` package needed).

onnxruntime runs every node of a session's graph whatever outputs a call asks
for (measured: asking only for the stage-1 outputs of the shipped cascade takes as
long as asking for all three), so the split is done in the graph itself:

* ``stage1``: the nodes ``bin_logit`` and ``fam_logits`` need, which also returns the
  stage-1 levels the residual plan reads (thermometer bits, hidden layers; uint8);
* ``residual``: :class:`sidecar.engines.reuse.Residual` as ONNX nodes, reading ``x`` and
  those levels as inputs, returning ``stage2_logit`` (and ``fam2_logits`` when the file has it);
* ``full``: both in one graph (``run``): stage 1 + residual, outputs as in the file.

Everything is integer arithmetic on the same 0/1 values as the file's graph, so
the outputs are identical (tests compare them with the graph as written).
"""

from __future__ import annotations

import numpy as np

from sidecar.engines import proto
from sidecar.engines.proto import Graph, Node, make_node
from sidecar.engines.reuse import Residual, Source, pack_dict_from_inits, plan_residual

OUT_B, OUT_F, OUT_S, OUT_F2 = "bin_logit", "fam_logits", "stage2_logit", "fam2_logits"


def _int8(name: str, w: np.ndarray) -> np.ndarray:
    if w.size and (w.min() < -128 or w.max() > 127):
        raise ValueError(f"{name}: merged weights exceed int8")
    return w.astype(np.int8)


def s1_level_names(g: Graph, n_layers: int) -> list[str]:
    """Tensor names of stage 1's levels: the uint8 inputs of ``s1.W0 .. s1.W{L-1}``, then of ``s1.Wbin``."""
    names = []
    for k in range(n_layers + 1):
        w = f"s1.W{k}" if k < n_layers else "s1.Wbin"
        node = g.consumer_of("MatMulInteger", w, 1)
        if node is None:
            raise ValueError(f"no MatMulInteger reads {w}")
        names.append(node.inputs[0])
    return names


class _Builder:
    """New nodes and initializers, names prefixed with ``p``."""

    def __init__(self, p: str) -> None:
        self.p = p
        self.nodes: list[Node] = []
        self.inits: dict[str, bytes] = {}

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits[self.p + name] = proto.encode_tensor(self.p + name, arr)
        return self.p + name

    def node(self, op: str, ins: list[str], out: str, attrs: bytes = b"", raw_name: bool = False) -> str:
        out = out if raw_name else self.p + out
        self.nodes.append(make_node(op, ins, [out], f"{self.p}{op}_{len(self.nodes)}", attrs))
        return out

    def thermometer(self, x: str, feat: np.ndarray, thr: np.ndarray, nan: np.ndarray, tag: str,
                    out: str | None = None, x_t: str | None = None) -> str:  # fmt: skip
        """uint8 ``[N, B + M]``: ``x[:, feat] > thr`` then ``isnan(x[:, nan])``.

        With ``x_t`` (``x`` transposed) it is built from row gathers and compares, then one
        uint8 transpose: in onnxruntime a column gather or a float transpose costs several
        times more (measured at batch 1024). Without, it is the contract's own layout."""
        parts = []
        axis, src = (0, x_t) if x_t is not None else (1, x)
        if len(feat):
            g = self.node("Gather", [src, self.init(f"{tag}feat", feat)], f"{tag}g", proto._int_attr("axis", axis))
            t = self.init(f"{tag}thr", thr.reshape(-1, 1) if axis == 0 else thr)
            parts.append(self.node("Greater", [g, t], f"{tag}gt"))
        if len(nan):
            gn = self.node("Gather", [src, self.init(f"{tag}nan", nan)], f"{tag}gn", proto._int_attr("axis", axis))
            parts.append(self.node("IsNaN", [gn], f"{tag}isnan"))
        if len(parts) > 1:
            bits = self.node("Concat", parts, f"{tag}bits", proto._int_attr("axis", axis))
        else:
            bits = parts[0]
        name, raw = (out, True) if out is not None else (f"{tag}L0", False)
        if x_t is None:
            return self.node("Cast", [bits], name, proto._int_attr("to", proto.UINT8), raw_name=raw)
        u8 = self.node("Cast", [bits], f"{tag}bits_u8", proto._int_attr("to", proto.UINT8))
        return self.node("Transpose", [u8], name, proto._PERM, raw_name=raw)

    def transposed(self, x: str) -> str:
        return self.node("Transpose", [x], "x_t", proto._PERM)


def residual_nodes(res: Residual, src: dict[Source, str], bld: _Builder, x: str, x_t: str | None) -> None:
    """Add to ``bld`` the nodes computing ``stage2_logit`` from ``x`` (or its transpose ``x_t``)
    and the stage-1 levels named in ``src``."""
    src = dict(src)
    if res.n_bits():
        src[("r", 0)] = bld.thermometer(x, res.feat, res.thr, res.nan, "r", x_t=x_t)

    def acc(step_i: int, sources: list[tuple[Source, np.ndarray]]) -> str:
        names = [src[s] for s, _ in sources]
        w = np.concatenate([m for _, m in sources], axis=0)
        inp = bld.node("Concat", names, f"in{step_i}", proto._int_attr("axis", 1)) if len(names) > 1 else names[0]
        return bld.node("MatMulInteger", [inp, bld.init(f"W{step_i}", _int8(f"step {step_i}", w))], f"acc{step_i}")

    for d, st in enumerate(res.layers, start=1):
        assert st.thr is not None
        ge = bld.node("GreaterOrEqual", [acc(d, st.sources), bld.init(f"T{d}", st.thr.astype(np.int32))], f"ge{d}")
        src[("r", d)] = bld.node("Cast", [ge], f"L{d}", proto._int_attr("to", proto.UINT8))
    assert res.head.bias is not None
    out = bld.node("Add", [acc(0, res.head.sources), bld.init("b", res.head.bias.astype(np.int32))], "s2")
    axes = bld.init("axes", np.array([1], dtype=np.int64))
    k = len(res.head.bias)
    if k > 1:  # column 0 is stage2_logit, the rest the member's family logits

        def cols(lo: int, hi: int, name: str, raw: bool) -> str:
            se = [bld.init(f"{name}_{v}", np.array([v], dtype=np.int64)) for v in (lo, hi)]
            return bld.node("Slice", [out, *se, axes], name, raw_name=raw)

        cols(1, k, OUT_F2, True)
        out = cols(0, 1, "s2b", False)
    bld.node("Squeeze", [out, axes], OUT_S, raw_name=True)


class Split:
    """The three in-memory models (see module docstring); ``ValueError`` when the file does not fit.

    ``rows``: build the thermometers from row gathers of ``x`` transposed (the layout rewrite,
    faster); else with the contract's column gathers."""

    def __init__(self, model: bytes, rows: bool = True) -> None:
        g = proto.parse_model(model)
        if list(g.outputs) not in ([OUT_B, OUT_F, OUT_S], [OUT_B, OUT_F, OUT_S, OUT_F2]):
            raise ValueError(f"unexpected outputs {list(g.outputs)}")
        #: the residual's outputs: stage2_logit, and fam2_logits when the file has it
        self.s2_outputs = [o for o in (OUT_S, OUT_F2) if o in g.outputs]
        inits = {k: g.init_array(k) for k in g.inits if k.startswith(("s1.", "s2."))}
        p = pack_dict_from_inits(inits)
        res = plan_residual(p)
        self.residual = res
        levels = s1_level_names(g, int(p["s1.n_layers"]))
        x = proto._str_fields(g.inputs[0], 1)[0] if g.inputs else "x"
        self.input = x
        width = res.s1_widths
        lvl_vi = {levels[k]: proto.value_info(levels[k], proto.UINT8, ["N", width[k]]) for k in res.s1_levels}

        def stage1_thermo(bld: _Builder) -> str | None:
            """Stage 1's level 0 rebuilt by ``bld`` (same bits, same order); returns x transposed."""
            x_t = bld.transposed(x) if rows else None
            bld.thermometer(x, p["s1.thermo_feat"], p["s1.thermo_thr"], p["s1.nan_feat"], "s1", levels[0], x_t)
            return x_t

        b1 = _Builder("sidecar_s1.")
        stage1_thermo(b1)
        self.stage1 = build_model(g, [OUT_B, OUT_F, *(levels[k] for k in res.s1_levels)], lvl_vi, b1, {levels[0]})
        # full: stage 1, and the residual reading stage 1's level tensors inside the same graph
        bf = _Builder("sidecar_f.")
        x_t = stage1_thermo(bf)
        residual_nodes(res, {("s1", k): levels[k] for k in res.s1_levels}, bf, x, x_t)
        self.full = build_model(g, [OUT_B, OUT_F, *self.s2_outputs], {}, bf, {levels[0], *self.s2_outputs})
        # residual alone: x and the levels are inputs
        self.level_inputs = [f"s1_L{k}" for k in res.s1_levels]
        br = _Builder("sidecar_r.")
        residual_nodes(res, dict(zip([("s1", k) for k in res.s1_levels], self.level_inputs, strict=True)), br, x,
                       br.transposed(x) if rows else None)  # fmt: skip
        ins = g.inputs[:1] + [proto.value_info(f"s1_L{k}", proto.UINT8, ["N", width[k]]) for k in res.s1_levels]
        empty = Graph([], {}, [], {o: g.outputs[o] for o in self.s2_outputs}, [], g.model_fields, g.model_tail)
        self.residual_model = proto.build_model(empty, self.s2_outputs, {}, br.nodes, br.inits, ins)


def build_model(g: Graph, outputs: list[str], extra: dict[str, bytes], bld: _Builder, replaced: set[str]) -> bytes:
    """:func:`proto.build_model` of the file's graph without the nodes that produce ``replaced``
    tensors (``bld`` produces them now), plus ``bld``'s nodes."""
    g = Graph([n for n in g.nodes if not replaced.intersection(n.outputs)], g.inits, g.inputs, g.outputs,
              g.other, g.model_fields, g.model_tail)  # fmt: skip
    return proto.build_model(g, outputs, extra, bld.nodes, bld.inits)
