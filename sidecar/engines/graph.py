"""Build a contract-conforming ONNX model graph from plain numpy arrays.

See docs/ARCHITECTURE.md "The model graph contract". ``onnx`` is imported inside
:func:`build_onnx` so runtime code never needs it.

``towers`` maps ``"s1"``/``"s2"`` to dicts with keys ``thermo_feat`` (int64[B]),
``thermo_thr`` (float32[B]), optional ``nan_feat`` (int64[M]), ``layers``
(list of ``(W int8[Bin, H], T int32[H])``) and ``heads`` (dict head name ->
``(W int8[H, k], b int32[k])``). ``s1`` has heads ``bin`` (k=1) and ``fam``
(k=K); ``s2`` has head ``s2`` (k=1) and, for a committee member, ``fam`` (k=K), whose
output is ``fam2_logits``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

OPSET = 17

_OUTPUTS = (
    ("s1", "bin", "bin_logit", True),
    ("s1", "fam", "fam_logits", False),
    ("s2", "s2", "stage2_logit", True),
    ("s2", "fam", "fam2_logits", False),  # only when tower s2 has a family head
)
_FAM_OUT = {"s1": "fam_logits", "s2": "fam2_logits"}


def build_onnx(towers: dict[str, Any], metadata: dict[str, str]) -> bytes:
    """Return the serialized ONNX model (opset 17) for ``towers``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits: list[Any] = []
    nodes: list[Any] = []

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr, name=name))
        return name

    n_features = 0
    k_fam = 0
    for tname in ("s1", "s2"):
        t = towers[tname]
        p = f"{tname}."
        feat = np.asarray(t["thermo_feat"], dtype=np.int64)
        thr = np.asarray(t["thermo_thr"], dtype=np.float32)
        n_features = max(n_features, int(feat.max()) + 1 if feat.size else 0)
        init(p + "thermo_feat", feat)
        init(p + "thermo_thr", thr)
        nodes.append(helper.make_node("Gather", ["x", p + "thermo_feat"], [p + "g"], axis=1))
        nodes.append(helper.make_node("Greater", [p + "g", p + "thermo_thr"], [p + "gt"]))
        bits_src = p + "gt"
        nan_feat = t.get("nan_feat")
        if nan_feat is not None and len(nan_feat):
            nf = np.asarray(nan_feat, dtype=np.int64)
            n_features = max(n_features, int(nf.max()) + 1)
            init(p + "nan_feat", nf)
            nodes.append(helper.make_node("Gather", ["x", p + "nan_feat"], [p + "gn"], axis=1))
            nodes.append(helper.make_node("IsNaN", [p + "gn"], [p + "isnan"]))
            nodes.append(helper.make_node("Concat", [p + "gt", p + "isnan"], [p + "bitsb"], axis=1))
            bits_src = p + "bitsb"
        nodes.append(helper.make_node("Cast", [bits_src], [p + "h_in"], to=TensorProto.UINT8))
        h = p + "h_in"
        for i, (w, thr_i) in enumerate(t["layers"]):
            wn = init(f"{p}W{i}", np.asarray(w, dtype=np.int8))
            tn = init(f"{p}T{i}", np.asarray(thr_i, dtype=np.int32))
            nodes.append(helper.make_node("MatMulInteger", [h, wn], [f"{p}acc{i}"]))
            nodes.append(helper.make_node("GreaterOrEqual", [f"{p}acc{i}", tn], [f"{p}ge{i}"]))
            nodes.append(helper.make_node("Cast", [f"{p}ge{i}"], [f"{p}h{i}"], to=TensorProto.UINT8))
            h = f"{p}h{i}"
        for head, (wh, bh) in t["heads"].items():
            wn = init(f"{p}W{head}", np.asarray(wh, dtype=np.int8))
            bn = init(f"{p}b{head}", np.asarray(bh, dtype=np.int32))
            nodes.append(helper.make_node("MatMulInteger", [h, wn], [f"{p}{head}_mm"]))
            add_out = _FAM_OUT[tname] if head == "fam" else f"{p}{head}_out"
            nodes.append(helper.make_node("Add", [f"{p}{head}_mm", bn], [add_out]))
            if head == "fam":
                k_fam = int(np.asarray(wh).shape[1])

    axes = init("squeeze_axes", np.array([1], dtype=np.int64))
    outputs = []
    for tname, head, out, squeeze in _OUTPUTS:
        if head not in towers[tname]["heads"]:
            continue
        src = f"{tname}.{head}_out"
        if squeeze:
            nodes.append(helper.make_node("Squeeze", [src, axes], [out]))
            outputs.append(helper.make_tensor_value_info(out, TensorProto.INT32, ["N"]))
        else:
            outputs.append(helper.make_tensor_value_info(out, TensorProto.INT32, ["N", k_fam]))

    n_feat_dim: Any = n_features
    if "bnn.features" in metadata:
        import json

        n_feat_dim = len(json.loads(metadata["bnn.features"]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_feat_dim])
    graph = helper.make_graph(nodes, "bnn", [x], outputs, initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bnn-sidecar"
    )
    model.ir_version = 8
    onnx.helper.set_model_props(model, dict(metadata))
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
