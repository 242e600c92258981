"""numpy-only engine: runs a ``.bnnpack.npz`` with popcount binary layers.

Returns exactly the same integers as the ONNX graph under onnxruntime.

How each piece stays exact and fast:

* Thermometer bits are written straight into a zero-padded uint8 buffer (width a
  multiple of 64), so packing them is one ``np.packbits`` and a free ``view`` as
  uint64 words, in the same byte order as :func:`sidecar.engines.pack.pack_bits`.
* A ±1 layer on 0/1 inputs is ``acc = 2*popcount(a & w_plus) - popcount(a)``; the
  popcount runs one word at a time over ``[n, H]`` (``np.bitwise_count`` on uint64
  where numpy has it, a byte lookup table otherwise).
* Any other integer matrix (stage-2 towers with small-int weights, the heads) is
  multiplied as float32 through BLAS when every partial sum provably fits the
  24-bit float32 mantissa (``sum |w|`` per output column < 2**24, inputs 0/1):
  each product and each partial sum is then an exactly representable integer,
  whatever the summation order, so the result equals the integer matmul bit for bit.
  Matrices that could exceed that bound use an int64 matmul.

Batches of up to :data:`SMALL_ROWS` rows take :class:`sidecar.engines.numpy_small.SmallPlan`
instead (latency: a few dozen numpy calls per batch instead of ~100): the same arithmetic —
±1 layers as AND + popcount on packed words with integer thresholds, every other layer and
head an exactness-checked float32 product — with the thermometer as one vectorised
comparison, the residual steps of one depth fused, and no per-call objects. Its outputs are
the same integers for every row (tests/test_e6_small_batch.py); a model it cannot compile
exactly keeps this path for every batch size.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sidecar.engines.base import EngineOutput
from sidecar.engines.numpy_small import SmallPlan
from sidecar.engines.pack import TOWERS, heads_of, load_pack
from sidecar.engines.reuse import Residual, Source, Step, bin_logit_bounds, plan_residual

log = logging.getLogger(__name__)

_LUT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_BITCOUNT = getattr(np, "bitwise_count", None)
#: largest |partial sum| a float32 accumulator holds exactly
_F32_EXACT = 1 << 24
#: batches of up to this many rows take :class:`sidecar.engines.numpy_small.SmallPlan`: it was faster
#: than this path up to ~160 rows on the shipped model (x86, one core), so 128 keeps a margin
SMALL_ROWS = 128


def popcount64(a: np.ndarray) -> np.ndarray:
    """Per-element popcount of a uint64 array (as uint8)."""
    if _BITCOUNT is not None:
        return np.asarray(_BITCOUNT(a))
    a = np.ascontiguousarray(a)
    return _LUT[a.view(np.uint8)].reshape(*a.shape, 8).sum(axis=-1, dtype=np.uint8)


def _words(nbits: int) -> int:
    return max(1, -(-nbits // 64))


#: bit weights of one packed byte, most significant first (``np.packbits`` order)
_BYTE_WEIGHTS = np.array([128, 64, 32, 16, 8, 4, 2, 1], dtype=np.uint8)[None, :, None]


def pack_columns(bits_t: np.ndarray) -> np.ndarray:
    """Transposed 0/1 bits ``[words*64, n]`` (bool) → uint64 words ``[words, n]``.

    Word ``j`` of sample ``i`` holds the same bits, in the same byte order, as
    ``pack_bits(bits_t.T)[i, j]`` (:func:`sidecar.engines.pack.pack_bits`), so it can be
    ANDed with the packed weight rows. The byte packing is a weighted sum over each
    group of 8 rows (faster than ``np.packbits`` along axis 0).
    """
    nb, n = bits_t.shape
    by = (bits_t.reshape(nb // 8, 8, n).view(np.uint8) * _BYTE_WEIGHTS).sum(axis=1, dtype=np.uint8)
    return np.ascontiguousarray(np.ascontiguousarray(by.T).view(np.uint64).T)


class _IntMat:
    """An integer matrix applied to 0/1 columns, exactly (see module docstring)."""

    def __init__(self, w: np.ndarray) -> None:
        wi = np.asarray(w, dtype=np.int64)
        bound = int(np.abs(wi).sum(axis=0).max()) if wi.size else 0
        self.f32 = bound < _F32_EXACT
        wt = np.ascontiguousarray(wi.T)  # [H, B]
        self.wt: np.ndarray = wt.astype(np.float32) if self.f32 else wt

    def __call__(self, h_t: np.ndarray) -> np.ndarray:
        """``h_t``: bool ``[B, n]`` → int32 ``[H, n]``."""
        if self.f32:
            return (self.wt @ h_t.astype(np.float32)).astype(np.int32)
        return (self.wt @ h_t.astype(np.int64)).astype(np.int32)


class _Pm1:
    """A ±1 layer kept as bit-packed ``+1`` masks: one ``[H, 1]`` uint64 column per word.

    Small batches do not come here (:mod:`sidecar.engines.numpy_small` has its own plan for
    them), so there is one loop over the words, sized for large batches."""

    def __init__(self, packed: np.ndarray) -> None:
        self.cols = [np.ascontiguousarray(packed[:, j])[:, None] for j in range(packed.shape[1])]

    def __call__(self, a_t: np.ndarray) -> np.ndarray:
        """``a_t``: uint64 ``[words, n]`` packed 0/1 inputs → int16 ``[H, n]`` accumulators."""
        h, n = self.cols[0].shape[0], a_t.shape[1]
        # |acc| <= number of input bits: int16 unless a layer is wider than 16k bits
        dt = np.int16 if len(self.cols) * 64 < 16_000 else np.int32
        tmp = np.empty((h, n), dtype=np.uint64)
        cnt = np.empty((h, n), dtype=np.uint8)
        acc = np.zeros((h, n), dtype=dt)
        for j, col in enumerate(self.cols):
            np.bitwise_and(col, a_t[j], out=tmp)
            acc += popcount64(tmp) if _BITCOUNT is None else _BITCOUNT(tmp, out=cnt)
        n_on = popcount64(a_t).sum(axis=0, dtype=acc.dtype)
        acc *= 2
        acc -= n_on
        return acc


class _Tower:
    """One tower, computed transposed (``[bits, n]``) so every array op runs on contiguous rows."""

    def __init__(self, p: dict[str, Any], t: str) -> None:
        self.feat = np.asarray(p[f"{t}.thermo_feat"], dtype=np.intp)
        self.thr = np.asarray(p[f"{t}.thermo_thr"], dtype=np.float32)[:, None]
        self.nan = np.asarray(p[f"{t}.nan_feat"], dtype=np.intp)
        self.n_bits = len(self.feat) + len(self.nan)
        self.layers: list[tuple[_Pm1 | _IntMat, np.ndarray]] = []
        for i in range(int(p[f"{t}.n_layers"])):
            w = f"{t}.W{i}"
            thr = np.asarray(p[f"{t}.T{i}"], dtype=np.int32)[:, None]
            layer: _Pm1 | _IntMat = _Pm1(p[w + ".packed"]) if bool(p[w + ".pm1"]) else _IntMat(p[w])
            self.layers.append((layer, thr))
        self.head_names = heads_of(p, t)
        self.head_k = [int(np.asarray(p[f"{t}.W{h}"]).shape[1]) for h in self.head_names]
        # all heads read the same units: one matrix, one product
        self.heads = _IntMat(np.concatenate([np.asarray(p[f"{t}.W{h}"]) for h in self.head_names], axis=1))
        self.head_b = np.concatenate([np.asarray(p[f"{t}.b{h}"], dtype=np.int32) for h in self.head_names])[:, None]

    def bits(self, x_t: np.ndarray) -> np.ndarray:
        """Thermometer then missing bits (bool ``[words * 64, n]``, zero padded)."""
        nf, nb = len(self.feat), self.n_bits
        h = np.zeros((_words(nb) * 64, x_t.shape[1]), dtype=np.bool_)
        np.greater(x_t[self.feat], self.thr, out=h[:nf])
        if len(self.nan):
            np.isnan(x_t[self.nan], out=h[nf:nb])
        return h

    def run(self, x_t: np.ndarray, levels: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """``x_t``: float32 ``[F, n]`` (transposed features) → head name → int32 ``[n, k]``.

        ``levels``, when given, receives the 0/1 levels (bool ``[k, n]``): the thermometer
        bits, then each hidden layer's output (what :class:`_Residual` reads)."""
        n = x_t.shape[1]
        nb = self.n_bits
        h = self.bits(x_t)
        if levels is not None:
            levels.append(h[:nb])
        n_h = nb
        for layer, thr in self.layers:
            if isinstance(layer, _Pm1):
                if h.shape[0] % 64:
                    padded = np.zeros((_words(n_h) * 64, n), dtype=np.bool_)
                    padded[:n_h] = h[:n_h]
                    h = padded
                acc = layer(pack_columns(h))
            else:
                acc = layer(h[:n_h])
            h = acc >= thr
            n_h = thr.shape[0]
            if levels is not None:
                levels.append(h)
        acc = self.heads(h[:n_h]) + self.head_b
        out, lo = {}, 0
        for name, k in zip(self.head_names, self.head_k, strict=True):
            out[name] = acc[lo : lo + k].T
            lo += k
        return out


