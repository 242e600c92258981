"""Stage 2 as a residual plan on stage 1's levels, and ``run_cascade``, in both engines.

Reference: onnxruntime running the model file's graph exactly as written (no layout
rewrite, no split). Every other path must give the same integers: ``run`` of the
split onnxruntime engine and of the numpy engine (with and without the residual
plan), and ``run_cascade`` (same ``bin_logit``/``fam_logits``; ``stage2_logit`` equal
where the screen flags, 0 elsewhere), on all real hot-path fixtures and on more
than 100 k random rows, plus contract models built to stress the value numbering.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sidecar.engines.base import EngineOutput
from sidecar.engines.load import pack_path_for, sha256_file
from sidecar.engines.numpy_engine import NumpyEngine
from sidecar.engines.onnx_engine import OnnxEngine
from sidecar.engines.pack import load_pack
from sidecar.engines.reuse import plan_residual
from sidecar.features.schema import FEATURE_NAMES, extract
from sidecar.scorer import make_scorer
from sidecar.sources.base import ReadStats
from sidecar.sources.detect import read_path

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "sidecar" / "data" / "model" / "bnn.onnx"
F = len(FEATURE_NAMES)

Screen = Any


def _same(a: EngineOutput, b: EngineOutput, what: str) -> None:
    assert (a.fam2_logits is None) == (b.fam2_logits is None), what
    for k in ("bin_logit", "fam_logits", "stage2_logit") + (("fam2_logits",) if a.fam2_logits is not None else ()):
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == np.int32 and y.dtype == np.int32, (what, k)
        assert np.array_equal(x, y), (what, k, int((x != y).sum()))


def _cascade_ok(ref: EngineOutput, c: EngineOutput, screen: Screen, what: str) -> int:
    m = screen(ref.bin_logit)
    assert np.array_equal(c.bin_logit, ref.bin_logit) and np.array_equal(c.fam_logits, ref.fam_logits), what
    assert c.stage2_logit.dtype == np.int32 and c.stage2_logit.shape == ref.stage2_logit.shape, what
    assert np.array_equal(c.stage2_logit[m], ref.stage2_logit[m]), what
    assert not c.stage2_logit[~m].any(), what
    assert (c.fam2_logits is None) == (ref.fam2_logits is None), what
    if c.fam2_logits is not None and ref.fam2_logits is not None:  # the member's family head: rows as stage 2's
        assert c.fam2_logits.dtype == np.int32 and c.fam2_logits.shape == ref.fam2_logits.shape, what
        assert np.array_equal(c.fam2_logits[m], ref.fam2_logits[m]) and not c.fam2_logits[~m].any(), what
    return int(m.sum())


def check_all(engines: dict[str, Any], x: np.ndarray, screen: Screen, what: str) -> int:
    """Every engine's run == the reference graph; every run_cascade consistent with it."""
    ref = engines["ref"].run(x)
    flagged = 0
    for name, eng in engines.items():
        if name == "ref":
            continue
        _same(ref, eng.run(x), f"{what}: {name}.run")
        flagged = _cascade_ok(ref, eng.run_cascade(x, screen), screen, f"{what}: {name}.run_cascade")
    return flagged


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread() -> Any:
    """One BLAS thread, as the CLI sets (sidecar/cli/__init__.py): OpenBLAS's pool makes the numpy
    engine's small matmuls many times slower on a busy 2-core box. Speed only; optional."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield None
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield None


@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    pack = pack_path_for(MODEL)
    always_split, never_split = OnnxEngine(MODEL), OnnxEngine(MODEL)
    always_split.cascade_min_rows, always_split.cascade_max_frac = 0, 1.0  # two sessions, every call
    always_split.cascade_min_saved = 0
    never_split.cascade_max_frac = -1.0  # one run call and the unflagged rows zeroed, every call
    return {
        "onnx_always_split": always_split,
        "onnx_never_split": never_split,
        "ref": OnnxEngine(MODEL, rewrite=False, split=False),
        "onnx": OnnxEngine(MODEL),
        "onnx_norewrite": OnnxEngine(MODEL, rewrite=False),
        "numpy": NumpyEngine(pack),
        "numpy_tower": NumpyEngine(pack, reuse=False),
    }


@pytest.fixture(scope="module")
def screen() -> Screen:
    return make_scorer(MODEL, "numpy").screen


def test_shipped_plan_reuses_stage1(shipped: dict[str, Any]) -> None:
    # the shipped stage 2 is a committee member with stage 1's thermometer: the plan reads every input
    # bit from stage 1 and computes only the member's own units (a stacked s2, which recomputes stage 1,
    # is checked in tests/test_train_stage2.py)
    p = load_pack(pack_path_for(MODEL))
    res = plan_residual(p)
    s2_units = sum(int(p[f"s2.T{i}"].shape[0]) for i in range(int(p["s2.n_layers"])))
    new_units = sum(int(st.thr.shape[0]) for st in res.layers if st.thr is not None)
    assert res.s1_levels == [0] and res.n_bits() == 0 and new_units == s2_units
    assert shipped["onnx"].split and shipped["onnx_norewrite"].split
    assert shipped["numpy"]._res is not None and shipped["numpy_tower"]._res is None
    # the member's family head rides on the plan's head: column 0 stage2_logit, then K family columns
    k = int(p["s1.Wfam"].shape[1])
    assert res.head.bias is not None and len(res.head.bias) == 1 + k and p["s2.Wfam"].shape[1] == k
    x = np.zeros((3, len(FEATURE_NAMES)), dtype=np.float32)
    for name, eng in shipped.items():  # every path of both engines returns it, so the comparisons below are not vacuous
        assert eng.run(x).fam2_logits.shape == (3, k), name


def _fixture_paths(shared: Path) -> list[Path]:
    roots = [shared / "suricata", shared / "zeek", shared / "zeek-labeled", REPO / "tests" / "data" / "lab" / "eve",
             REPO / "sidecar" / "data" / "samples"]  # fmt: skip
    return sorted(p for r in roots for p in r.rglob("*") if p.is_file() and p.suffix not in (".md", ".pcap", ".py"))


def _features(paths: list[Path]) -> list[tuple[str, np.ndarray]]:
    from sidecar.errors import FormatDetectionError

    out = []
    logging.disable(logging.WARNING)  # the readers log each skipped non-flow record
    try:
        for p in paths:
            try:
                xs = [extract(b) for b in read_path(p, "auto", ReadStats(), batch_size=4096)]
            except FormatDetectionError:
                continue  # not a flow-record file (notice logs, docs examples, manifests)
            if xs:
                out.append((p.name, np.concatenate(xs)))
    finally:
        logging.disable(logging.NOTSET)
    return out


def test_real_fixtures_all_paths_exact(shipped: dict[str, Any], screen: Screen, shared: Path) -> None:
    feats = _features(_fixture_paths(shared))
    rows = sum(len(x) for _, x in feats)
    assert len(feats) >= 30 and rows > 50_000
    flagged = 0
    for name, x in feats:
        flagged += check_all(shipped, x, screen, name)
        for b in (1, 700):  # small batches and a chunk not a multiple of anything
            for lo in range(0, min(len(x), 2100), b if b > 1 else 97):
                check_all(shipped, x[lo : lo + b], screen, f"{name}[{lo}:+{b}]")
    assert 0 < flagged < rows  # both the skipped and the computed stage-2 rows were exercised


@pytest.mark.slow
def test_real_cic_csv_all_paths_exact(shipped: dict[str, Any], screen: Screen, shared: Path) -> None:
    roots = [shared / "cic-ids2018", shared / "cic-ids2017-improved", REPO / "tests" / "data" / "lab" / "csv"]
    feats = _features(sorted(p for r in roots for p in r.rglob("*.csv*") if p.is_file()))
    assert sum(len(x) for _, x in feats) > 50_000
    for name, x in feats:
        check_all(shipped, x, screen, name)


def hostile_rows(n: int, thresholds: dict[int, np.ndarray], seed: int) -> np.ndarray:
    """Random rows that hit every thermometer edge: values equal to a threshold, its float32
    neighbours, NaN, ±inf, ±0, huge and negative values."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, F)) * 10.0 ** rng.integers(-2, 8, (n, F))).astype(np.float32)
    kind = rng.random((n, F))
    for f, thr in thresholds.items():
        if not len(thr):
            continue
        col = thr[rng.integers(0, len(thr), n)]
        pick = kind[:, f] < 0.45
        x[pick, f] = col[pick]
        nb = (kind[:, f] >= 0.45) & (kind[:, f] < 0.55)
        x[nb, f] = np.nextafter(col[nb], np.where(rng.random(int(nb.sum())) < 0.5, -np.inf, np.inf).astype(np.float32))
    x[(kind >= 0.55) & (kind < 0.63)] = np.nan
    x[(kind >= 0.63) & (kind < 0.65)] = np.inf
    x[(kind >= 0.65) & (kind < 0.67)] = -np.inf
    x[(kind >= 0.67) & (kind < 0.69)] = -0.0
    return x


