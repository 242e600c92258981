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
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sidecar.engines.base import EngineOutput
from sidecar.engines.pack import HEADS, TOWERS, load_pack

_LUT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_BITCOUNT = getattr(np, "bitwise_count", None)
#: largest |partial sum| a float32 accumulator holds exactly
_F32_EXACT = 1 << 24


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
    """A ±1 layer kept as bit-packed ``+1`` masks: one ``[H, 1]`` uint64 column per word."""

    def __init__(self, packed: np.ndarray) -> None:
        self.cols = [np.ascontiguousarray(packed[:, j])[:, None] for j in range(packed.shape[1])]

    def __call__(self, a_t: np.ndarray) -> np.ndarray:
        """``a_t``: uint64 ``[words, n]`` packed 0/1 inputs → int16 ``[H, n]`` accumulators."""
        h, n = self.cols[0].shape[0], a_t.shape[1]
        tmp = np.empty((h, n), dtype=np.uint64)
        cnt = np.empty((h, n), dtype=np.uint8)
        # |acc| <= number of input bits: int16 unless a layer is wider than 16k bits
        acc = np.zeros((h, n), dtype=np.int16 if len(self.cols) * 64 < 16_000 else np.int32)
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
        self.heads = {h: (_IntMat(p[f"{t}.W{h}"]), np.asarray(p[f"{t}.b{h}"], dtype=np.int32)) for h in HEADS[t]}

    def run(self, x_t: np.ndarray) -> dict[str, np.ndarray]:
        """``x_t``: float32 ``[F, n]`` (transposed features) → head name → int32 ``[n, k]``."""
        n = x_t.shape[1]
        nf, nb = len(self.feat), self.n_bits
        h = np.zeros((_words(nb) * 64, n), dtype=np.bool_)
        np.greater(x_t[self.feat], self.thr, out=h[:nf])
        if len(self.nan):
            np.isnan(x_t[self.nan], out=h[nf:nb])
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
        return {name: (m(h[:n_h]) + b[:, None]).T for name, (m, b) in self.heads.items()}


class NumpyEngine:
    name = "numpy"

    def __init__(self, npz_path: str | Path, chunk: int = 1024) -> None:
        self._p = load_pack(npz_path)
        self._chunk = chunk
        self._s1 = _Tower(self._p, TOWERS[0])
        self._s2 = _Tower(self._p, TOWERS[1])
        self._k = int(np.asarray(self._p[f"{TOWERS[0]}.Wfam"]).shape[1])

    def metadata(self) -> dict[str, str]:
        return dict(self._p["metadata"])

    @property
    def onnx_sha256(self) -> str:
        return str(self._p["onnx_sha256"])

    def run(self, x: np.ndarray) -> EngineOutput:
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[0]
        if n <= self._chunk:
            xt = np.ascontiguousarray(x.T)
            r1, r2 = self._s1.run(xt), self._s2.run(xt)
            return EngineOutput(
                bin_logit=np.ascontiguousarray(r1["bin"][:, 0]),
                fam_logits=np.ascontiguousarray(r1["fam"]),
                stage2_logit=np.ascontiguousarray(r2["s2"][:, 0]),
            )
        out_b = np.empty(n, dtype=np.int32)
        out_f = np.empty((n, self._k), dtype=np.int32)
        out_s = np.empty(n, dtype=np.int32)
        for lo in range(0, n, self._chunk):
            xs = np.ascontiguousarray(x[lo : lo + self._chunk].T)
            r1, r2 = self._s1.run(xs), self._s2.run(xs)
            hi = lo + xs.shape[1]
            out_b[lo:hi] = r1["bin"][:, 0]
            out_f[lo:hi] = r1["fam"]
            out_s[lo:hi] = r2["s2"][:, 0]
        return EngineOutput(bin_logit=out_b, fam_logits=out_f, stage2_logit=out_s)

    def run_cascade(self, x: np.ndarray, screen: Callable[[np.ndarray], np.ndarray]) -> EngineOutput:
        """Like :meth:`run`, but the stage-2 tower runs only on rows where ``screen(bin_logit)`` is
        true; ``stage2_logit`` is 0 elsewhere (the scorer never reads it there, so verdicts are
        identical to :meth:`run`'s). Saves the stage-2 work on flows the screen passes as benign."""
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[0]
        out_b = np.empty(n, dtype=np.int32)
        out_f = np.empty((n, self._k), dtype=np.int32)
        for lo in range(0, n, self._chunk):
            r1 = self._s1.run(np.ascontiguousarray(x[lo : lo + self._chunk].T))
            hi = min(lo + self._chunk, n)
            out_b[lo:hi] = r1["bin"][:, 0]
            out_f[lo:hi] = r1["fam"]
        out_s = np.zeros(n, dtype=np.int32)
        rows = np.flatnonzero(screen(out_b))
        for lo in range(0, len(rows), self._chunk):
            sel = rows[lo : lo + self._chunk]
            out_s[sel] = self._s2.run(np.ascontiguousarray(x[sel].T))["s2"][:, 0]
        return EngineOutput(bin_logit=out_b, fam_logits=out_f, stage2_logit=out_s)