class _Residual:
    """Tower ``s2`` as its residual plan (:mod:`sidecar.engines.reuse`) on top of stage 1's levels.

    Each step multiplies in float32 and compares the float32 accumulators with float32
    thresholds (no cast back to int): exact because each step's ``sum |w|`` is checked below
    2**24 (see the module docstring)."""

    def __init__(self, res: Residual) -> None:
        self.feat = np.asarray(res.feat, dtype=np.intp)
        self.thr = np.asarray(res.thr, dtype=np.float32)[:, None]
        self.nan = np.asarray(res.nan, dtype=np.intp)
        self.s1_levels = list(res.s1_levels)
        self.layers = [(*self._mat(st), np.asarray(st.thr, dtype=np.float32)[:, None]) for st in res.layers]
        src, wt = self._mat(res.head)
        self.head = (src, wt, np.asarray(res.head.bias, dtype=np.int32)[:, None])

    @staticmethod
    def _mat(st: Step) -> tuple[list[Source], np.ndarray]:
        """Sources and ``W.T`` as float32 ``[H, K]``; ValueError when float32 could round."""
        w = np.concatenate([m for _, m in st.sources], axis=0).astype(np.int64)
        if w.size and int(np.abs(w).sum(axis=0).max()) >= _F32_EXACT:
            raise ValueError("a residual step's |weights| sum exceeds the exact float32 range")
        return [s for s, _ in st.sources], np.ascontiguousarray(w.T, dtype=np.float32)

    def run(self, x_t: np.ndarray, s1_levels: list[np.ndarray]) -> np.ndarray:
        """``x_t`` float32 ``[F, n]`` and stage 1's levels (bool ``[k, n]``) → the head's accumulators,
        int32 ``[1 + K2, n]``: row 0 ``stage2_logit``, then the member's family logits (K2 = 0 without)."""
        groups: dict[Source, np.ndarray] = {("s1", k): lv for k, lv in enumerate(s1_levels)}
        nf = len(self.feat)
        if nf + len(self.nan):
            bits = np.empty((nf + len(self.nan), x_t.shape[1]), dtype=np.bool_)
            np.greater(x_t[self.feat], self.thr, out=bits[:nf])
            np.isnan(x_t[self.nan], out=bits[nf:])
            groups[("r", 0)] = bits

        def inputs(src: list[Source]) -> np.ndarray:
            h = groups[src[0]] if len(src) == 1 else np.concatenate([groups[s] for s in src])
            return h.astype(np.float32)

        for d, (src, wt, thr) in enumerate(self.layers, start=1):
            groups[("r", d)] = (wt @ inputs(src)) >= thr  # float32 accumulators, exact
        src, wt, bias = self.head
        out: np.ndarray = (wt @ inputs(src)).astype(np.int32) + bias
        return out


