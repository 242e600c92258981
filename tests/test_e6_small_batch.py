"""Issue #5, numpy engine at batch 1..N: the small-batch path (sidecar/engines/numpy_small.py)
must give exactly the integers of the large-batch path (and of onnxruntime) for every row.

Reference: the same pack through the large-batch path only (``small_rows=0``), on whole
batches; onnxruntime running the model graph as written agrees with it on the same rows.
Rows: real records (bundled samples + the shared real fixtures the engine tests use), and
generated rows sitting exactly on, just above and just below every thermometer threshold
(plus NaN, +-inf, -0.0): fuzz only. Every batch size n = 1..16 runs over every n-row window.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import run_threads
from feature_rows import sample_rows

from sidecar.engines import numpy_small
from sidecar.engines.base import EngineOutput
from sidecar.engines.load import pack_path_for
from sidecar.engines.numpy_engine import SMALL_ROWS, NumpyEngine
from sidecar.engines.pack import load_pack
from sidecar.features.schema import FEATURE_NAMES
from sidecar.scorer import make_scorer
from sidecar.sources import eve, zeek_tsv

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "sidecar" / "data" / "model" / "bnn.onnx"
PACK = pack_path_for(MODEL)
SAMPLES = REPO / "sidecar" / "data" / "samples"
F = len(FEATURE_NAMES)
SIZES = list(range(1, 17))


def _real_rows(shared: Path) -> np.ndarray:
    parts = sample_rows(
        [
            (eve.read_path, shared / "suricata/eve/slips-test6-malicious.eve.json.gz"),
            (zeek_tsv.read_path, shared / "zeek/slips/ctu-sme-11.conn.log.labeled"),
        ]
    )
    x = np.concatenate(parts)
    assert len(x) >= 1000 and x.shape[1] == F
    return np.ascontiguousarray(x, dtype=np.float32)


def edge_rows(pack: dict[str, Any], n: int, seed: int = 11) -> np.ndarray:
    """Generated rows whose features sit on / one ulp above / one ulp below the model's thresholds."""
    rng = np.random.default_rng(seed)
    per_feat: list[list[Any]] = [[0.0, -0.0, np.nan, np.inf, -np.inf] for _ in range(F)]
    for t in ("s1", "s2"):
        for f, thr in zip(pack[f"{t}.thermo_feat"], pack[f"{t}.thermo_thr"], strict=True):
            v = np.float32(thr)
            per_feat[int(f)] += [v, np.nextafter(v, np.float32(np.inf)), np.nextafter(v, np.float32(-np.inf))]
    x = np.empty((n, F), dtype=np.float32)
    for f, vals in enumerate(per_feat):
        x[:, f] = rng.choice(np.array(vals, dtype=np.float32), size=n)
    return x


@pytest.fixture(scope="module")
def rows(shared: Path) -> np.ndarray:
    real = _real_rows(shared)
    return np.concatenate([real[:4000], edge_rows(load_pack(PACK), 2000)])


@pytest.fixture(scope="module")
def big() -> NumpyEngine:
    eng = NumpyEngine(PACK, small_rows=0)
    assert eng._small is None
    return eng


@pytest.fixture(scope="module")
def small() -> NumpyEngine:
    eng = NumpyEngine(PACK)
    assert eng._small is not None and eng._small.max_rows == SMALL_ROWS >= 16
    return eng


@pytest.fixture(scope="module")
def screen() -> Any:
    return make_scorer(MODEL, "numpy").screen


def _windows(eng: NumpyEngine, x: np.ndarray, n: int, screen: Any = None) -> EngineOutput:
    """Every n-row window of ``x`` through ``eng`` (run, or run_cascade with ``screen``), concatenated."""
    outs = [eng.run(x[lo : lo + n]) if screen is None else eng.run_cascade(x[lo : lo + n], screen)
            for lo in range(0, len(x), n)]  # fmt: skip
    for o in outs:
        assert o.bin_logit.dtype == o.fam_logits.dtype == o.stage2_logit.dtype == np.int32
        assert o.bin_logit.shape == o.stage2_logit.shape == (o.fam_logits.shape[0],)
    keys = ("bin_logit", "fam_logits", "stage2_logit") + (("fam2_logits",) if outs[0].fam2_logits is not None else ())
    return EngineOutput(*(np.concatenate([getattr(o, k) for o in outs]) for k in keys))


def _same(a: EngineOutput, b: EngineOutput, mask: np.ndarray | None = None) -> bool:
    if not (np.array_equal(a.bin_logit, b.bin_logit) and np.array_equal(a.fam_logits, b.fam_logits)):
        return False
    pairs = [(a.stage2_logit, b.stage2_logit)]
    if a.fam2_logits is not None or b.fam2_logits is not None:  # the member's family head, rows as stage 2's
        if a.fam2_logits is None or b.fam2_logits is None:
            return False
        pairs.append((a.fam2_logits, b.fam2_logits))
    if mask is None:
        return all(np.array_equal(p, q) for p, q in pairs)
    return all(np.array_equal(p[mask], q[mask]) and not p[~mask].any() for p, q in pairs)