def _thresholds(p: dict[str, Any]) -> dict[int, np.ndarray]:
    out: dict[int, list[float]] = {}
    for t in ("s1", "s2"):
        for f, v in zip(p[f"{t}.thermo_feat"], p[f"{t}.thermo_thr"], strict=True):
            out.setdefault(int(f), []).append(float(v))
    return {f: np.array(sorted(set(v)), dtype=np.float32) for f, v in out.items()}


def test_random_rows_all_paths_exact(shipped: dict[str, Any], screen: Screen) -> None:
    thr = _thresholds(load_pack(pack_path_for(MODEL)))
    x = hostile_rows(120_000, thr, seed=11)
    flagged = check_all(shipped, x, screen, "random 120k")
    assert 0 < flagged < len(x)
    out = shipped["numpy"].run(x)
    assert len(np.unique(out.stage2_logit)) > 10 and len(np.unique(out.bin_logit)) > 10
    for b in (1, 3, 64, 1024, 1025):
        check_all(shipped, x[:b], screen, f"random batch {b}")


def test_bin_logit_bounds_hold(shipped: dict[str, Any], screen: Screen) -> None:
    """Every row's ``bin_logit`` lies within the bounds both engines report, so a lookup table of
    the screen over that range equals the screen (what a cheaper scorer screen could use)."""
    lo, hi = shipped["numpy"].bin_logit_bounds()
    assert shipped["onnx"].bin_logit_bounds() == (lo, hi) and lo < 0 < hi
    out = shipped["ref"].run(hostile_rows(50_000, _thresholds(load_pack(pack_path_for(MODEL))), seed=3))
    assert lo <= int(out.bin_logit.min()) and int(out.bin_logit.max()) <= hi
    lut = screen(np.arange(lo, hi + 1))
    assert np.array_equal(lut[out.bin_logit - lo], screen(out.bin_logit)) and 0 < lut.sum() < len(lut)