class NumpyEngine:
    """``reuse``: run tower ``s2`` as its residual plan on stage 1's levels (exact; falls back to
    the tower as written when the plan cannot be built). ``small_rows``: batches up to this size
    take the small-batch path (:mod:`sidecar.engines.numpy_small`; needs the residual plan; 0: never)."""

    name = "numpy"

    def __init__(
        self, npz_path: str | Path, chunk: int = 1024, reuse: bool = True, small_rows: int = SMALL_ROWS
    ) -> None:
        self._p = load_pack(npz_path)
        self._chunk = chunk
        self._s1 = _Tower(self._p, TOWERS[0])
        self._k = int(np.asarray(self._p[f"{TOWERS[0]}.Wfam"]).shape[1])
        #: the committee member's family head: output fam2_logits (K columns), else none
        self._k2 = int(np.asarray(self._p["s2.Wfam"]).shape[1]) if "s2.Wfam" in self._p else 0
        self._res: _Residual | None = None
        plan: Residual | None = None
        if reuse:
            try:
                plan = plan_residual(self._p)
                self._res = _Residual(plan)
            except (ValueError, KeyError) as exc:
                log.warning("%s: stage-2 residual plan unavailable (%s); running tower s2 as written", npz_path, exc)
        self._s2 = _Tower(self._p, TOWERS[1]) if self._res is None else None  # only as the fallback
        self._small: SmallPlan | None = None
        if plan is not None and self._res is not None and small_rows > 0:
            try:
                self._small = SmallPlan(self._p, plan, self._n_features(), small_rows)
            except (ValueError, KeyError) as exc:
                log.warning("%s: no small-batch path (%s)", npz_path, exc)

    def _n_features(self) -> int:
        """Width of the input rows: the model's feature list, else the largest feature index read + 1."""
        feats = self._p["metadata"].get("bnn.features")
        if feats is not None:
            return len(json.loads(feats))
        idx = [np.asarray(self._p[f"{t}.{k}"]) for t in TOWERS for k in ("thermo_feat", "nan_feat")]
        return max((int(a.max()) + 1 for a in idx if a.size), default=0)

    def metadata(self) -> dict[str, str]:
        return dict(self._p["metadata"])

    def bin_logit_bounds(self) -> tuple[int, int]:
        """Smallest and largest ``bin_logit`` this model can give: a screen evaluated once on that
        range is an exact lookup table."""
        return bin_logit_bounds(self._p)

    @property
    def onnx_sha256(self) -> str:
        return str(self._p["onnx_sha256"])

    def _chunk_run(self, xt: np.ndarray, screen: Callable[[np.ndarray], np.ndarray] | None) -> tuple[
            np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """One chunk (``xt`` float32 ``[F, n]``) → (bin [n], fam [n, K], s2 [n, 1 + K2]: stage2_logit
        then the member's family logits); with ``screen``, s2 only on the flagged rows (0 elsewhere)."""
        levels: list[np.ndarray] | None = [] if self._res is not None else None
        r1 = self._s1.run(xt, levels)
        b = r1["bin"][:, 0]
        sel = None if screen is None else np.flatnonzero(screen(b))
        if sel is None or len(sel) == len(b):
            return b, r1["fam"], self._stage2(xt, levels)
        s = np.zeros((len(b), 1 + self._k2), dtype=np.int32)
        if len(sel):
            xs = np.take(xt, sel, axis=1)
            lv_sel = None if levels is None else self._levels_of(xs, levels, sel)
            s[sel] = self._stage2(xs, lv_sel)
        return b, r1["fam"], s

    def _levels_of(self, xs: np.ndarray, levels: list[np.ndarray], sel: np.ndarray) -> list[np.ndarray]:
        """Stage 1's levels on the selected columns: thermometer bits recomputed from ``xs`` (a
        comparison costs less than a column gather), the hidden levels the plan reads gathered."""
        assert self._res is not None
        used = self._res.s1_levels
        empty = np.zeros((0, len(sel)), dtype=np.bool_)
        out = [self._s1.bits(xs)[: self._s1.n_bits] if 0 in used else empty]
        return out + [np.take(lv, sel, axis=1) if k in used else empty for k, lv in enumerate(levels[1:], start=1)]

    def _stage2(self, xt: np.ndarray, levels: list[np.ndarray] | None) -> np.ndarray:
        """int32 ``[n, 1 + K2]``: ``stage2_logit``, then the member's family logits (if any)."""
        if self._res is not None and levels is not None:
            return self._res.run(xt, levels).T
        assert self._s2 is not None
        r = self._s2.run(xt)
        out: np.ndarray = r["s2"] if self._k2 == 0 else np.concatenate([r["s2"], r["fam"]], axis=1)
        return out

    def _output(self, b: np.ndarray, f: np.ndarray, s: np.ndarray) -> EngineOutput:
        """Contiguous :class:`EngineOutput` from one run's (bin, fam, s2 ``[n, 1 + K2]``)."""
        f2 = np.ascontiguousarray(s[:, 1:]) if self._k2 else None
        return EngineOutput(np.ascontiguousarray(b), np.ascontiguousarray(f), np.ascontiguousarray(s[:, 0]), f2)

    def _run(self, x: np.ndarray, screen: Callable[[np.ndarray], np.ndarray] | None) -> EngineOutput:
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[0]
        sp = self._small
        if sp is not None and 0 < n <= sp.max_rows and x.ndim == 2 and x.shape[1] == sp.n_features:
            return sp.run(x, screen)
        if n <= self._chunk:
            return self._output(*self._chunk_run(np.ascontiguousarray(x.T), screen))
        out_b = np.empty(n, dtype=np.int32)
        out_f = np.empty((n, self._k), dtype=np.int32)
        out_s = np.empty((n, 1 + self._k2), dtype=np.int32)
        for lo in range(0, n, self._chunk):
            hi = min(lo + self._chunk, n)
            out_b[lo:hi], out_f[lo:hi], out_s[lo:hi] = self._chunk_run(np.ascontiguousarray(x[lo:hi].T), screen)
        return self._output(out_b, out_f, out_s)

    def run(self, x: np.ndarray) -> EngineOutput:
        return self._run(x, None)

    def run_cascade(self, x: np.ndarray, screen: Callable[[np.ndarray], np.ndarray]) -> EngineOutput:
        """Like :meth:`run`, but stage 2 runs only on rows where ``screen(bin_logit)`` is true;
        ``stage2_logit`` is 0 elsewhere (the scorer never reads it there, so verdicts are
        identical to :meth:`run`'s). ``screen`` must be elementwise: it is called once per
        chunk of at most ``chunk`` rows."""
        return self._run(x, screen)
