"""ONNX engine vs numpy engine: bit-exact integer outputs on a random contract model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sidecar.engines.graph import build_onnx
from sidecar.engines.load import load_engine, pack_path_for, sha256_file, verify_sha256
from sidecar.engines.numpy_engine import NumpyEngine
from sidecar.engines.onnx_engine import OnnxEngine
from sidecar.engines.pack import load_pack, pack_onnx
from sidecar.errors import ChecksumError, ModelError
from sidecar.features.schema import FEATURE_NAMES, extract
from sidecar.sources import eve, zeek_tsv
from sidecar.sources.base import ReadStats

F = 20
K = 8
CUTS = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 53.0, 80.0, 100.0, 443.0, 1e3, 1e4, 1e5, 1e6, 1e8])


def _thermo(rng: np.random.Generator, per_feat: int) -> tuple[np.ndarray, np.ndarray]:
    feats, thrs = [], []
    for f in range(F):
        cuts = np.sort(rng.choice(CUTS, size=per_feat, replace=False))
        feats += [f] * per_feat
        thrs += list(cuts)
    return np.array(feats, dtype=np.int64), np.array(thrs, dtype=np.float32)


def _pm1(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)


def make_towers(seed: int = 1234) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    feat1, thr1 = _thermo(rng, 8)
    nan1 = np.arange(F, dtype=np.int64)
    b1 = len(feat1) + len(nan1)
    layers1 = [
        (_pm1(rng, (b1, 64)), rng.integers(-6, 7, 64).astype(np.int32)),
        (_pm1(rng, (64, 32)), rng.integers(-4, 5, 32).astype(np.int32)),
    ]
    heads1 = {
        "bin": (rng.integers(-3, 4, (32, 1)).astype(np.int8), rng.integers(-5, 6, 1).astype(np.int32)),
        "fam": (rng.integers(-3, 4, (32, K)).astype(np.int8), rng.integers(-5, 6, K).astype(np.int32)),
    }
    feat2, thr2 = _thermo(rng, 4)
    nan2 = np.arange(0, F, 2, dtype=np.int64)
    b2 = len(feat2) + len(nan2)
    # stage 2 deliberately not ±1 (zeros, ±2) to exercise the exact int-matmul path
    layers2 = [(rng.integers(-2, 3, (b2, 16)).astype(np.int8), rng.integers(-3, 4, 16).astype(np.int32))]
    heads2 = {"s2": (rng.integers(-3, 4, (16, 1)).astype(np.int8), rng.integers(-5, 6, 1).astype(np.int32))}
    return {
        "s1": {
            "thermo_feat": feat1,
            "thermo_thr": thr1,
            "nan_feat": nan1,
            "layers": layers1,
            "heads": heads1,
        },
        "s2": {
            "thermo_feat": feat2,
            "thermo_thr": thr2,
            "nan_feat": nan2,
            "layers": layers2,
            "heads": heads2,
        },
    }


METADATA = {
    "bnn.schema_version": "1",
    "bnn.features": json.dumps(list(FEATURE_NAMES)),
    "bnn.families": json.dumps(
        ["benign", "scan", "bruteforce", "dos", "ddos", "web", "infiltration", "botnet"]
    ),
    "bnn.bin_scale": "0.1",
    "bnn.bin_offset": "0.0",
    "bnn.s2_scale": "0.1",
    "bnn.s2_offset": "0.0",
    "bnn.threshold1": "0.5",
    "bnn.threshold2": "0.5",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("model")
    path = d / "model.onnx"
    path.write_bytes(build_onnx(make_towers(), METADATA))
    path.with_name("model.onnx.sha256").write_text(f"{sha256_file(path)}  model.onnx\n")
    pack_onnx(path, pack_path_for(path))
    return path


@pytest.fixture(scope="module")
def engines(model: Path) -> tuple[OnnxEngine, NumpyEngine]:
    return OnnxEngine(model), NumpyEngine(pack_path_for(model))


def _assert_same(engines: tuple[OnnxEngine, NumpyEngine], x: np.ndarray) -> None:
    a = engines[0].run(x)
    b = engines[1].run(x)
    np.testing.assert_array_equal(a.bin_logit, b.bin_logit)
    np.testing.assert_array_equal(a.fam_logits, b.fam_logits)
    np.testing.assert_array_equal(a.stage2_logit, b.stage2_logit)
    assert (a.fam2_logits is None) == (b.fam2_logits is None)
    if a.fam2_logits is not None:  # the committee member's family head
        np.testing.assert_array_equal(a.fam2_logits, b.fam2_logits)
    assert b.bin_logit.dtype == np.int32 and b.fam_logits.shape == (len(x), K)
    assert b.stage2_logit.shape == (len(x),)


def random_inputs(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, F)) * 10.0 ** rng.integers(0, 7, (n, F))).astype(np.float32)
    kind = rng.random((n, F))
    x[kind < 0.3] = rng.choice(CUTS, size=int((kind < 0.3).sum())).astype(np.float32)  # exact thresholds
    x[(kind >= 0.3) & (kind < 0.4)] = np.nan
    x[(kind >= 0.4) & (kind < 0.43)] = np.inf
    x[(kind >= 0.43) & (kind < 0.46)] = -np.inf
    return x


def test_random_inputs_bit_exact(engines: tuple[OnnxEngine, NumpyEngine]) -> None:
    x = random_inputs(120_000)
    _assert_same(engines, x)
    # outputs are not degenerate
    out = engines[1].run(x)
    assert len(np.unique(out.bin_logit)) > 3 and len(np.unique(out.stage2_logit)) > 3


def test_real_features_bit_exact(engines: tuple[OnnxEngine, NumpyEngine], shared: Path) -> None:
    sources = [
        (eve.read_path, shared / "suricata/eve/slips-test6-malicious.eve.json.gz"),
        (zeek_tsv.read_path, shared / "zeek/slips/ctu-sme-11.conn.log.labeled"),
    ]
    for read, path in sources:
        rows = 0
        for batch in read(path, ReadStats()):
            x = extract(batch)
            assert x.shape[1] == F
            _assert_same(engines, x)
            rows += len(x)
        assert rows > 0, path


def test_s1_hidden_weights_are_pm1(model: Path) -> None:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(model))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    hidden = [k for k in inits if k.startswith("s1.W") and k[4:].isdigit()]
    assert sorted(hidden) == ["s1.W0", "s1.W1"]
    for k in hidden:
        assert np.all(np.abs(inits[k]) == 1), k
    assert m.opset_import[0].version == 17
    ops = {n.op_type for n in m.graph.node}
    assert ops <= {
        "Gather",
        "Greater",
        "IsNaN",
        "Concat",
        "Cast",
        "MatMulInteger",
        "GreaterOrEqual",
        "Add",
        "Squeeze",
    }


def test_metadata_and_pack(model: Path, engines: tuple[OnnxEngine, NumpyEngine]) -> None:
    assert engines[0].metadata()["bnn.families"] == METADATA["bnn.families"]
    assert engines[1].metadata() == engines[0].metadata()
    p = load_pack(pack_path_for(model))
    assert p["onnx_sha256"] == sha256_file(model)
    assert bool(p["s1.W0.pm1"]) and bool(p["s1.W1.pm1"]) and not bool(p["s2.W0.pm1"])
    assert p["s1.W0.packed"].dtype == np.uint64


def test_load_engine_and_checksum(model: Path, tmp_path: Path) -> None:
    assert verify_sha256(model) == sha256_file(model)
    x = random_inputs(500, seed=3)
    a = load_engine(model, "onnx").run(x)
    b = load_engine(model, "numpy").run(x)
    np.testing.assert_array_equal(a.fam_logits, b.fam_logits)
    np.testing.assert_array_equal(a.fam2_logits, b.fam2_logits)  # type: ignore[arg-type]

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(model.read_bytes())
    bad.with_name("bad.onnx.sha256").write_text("0" * 64 + "  bad.onnx\n")
    with pytest.raises(ChecksumError, match="0000000000"):
        verify_sha256(bad)
    with pytest.raises(ChecksumError):
        load_engine(bad)
    missing = tmp_path / "nosum.onnx"
    missing.write_bytes(model.read_bytes())
    with pytest.raises(ModelError):
        verify_sha256(missing)


def test_numpy_engine_without_onnxruntime(model: Path) -> None:
    code = f"""
import sys
sys.modules['onnxruntime'] = None
sys.modules['onnx'] = None
import numpy as np
from sidecar.engines.load import load_engine
from sidecar.errors import EngineUnavailable
out = load_engine({str(model)!r}, "numpy").run(np.zeros((4, {F}), dtype=np.float32))
assert out.fam_logits.shape == (4, {K})
try:
    load_engine({str(model)!r}, "onnx")
except EngineUnavailable:
    print("OK")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OK"
