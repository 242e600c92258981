"""The shipped model really is a BNN and carries its metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from sidecar.engines.load import sha256_file
from sidecar.features.labels import FAMILIES
from sidecar.features.schema import FEATURE_NAMES

MODEL = Path(__file__).resolve().parent.parent / "sidecar" / "data" / "model" / "bnn.onnx"


def test_hidden_weights_are_plus_minus_one_and_thresholds_integer() -> None:
    m = onnx.load(str(MODEL))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    hidden = [k for k in inits if k.startswith("s1.W") and k[4:].isdigit()]
    assert len(hidden) >= 2
    for k in hidden:
        w = inits[k]
        assert w.dtype == np.int8 and set(np.unique(w).tolist()) <= {-1, 1}, k
        assert inits["s1.T" + k[4:]].dtype == np.int32
    assert m.opset_import[0].version >= 17


def test_metadata_round_trips() -> None:
    m = onnx.load(str(MODEL))
    props = {p.key: p.value for p in m.metadata_props}
    assert tuple(json.loads(props["bnn.features"])) == FEATURE_NAMES
    assert tuple(json.loads(props["bnn.families"])) == FAMILIES
    metrics = json.loads(props["bnn.metrics"])
    assert 0 < metrics["accuracy"] <= 1
    assert (MODEL.parent / "bnn.onnx.sha256").read_text().split()[0] == sha256_file(MODEL)
