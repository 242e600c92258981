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


def _inits() -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(MODEL)).graph.initializer}


def test_stage2_is_a_committee_member() -> None:
    inits = _inits()
    s2 = sorted(k for k in inits if k.startswith("s2.W") and k[4:].isdigit())
    assert len(s2) == 2
    for k in s2:  # every stage-2 hidden layer is ±1 with integer thresholds, as in stage 1
        assert inits[k].dtype == np.int8 and set(np.unique(inits[k]).tolist()) <= {-1, 1}, k
        assert inits["s2.T" + k[4:]].dtype == np.int32
    # the same input code as stage 1, its own weights (another initialisation) and its own binary head
    for k in ("thermo_feat", "thermo_thr", "nan_feat"):
        assert np.array_equal(inits[f"s2.{k}"], inits[f"s1.{k}"]), k
    assert inits["s2.W0"].shape == inits["s1.W0"].shape and not np.array_equal(inits["s2.W0"], inits["s1.W0"])
    assert inits["s2.Ws2"].shape[1] == 1 and not np.array_equal(inits["s2.Ws2"], inits["s1.Wbin"])
    m = onnx.load(str(MODEL))
    props = {p.key: p.value for p in m.metadata_props}
    assert props["bnn.stage2"] == "committee"
    # the member's verdict is its own screen: same threshold and no offset
    assert float(props["bnn.threshold2"]) == float(props["bnn.threshold1"]) and float(props["bnn.s2_offset"]) == 0
    assert 0 < float(props["bnn.threshold1"]) < 1 and float(props["bnn.s2_scale"]) > 0
    metrics = json.loads(props["bnn.metrics"])
    assert 0 < metrics["fraction_to_stage2"] < 1
    # the member's family head (graph output fam2_logits): the same shape as stage 1's, its own weights,
    # and both scales in the metadata (the scorer names a flagged flow's family by both heads)
    assert inits["s2.Wfam"].dtype == np.int8 and inits["s2.Wfam"].shape == inits["s1.Wfam"].shape
    assert not np.array_equal(inits["s2.Wfam"], inits["s1.Wfam"]) and inits["s2.bfam"].dtype == np.int32
    assert [o.name for o in m.graph.output] == ["bin_logit", "fam_logits", "stage2_logit", "fam2_logits"]
    assert float(props["bnn.fam_scale"]) > 0 and float(props["bnn.s2_fam_scale"]) > 0
    assert metrics["family_accuracy"] >= 0.986  # held-out, the target (0.98603 for the shipped file)


def test_packed_weights_within_32_kb() -> None:
    from sidecar.engines.pack import load_pack

    p = load_pack(MODEL.parent / "bnn.bnnpack.npz")
    weights = sum(v.nbytes for k, v in p.items() if isinstance(v, np.ndarray) and k.startswith(("s1.", "s2.")))
    assert weights <= 32 * 1024, weights
    assert (MODEL.parent / "bnn.bnnpack.npz").stat().st_size <= 32 * 1024
    assert p["onnx_sha256"] == sha256_file(MODEL)


def test_pack_command_rebuilds_the_shipped_pack(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    from sidecar.engines.pack import load_pack

    for name in ("bnn.onnx", "bnn.onnx.sha256"):
        shutil.copy(MODEL.parent / name, tmp_path / name)
    r = subprocess.run([sys.executable, "-m", "sidecar.cli.main", "-q", "pack", str(tmp_path / "bnn.onnx")],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    new, old = load_pack(tmp_path / "bnn.bnnpack.npz"), load_pack(MODEL.parent / "bnn.bnnpack.npz")
    assert new.keys() == old.keys()
    for k, v in old.items():
        if isinstance(v, np.ndarray):
            assert np.array_equal(new[k], v), k
    (tmp_path / "bnn.onnx.sha256").write_text("0" * 64 + "  bnn.onnx\n")
    r = subprocess.run([sys.executable, "-m", "sidecar.cli.main", "-q", "pack", str(tmp_path / "bnn.onnx")],
                       capture_output=True, timeout=120)
    assert r.returncode == 1 and b"sha256" in r.stderr.lower()