def test_reference_agrees_with_onnxruntime(rows: np.ndarray, big: NumpyEngine) -> None:
    pytest.importorskip("onnxruntime")
    from sidecar.engines.onnx_engine import OnnxEngine

    assert _same(OnnxEngine(MODEL, rewrite=False, split=False, tiny=False).run(rows), big.run(rows))


@pytest.mark.parametrize("n", SIZES)
def test_small_path_exact_every_window(
    rows: np.ndarray, big: NumpyEngine, small: NumpyEngine, screen: Any, n: int
) -> None:
    want = big.run(rows)
    flagged = screen(want.bin_logit)
    assert 0 < flagged.sum() < len(rows)  # both cascade branches are exercised
    assert _same(_windows(small, rows, n), want), n
    assert _same(_windows(small, rows, n, screen), want, flagged), n


def test_small_path_is_taken_up_to_small_rows(rows: np.ndarray, big: NumpyEngine, small: NumpyEngine) -> None:
    plan = small._small
    assert plan is not None
    seen: list[int] = []
    orig = plan.run

    def spy(x: np.ndarray, screen: Any = None) -> EngineOutput:
        seen.append(len(x))
        return orig(x, screen)

    plan.run = spy  # type: ignore[method-assign]
    try:
        for n in (1, 2, 17, SMALL_ROWS, SMALL_ROWS + 1, 1000):
            assert _same(small.run(rows[:n]), big.run(rows[:n])), n
    finally:
        del plan.run
    assert seen == [1, 2, 17, SMALL_ROWS]
    # the shipped model's ±1 layers really are popcount layers on this path
    assert [is_pm1 for is_pm1, *_ in plan.s1] == [True, True]