def test_screen_extremes_and_empty(shipped: dict[str, Any]) -> None:
    x = hostile_rows(3000, {}, seed=5)
    for name, scr in (("none", lambda b: np.zeros(len(b), bool)), ("all", lambda b: np.ones(len(b), bool)),
                      ("odd", lambda b: (b % 2) == 1)):  # fmt: skip
        check_all(shipped, x, scr, f"screen {name}")
    empty = np.zeros((0, F), dtype=np.float32)
    for name, eng in shipped.items():
        out = eng.run_cascade(empty, lambda b: b > 0) if name != "ref" else eng.run(empty)
        assert out.bin_logit.shape == (0,) and out.fam_logits.shape[0] == 0 and out.stage2_logit.shape == (0,)


class _Counting:
    """Counts the calls a session proxy receives."""

    def __init__(self, sess: Any) -> None:
        self.sess, self.calls = sess, 0

    def run(self, *a: Any) -> Any:
        self.calls += 1
        return self.sess.run(*a)


def test_onnx_cascade_follows_the_flagged_fraction(shipped: dict[str, Any]) -> None:
    """Mostly-flagged batches switch run_cascade to one ``run`` call; mostly-benign ones back to
    the split. Exact either way."""
    eng = OnnxEngine(MODEL)
    res = _Counting(eng._residual)
    eng._residual = res
    x = hostile_rows(1024, {}, seed=9)
    ref = shipped["ref"].run(x)
    used = []
    for scr in [lambda b: b == b] * 4 + [lambda b: b % 10 == 0] * 6:
        before = res.calls
        _cascade_ok(ref, eng.run_cascade(x, scr), scr, "switch")
        used.append(res.calls - before)
    assert used[:2] == [1, 1] and 0 in used[2:6] and used[-1] == 1, used


