"""Issue #5, batch-1 latency: the one-row paths must give exactly the integers of the general paths.

Reference: onnxruntime running the model file's graph as written (no rewrite, no split, no
one-row path), on whole batches. Each row is then run alone through the one-row paths of
``run`` and ``run_cascade`` (bound buffers, split stage 1 + residual), for the real bundled
samples and generated rows (NaN, +-inf, huge and negative values, every feature missing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import run_threads
from feature_rows import sample_rows

from sidecar.engines.base import EngineOutput
from sidecar.engines.load import pack_path_for
from sidecar.engines.numpy_engine import NumpyEngine
from sidecar.engines.onnx_engine import OnnxEngine
from sidecar.features.schema import FEATURE_NAMES
from sidecar.scorer import make_scorer

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "sidecar" / "data" / "model" / "bnn.onnx"
F = len(FEATURE_NAMES)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """Real sample rows, then generated edge rows (fuzz only)."""
    parts = sample_rows()
    real = np.concatenate(parts)
    assert len(real) >= 100
    rng = np.random.default_rng(5)
    gen = rng.choice(np.array([0.0, 1.0, 3.0, 80.0, 1e3, 1e6, 1e12, -1.0, np.nan, np.inf, -np.inf]), size=(400, F))
    gen[::7] = np.exp(rng.normal(4, 4, size=gen[::7].shape))
    gen[0] = np.nan
    return np.ascontiguousarray(np.concatenate([real[:1500], gen]), dtype=np.float32)


@pytest.fixture(scope="module")
def ref() -> OnnxEngine:
    return OnnxEngine(MODEL, rewrite=False, split=False, tiny=False)


@pytest.fixture(scope="module")
def screen() -> Any:
    return make_scorer(MODEL, "numpy").screen


def _row(out: EngineOutput, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return out.bin_logit[i : i + 1], out.fam_logits[i : i + 1], out.stage2_logit[i : i + 1]


def _outs(o: EngineOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return o.bin_logit, o.fam_logits, o.stage2_logit


def _check_rows(eng: Any, ref_out: EngineOutput, x: np.ndarray, screen: Any) -> int:
    flagged_rows = screen(ref_out.bin_logit)
    cascaded = 0
    for i in range(len(x)):
        b, f, s = _row(ref_out, i)
        for what, o in (("run", eng.run(x[i : i + 1])), ("cascade", eng.run_cascade(x[i : i + 1], screen))):
            for k, want in (("bin_logit", b), ("fam_logits", f)):
                got = getattr(o, k)
                assert got.dtype == np.int32 and got.shape == want.shape and np.array_equal(got, want), (what, i, k)
            s_got = o.stage2_logit
            assert s_got.dtype == np.int32 and s_got.shape == s.shape, (what, i)
            f2_want = None if ref_out.fam2_logits is None else ref_out.fam2_logits[i : i + 1]
            f2 = o.fam2_logits
            assert (f2 is None) == (f2_want is None), (what, i)
            if what == "run" or flagged_rows[i]:
                assert np.array_equal(s_got, s), (what, i)
                assert f2 is None or (f2.dtype == np.int32 and np.array_equal(f2, f2_want)), (what, i)
            else:
                assert s_got[0] == 0, (what, i)
                assert f2 is None or (f2.shape == (1, ref_out.fam_logits.shape[1]) and not f2.any()), (what, i)
        cascaded += int(flagged_rows[i])
    return cascaded


def test_one_row_paths_exact(ref: OnnxEngine, rows: np.ndarray, screen: Any) -> None:
    ref_out = ref.run(rows)
    eng = OnnxEngine(MODEL)
    assert eng._one is not None and eng._one.cascades  # the fast paths are really taken
    flagged = _check_rows(eng, ref_out, rows, screen)
    assert 0 < flagged < len(rows)  # both branches of the one-row cascade ran


def test_one_row_without_split_exact(ref: OnnxEngine, rows: np.ndarray, screen: Any) -> None:
    eng = OnnxEngine(MODEL, split=False)
    assert eng._one is not None and not eng._one.cascades
    _check_rows(eng, ref.run(rows[:300]), rows[:300], screen)


def test_numpy_one_row_exact(ref: OnnxEngine, rows: np.ndarray, screen: Any) -> None:
    eng = NumpyEngine(pack_path_for(MODEL))
    _check_rows(eng, ref.run(rows[:400]), rows[:400], screen)


def test_one_row_inputs_other_dtypes_and_layouts(ref: OnnxEngine, rows: np.ndarray) -> None:
    eng = OnnxEngine(MODEL)
    want = ref.run(rows[:50])
    for i in range(50):
        for x in (rows[i : i + 1].astype(np.float64), np.asfortranarray(rows[i : i + 1]), rows[i][None, :]):
            o = eng.run(x)
            assert all(np.array_equal(a, b) for a, b in zip(_row(want, i), _outs(o), strict=True))


def test_outputs_are_owned_by_the_caller(rows: np.ndarray) -> None:
    """The bound buffers are reused: what a call returned must not change on the next call."""
    eng = OnnxEngine(MODEL)
    first = eng.run(rows[:1])
    keep = [a.copy() for a in (first.bin_logit, first.fam_logits, first.stage2_logit)]
    for i in range(1, 40):
        eng.run(rows[i : i + 1])
    assert all(np.array_equal(a, b) for a, b in zip(keep, _outs(first), strict=True))


def test_busy_buffers_fall_back_to_the_general_path(ref: OnnxEngine, rows: np.ndarray, screen: Any) -> None:
    eng = OnnxEngine(MODEL)
    assert eng._one is not None
    with eng._one._lock:  # another thread inside the one-row path
        assert eng._one.run(rows[:1]) is None
        _check_rows(eng, ref.run(rows[:20]), rows[:20], screen)


def test_threads_share_one_engine(ref: OnnxEngine, rows: np.ndarray) -> None:
    eng = OnnxEngine(MODEL)
    want = ref.run(rows[:200])
    errors: list[str] = []

    def work(off: int) -> None:
        for i in range(off, 200, 2):
            o = eng.run(rows[i : i + 1])
            if not all(np.array_equal(a, b) for a, b in zip(_row(want, i), _outs(o), strict=True)):
                errors.append(f"row {i}")

    assert run_threads(work) and not errors


def test_wrong_width_row_is_not_taken_by_the_one_row_path() -> None:
    eng = OnnxEngine(MODEL)
    assert eng._one is not None
    assert eng._one.run(np.zeros((1, F + 1), dtype=np.float32)) is None
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    with pytest.raises(InvalidArgument):  # onnxruntime rejects it, as before this path existed
        eng.run(np.zeros((1, F + 1), dtype=np.float32))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 16])
def test_small_batches_exact(ref: OnnxEngine, rows: np.ndarray, screen: Any, n: int) -> None:
    """The numpy engine's small-batch path (``numpy_small``) and, with it switched off, its
    large-batch path on a few rows, and the onnx engine's choice of split vs one call, on every
    n-row window."""
    pack = pack_path_for(MODEL)
    engines: list[Any] = [NumpyEngine(pack), NumpyEngine(pack, small_rows=0), OnnxEngine(MODEL)]
    split = OnnxEngine(MODEL)
    split.cascade_min_rows, split.cascade_min_saved = 0, 0  # the split even on a few rows
    for lo in range(0, 240, n):
        x = rows[lo : lo + n]
        want = ref.run(x)
        m = screen(want.bin_logit)
        for eng in [*engines, split]:
            got = eng.run(x)
            assert all(np.array_equal(a, b) for a, b in zip(_outs(want), _outs(got), strict=True)), (eng.name, lo)
            c = eng.run_cascade(x, screen)
            assert np.array_equal(c.bin_logit, want.bin_logit) and np.array_equal(c.fam_logits, want.fam_logits)
            assert np.array_equal(c.stage2_logit[m], want.stage2_logit[m]) and not c.stage2_logit[~m].any()


def test_split_choice_follows_the_flagged_fraction() -> None:
    eng = OnnxEngine(MODEL)
    assert eng.split
    eng._frac = 0.0  # nothing flagged lately: stage 2 is expected to be skipped, split from 32 rows
    assert not eng._use_split(eng.cascade_min_rows - 1) and eng._use_split(eng.cascade_min_rows)
    eng._frac = 0.3  # some rows flagged: one call until enough rows are saved
    assert not eng._use_split(64) and eng._use_split(1024)
    eng._frac = 0.9  # mostly flagged: never split
    assert not eng._use_split(4096)