def test_lookup_table_popcount_exact(
    rows: np.ndarray, big: NumpyEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``np.bitwise_count`` (numpy < 2) the path packs bytes and counts with a table."""
    monkeypatch.setattr(numpy_small, "_BITCOUNT", None)
    eng = NumpyEngine(PACK)
    assert eng._small is not None and all(w.dtype == np.uint8 for _, _, w, *_ in eng._small.s1)
    x = rows[::3]
    want = big.run(x)
    for n in (1, 2, 5, 16):
        assert _same(_windows(eng, x, n), want), n


def test_inputs_other_dtypes_and_layouts(rows: np.ndarray, big: NumpyEngine, small: NumpyEngine) -> None:
    x = rows[:64]
    want = big.run(x)
    for n in (1, 3, 8):
        for lo in range(0, 64, n):
            xb = x[lo : lo + n]
            sl = slice(lo, lo + n)
            ref = EngineOutput(want.bin_logit[sl], want.fam_logits[sl], want.stage2_logit[sl],
                               None if want.fam2_logits is None else want.fam2_logits[sl])
            for v in (xb.astype(np.float64), np.asfortranarray(xb)):
                assert _same(small.run(v), ref), (n, lo)
            strided = rows[2 * lo : 2 * lo + 2 * n : 2]  # every other row: not C-contiguous
            assert not strided.flags.c_contiguous or n == 1
            assert _same(small.run(strided), big.run(strided)), (n, lo)


def test_outputs_owned_and_threads(rows: np.ndarray, big: NumpyEngine, small: NumpyEngine) -> None:
    first = small.run(rows[:1])
    keep = [a.copy() for a in (first.bin_logit, first.fam_logits, first.stage2_logit)]
    want = big.run(rows[:400])
    errors: list[int] = []

    def work(off: int) -> None:
        for i in range(off, 400, 2):
            if not _same(small.run(rows[i : i + 1]), big.run(rows[i : i + 1])):
                errors.append(i)

    assert run_threads(work) and not errors
    now = (first.bin_logit, first.fam_logits, first.stage2_logit)
    assert all(np.array_equal(a, b) for a, b in zip(keep, now, strict=True))
    assert np.array_equal(want.bin_logit[:1], keep[0])


def test_model_outside_the_path_falls_back(
    rows: np.ndarray, big: NumpyEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(numpy_small, "TABLE_MAX", 10)
    with caplog.at_level(logging.WARNING, logger="sidecar.engines.numpy_engine"):
        eng = NumpyEngine(PACK)
    assert eng._small is None and "no small-batch path" in caplog.text
    assert _same(_windows(eng, rows[:200], 3), big.run(rows[:200]))


def _towers(seed: int) -> dict[str, Any]:
    """A contract model unlike the shipped one: a 5-word ±1 layer (int16 sums), an integer
    (non-±1) hidden layer in stage 1, a stage 2 that shares and adds thermometer bits."""
    rng = np.random.default_rng(seed)
    cuts = np.array([-1.0, 0.0, 0.5, 1.0, 3.0, 10.0, 80.0, 443.0, 1e3, 1e5, 1e8], dtype=np.float32)
    feat1 = np.repeat(np.arange(F), 6)
    thr1 = np.concatenate([np.sort(rng.choice(cuts, 6, replace=False)) for _ in range(F)]).astype(np.float32)
    b1 = len(feat1) + F

    def pm1(shape: tuple[int, int]) -> np.ndarray:
        return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)

    def thr(k: int, s: int) -> np.ndarray:
        return rng.integers(-s, s + 1, k).astype(np.int32)

    s1 = {"thermo_feat": feat1, "thermo_thr": thr1, "nan_feat": np.arange(F),
          "layers": [(pm1((b1, 300)), thr(300, 8)), (pm1((300, 40)), thr(40, 6)),
                     (rng.integers(-2, 3, (40, 24)).astype(np.int8), thr(24, 3))],
          "heads": {"bin": (rng.integers(-3, 4, (24, 1)).astype(np.int8), thr(1, 5)),
                    "fam": (rng.integers(-3, 4, (24, 8)).astype(np.int8), thr(8, 5))}}  # fmt: skip
    keep = rng.random(len(feat1)) < 0.5  # stage 2: half of stage 1's bits and some of its own
    feat2 = np.concatenate([feat1[keep], rng.integers(0, F, 30)])
    thr2 = np.concatenate([thr1[keep], rng.choice(cuts, 30) + np.float32(0.25)]).astype(np.float32)
    b2 = len(feat2) + F // 2
    s2 = {"thermo_feat": feat2, "thermo_thr": thr2, "nan_feat": np.arange(0, F, 2),
          "layers": [(pm1((b2, 64)), thr(64, 6)),
                     (rng.integers(-2, 3, (64, 16)).astype(np.int8), thr(16, 3))],
          "heads": {"s2": (rng.integers(-3, 4, (16, 1)).astype(np.int8), thr(1, 5))}}  # fmt: skip
    return {"s1": s1, "s2": s2}


def test_other_model_shapes_exact(tmp_path: Path, rows: np.ndarray) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from sidecar.engines.graph import build_onnx
    from sidecar.engines.onnx_engine import OnnxEngine
    from sidecar.engines.pack import pack_onnx

    meta = {"bnn.features": json.dumps(list(FEATURE_NAMES))}
    path = tmp_path / "m.onnx"
    path.write_bytes(build_onnx(_towers(3), meta))
    pack_onnx(path, pack_path_for(path))
    eng = NumpyEngine(pack_path_for(path))
    plan = eng._small
    assert plan is not None
    kinds = [(is_pm1, t.dtype) for is_pm1, _, _, t, *_ in plan.s1]
    assert kinds == [(True, np.uint8), (True, np.int16), (False, np.float32)]  # every stage-1 branch
    ref = OnnxEngine(path, rewrite=False, split=False, tiny=False)
    x = np.concatenate([rows[::4], edge_rows(load_pack(pack_path_for(path)), 500, seed=5)])
    want = ref.run(x)
    assert len(np.unique(want.bin_logit)) > 3 and len(np.unique(want.stage2_logit)) > 3
    for n in (1, 2, 3, 7, 16):
        assert _same(_windows(eng, x, n), want), n


def test_small_path_without_onnxruntime() -> None:
    """Pi Zero / armv7 boxes have no onnxruntime wheel: the small path must not need it (nor onnx)."""
    code = f"""
import sys
sys.modules['onnxruntime'] = None
sys.modules['onnx'] = None
import numpy as np
from sidecar.engines.load import load_engine
from sidecar.engines.numpy_engine import NumpyEngine
from sidecar.features.schema import extract
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path
eng = load_engine({str(MODEL)!r}, "numpy")
assert eng._small is not None
src = {str(SAMPLES / "ctu-sme-11.conn.log.labeled.gz")!r}
x = np.concatenate([extract(b) for b in read_path(src, "auto", ReadStats())])
want = NumpyEngine({str(PACK)!r}, small_rows=0).run(x)
for n in range(1, 17):
    for lo in range(0, min(len(x), 300), n):
        o = eng.run(x[lo:lo + n])
        assert np.array_equal(o.bin_logit, want.bin_logit[lo:lo + n]), n
        assert np.array_equal(o.fam_logits, want.fam_logits[lo:lo + n]), n
        assert np.array_equal(o.stage2_logit, want.stage2_logit[lo:lo + n]), n
        assert np.array_equal(o.fam2_logits, want.fam2_logits[lo:lo + n]), n
assert sys.modules['onnxruntime'] is None and len(x) >= 100
print("OK", len(x))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OK")