def test_scorer_verdicts_identical_to_reference(shipped: dict[str, Any]) -> None:
    """``Scorer.score`` (which takes ``run_cascade``) gives the verdicts of the file's graph."""
    from sidecar.scorer import Scorer

    samples = REPO / "sidecar" / "data" / "samples"
    for kind in ("onnx", "numpy"):
        sc = make_scorer(MODEL, kind)
        ref_sc = Scorer(shipped["ref"], sc.meta, sc.model_id)
        for path in sorted(p for p in samples.iterdir() if p.suffix != ".md"):
            for batch in read_path(path, "auto", ReadStats(), batch_size=500):
                a, b = sc.score(batch), ref_sc.score(batch)
                for f in ("score", "malicious", "cls", "stage"):
                    assert np.array_equal(getattr(a, f), getattr(b, f)), (kind, path.name, f)
                assert np.array_equal(a.score2, b.score2, equal_nan=True), (kind, path.name)


# --- contract models built to stress the value numbering -------------------------------------------


def _cascade_towers(seed: int, wide_merge: bool = False) -> dict[str, Any]:
    """A random stage 1 and a stage 2 that, like the shipped export, repeats stage 1's thermometer
    bits (twice), recomputes stage 1's units, passes units through identity columns and reads
    stage 1's head as score bits; plus random units of its own (small ints, zeros, ±1)."""
    rng = np.random.default_rng(seed)
    cuts = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 10.0, 80.0, 443.0, 1e3, 1e5], dtype=np.float32)
    feat1 = np.repeat(np.arange(F), 3)
    thr1 = rng.choice(cuts, len(feat1))
    nan1 = np.arange(0, F, 2)
    b1 = len(feat1) + len(nan1)

    def pm1(shape: tuple[int, int]) -> np.ndarray:
        return np.where(rng.random(shape) < 0.5, -1, 1).astype(np.int8)

    w10, t10 = pm1((b1, 24)), rng.integers(-4, 5, 24).astype(np.int32)
    w11, t11 = pm1((24, 12)), rng.integers(-3, 4, 12).astype(np.int32)
    wbin = rng.integers(-20, 21, (12, 1)).astype(np.int8)
    s1 = {"thermo_feat": feat1, "thermo_thr": thr1, "nan_feat": nan1, "layers": [(w10, t10), (w11, t11)],
          "heads": {"bin": (wbin, np.array([3], np.int32)),
                    "fam": (rng.integers(-5, 6, (12, 4)).astype(np.int8), rng.integers(-3, 4, 4).astype(np.int32))}}
    # stage 2 thermometer: stage 1's bits twice, then its own finer ones
    own_feat = rng.integers(0, F, 30)
    own_thr = rng.choice(cuts, 30)
    feat2 = np.concatenate([feat1, feat1, own_feat])
    thr2 = np.concatenate([thr1, thr1, own_thr]).astype(np.float32)
    nan2 = np.concatenate([nan1, nan1])
    g = len(feat1)
    rows_a = np.r_[0:g, 2 * g + 30 : 2 * g + 30 + len(nan1)]  # first copy of stage 1's bits
    rows_b = np.r_[g : 2 * g, 2 * g + 30 + len(nan1) : 2 * g + 30 + 2 * len(nan1)]  # second copy
    n2in = len(feat2) + len(nan2)
    # layer 0: stage-1 units recomputed (+d on copy A, -d on copy B cancels), then 8 own units
    w20 = np.zeros((n2in, 24 + 8), dtype=np.int8)
    d = pm1((b1, 24))
    if wide_merge:  # 100 on both copies: merged 200, beyond int8
        w20[rows_a, :24] = w20[rows_b, :24] = 100 * (w10 > 0)
    else:  # (w10 + d) on copy A, -d on copy B: merged = w10, stage 1's unit exactly
        w20[rows_a, :24], w20[rows_b, :24] = w10 + d, -d
    w20[:, 24:] = rng.integers(-2, 3, (n2in, 8))
    t20 = np.concatenate([t10, rng.integers(-3, 4, 8)]).astype(np.int32)
    # layer 1: stage-1 layer 1 on the recomputed units, 6 own units over everything
    w21 = np.zeros((32, 12 + 6), dtype=np.int8)
    w21[:24, :12] = w11
    w21[:, 12:] = rng.integers(-1, 2, (32, 6))
    t21 = np.concatenate([t11, rng.integers(-2, 3, 6)]).astype(np.int32)
    # layer 2: 4 score bits (stage 1's bin head >= k), identity of the 6 own units
    w22 = np.zeros((18, 10), dtype=np.int8)
    w22[:12, :4] = wbin
    w22[12:, 4:] = np.eye(6, dtype=np.int8)
    t22 = np.concatenate([np.array([-30, -5, 5, 30]), np.ones(6)]).astype(np.int32)
    w23, t23 = pm1((10, 5)), rng.integers(-2, 3, 5).astype(np.int32)
    s2 = {"thermo_feat": feat2, "thermo_thr": thr2, "nan_feat": nan2,
          "layers": [(w20, t20), (w21, t21), (w22, t22), (w23, t23)],
          "heads": {"s2": (rng.integers(-9, 10, (5, 1)).astype(np.int8), np.array([1], np.int32))}}  # fmt: skip
    return {"s1": s1, "s2": s2}


def _build(tmp: Path, towers: dict[str, Any], name: str) -> Path:
    onnx = pytest.importorskip("onnx")  # building test models needs the dev extra
    assert onnx is not None
    from sidecar.engines.graph import build_onnx
    from sidecar.engines.pack import pack_onnx

    meta = {"bnn.features": json.dumps(list(FEATURE_NAMES)), "bnn.families": json.dumps(["benign", "a", "b", "c"])}
    path = tmp / f"{name}.onnx"
    path.write_bytes(build_onnx(towers, meta))
    path.with_name(f"{name}.onnx.sha256").write_text(f"{sha256_file(path)}  {name}.onnx\n")
    pack_onnx(path, pack_path_for(path))
    return path


def _engines(path: Path) -> dict[str, Any]:
    return {"ref": OnnxEngine(path, rewrite=False, split=False), "onnx": OnnxEngine(path),
            "numpy": NumpyEngine(pack_path_for(path)), "numpy_tower": NumpyEngine(pack_path_for(path), reuse=False)}  # fmt: skip


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_built_cascades_exact_and_reused(tmp_path: Path, seed: int) -> None:
    path = _build(tmp_path, _cascade_towers(seed), f"m{seed}")
    engines = _engines(path)
    assert engines["onnx"].split
    res = plan_residual(load_pack(pack_path_for(path)))
    # recomputed stage-1 units, duplicated bits and identities are all read, not recomputed
    widths = [int(s.thr.shape[0]) for s in res.layers if s.thr is not None]
    assert 0 < res.n_bits() <= 30 and widths[:3] == [8, 4, 6] and 0 < widths[3] <= 5 and res.s1_levels == [0, 1, 2]
    x = hostile_rows(40_000, {f: np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 10.0, 80.0, 443.0, 1e3, 1e5], np.float32)
                              for f in range(F)}, seed=seed)  # fmt: skip
    check_all(engines, x, lambda b: b > 0, f"built seed {seed}")


def test_merged_weights_beyond_int8_fall_back_exactly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Duplicated bits weighted 100 + 100 merge to 200, which MatMulInteger cannot hold: the
    onnxruntime engine logs it and runs the graph as written; the numpy plan still applies."""
    path = _build(tmp_path, _cascade_towers(7, wide_merge=True), "wide")
    with caplog.at_level(logging.WARNING, logger="sidecar.engines.onnx_engine"):
        engines = _engines(path)
    assert not engines["onnx"].split and "exceed int8" in caplog.text
    assert engines["numpy"]._res is not None
    check_all(engines, hostile_rows(20_000, {}, seed=8), lambda b: b % 3 == 0, "wide merge")
