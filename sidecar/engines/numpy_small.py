"""The numpy engine's small-batch path: a few rows per call, in few numpy calls.

At batch 1 a numpy call on a tiny array costs ~0.5-2 us whatever it computes, so latency
is the *number* of calls. :class:`SmallPlan` compiles the pack and the stage-2 residual
plan (:mod:`sidecar.engines.reuse`) once into flat arrays; a call is one straight
sequence of numpy operations on one boolean row state ``z`` (``[Z]`` for one row,
``[n, Z]`` for more): no per-call dict building, no chunk loop, no per-layer objects.

* **Thermometer**: one gather of every feature the model reads (stage 1's and the
  residual's thermometer and missing bits, as one flat index into the raveled rows), then
  one ``greater`` and one ``isnan`` written straight into ``z``.
* **The ±1 layers (stage 1's hidden layers) are bit-packed AND + popcount layers**, as in the
  large-batch path: the layer's input columns of ``z`` (zero padded to whole words) are
  packed with one ``np.packbits``; every unit's ``+1`` mask (and one extra all-inputs
  mask, giving ``m`` = the number of inputs on) is packed words too, so one AND, one
  popcount and one word sum give ``P`` = popcount(a & plus) for all units. With ±1
  weights ``acc = 2P - m``, so ``acc >= T`` iff ``P >= ceil((T + m) / 2)``: one compare
  against row ``m`` of a table built once. Integer, exact.
* **Every other integer layer and every head** (the residual steps, fused per depth, and
  both towers' heads, biases folded in as weights on a constant-1 column of ``z``) is a
  float32 product over one contiguous span of ``z``, as the large-batch path computes
  them: inputs are 0/1 and weights, biases and thresholds integers, and each output's
  ``sum |w| (+ |bias|)`` is checked below ``2**24`` when the plan is built, so every
  product and partial sum is an exactly representable integer in any summation order and
  the float32 result *is* the integer result. Outside that bound (or with threshold
  tables over ``TABLE_MAX`` entries) :class:`SmallPlan` raises ``ValueError`` and the
  engine uses its large-batch path for every batch size.

Outputs are the integers of the large-batch path and of onnxruntime, row for row
(tests/test_e6_small_batch.py checks every batch size 1..16). A call keeps no state
between calls (safe from several threads) and returns arrays the caller owns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sidecar.engines.base import EngineOutput
from sidecar.engines.pack import HEADS
from sidecar.engines.reuse import Residual, Source, tower_weights

#: largest |partial sum| a float32 accumulator holds exactly
F32_EXACT = 1 << 24
#: largest threshold table (entries) a ±1 layer may have on this path: (inputs + 1) * units
TABLE_MAX = 1 << 22
_LUT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_BITCOUNT = getattr(np, "bitwise_count", None)
#: an index into the row state: ``(..., slice)``, the same for one row ``[Z]`` and ``[n, Z]``
Ix = tuple[Any, slice]


def _ix(lo: int, hi: int) -> Ix:
    return (Ellipsis, slice(lo, hi))


def _ceil64(k: int) -> int:
    return -(-k // 64) * 64


def _span(
    parts: list[tuple[np.ndarray, np.ndarray]], ones: set[int], bias: np.ndarray | None = None
) -> tuple[int, int, np.ndarray]:
    """``[(z columns, int W [k, H])]`` (+ ``bias`` on the constant-1 column right after the span)
    → ``(lo, hi, float32 W over z[..., lo:hi])``, exactness checked."""
    lo = min(int(c.min()) for c, _ in parts)
    hi = max(int(c.max()) for c, _ in parts) + 1
    w = np.zeros((hi - lo, parts[0][1].shape[1]), dtype=np.int64)
    for c, m in parts:
        w[c - lo] += np.asarray(m, dtype=np.int64)
    if bias is not None:  # weights 0 up to the next constant-1 column (_layout puts one after the inputs)
        one = min((c for c in ones if c >= hi), default=None)
        if one is None:
            raise ValueError("no constant column after a head's inputs")
        pad = np.zeros((one - hi, w.shape[1]), dtype=np.int64)
        w = np.concatenate([w, pad, np.asarray(bias, dtype=np.int64)[None, :]])
        hi = one + 1
    if w.size and int(np.abs(w).sum(axis=0).max()) >= F32_EXACT:
        raise ValueError("a layer's |weights| sum exceeds the exact float32 range")
    return lo, hi, w.astype(np.float32)


def _thr32(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, dtype=np.int64)
    if t.size and int(np.abs(t).max()) >= F32_EXACT:
        raise ValueError("a threshold exceeds the exact float32 range")
    return t.astype(np.float32)


def _pm1_layer(w: np.ndarray, t: np.ndarray, c_in: np.ndarray) -> tuple[int, int, np.ndarray, np.ndarray]:
    """A ±1 layer (``w`` [inputs, H], thresholds ``t``) reading ``z`` columns ``c_in`` → ``(lo, hi,
    masks, table)``: ``z[..., lo:hi]`` (word aligned) is packed; ``masks`` [words, H+1] are the packed
    ``+1`` masks and the all-inputs mask; ``table[m]`` = ``ceil((t + m) / 2)``, the popcount a unit
    needs when ``m`` inputs are on (clipped to ``0..inputs+1``: same outcome, any dtype)."""
    lo, hi = int(c_in.min()) // 64 * 64, _ceil64(int(c_in.max()) + 1)
    n_in, h = w.shape
    masks = np.zeros((h + 1, hi - lo), dtype=np.bool_)
    masks[:h, c_in - lo] = (w == 1).T
    masks[h, c_in - lo] = True
    words = np.packbits(masks, axis=1)  # [H+1, bytes]: the byte order of np.packbits(input)
    if _BITCOUNT is not None:
        words = words.view(np.uint64)
    m = np.arange(n_in + 1, dtype=np.int64)[:, None]
    need = np.clip(-((-(np.asarray(t, dtype=np.int64)[None, :] + m)) // 2), 0, n_in + 1)
    # up to 3 words a unit's count (<= 192) and the table fit uint8: word counts are added as
    # uint8 rows; wider layers (and the byte lookup table) sum into int16/int32
    dt = np.uint8 if _BITCOUNT is not None and hi - lo <= 192 else np.int16 if n_in < 1 << 14 else np.int32
    return lo, hi, np.ascontiguousarray(words.T), need.astype(dt)


def _depths(res: Residual) -> list[int]:
    """Depth of each residual step: 1 + the deepest residual group it reads (stage 1 = 0)."""
    d: dict[int, int] = {}
    for i, st in enumerate(res.layers):
        d[i + 1] = 1 + max((d[s[1]] for s, _ in st.sources if s[0] == "r" and s[1] > 0), default=0)
    return [d[i + 1] for i in range(len(res.layers))]


class SmallPlan:
    """Stage 1 (popcount) + the stage-2 residual plan, compiled for batches of 1..``max_rows`` rows.

    ``p``: the pack dict (:func:`sidecar.engines.pack.load_pack`); ``res``: its residual
    plan; ``n_features``: width of the input rows. ``ValueError`` when the model is outside
    what this path computes exactly (see the module docstring).
    """

    def __init__(self, p: dict[str, Any], res: Residual, n_features: int, max_rows: int = 8) -> None:
        self.max_rows, self.n_features = max_rows, n_features
        s1f = np.asarray(p["s1.thermo_feat"], dtype=np.int64)
        s1n = np.asarray(p["s1.nan_feat"], dtype=np.int64)
        rf, rn = np.asarray(res.feat, dtype=np.int64), np.asarray(res.nan, dtype=np.int64)
        # bits: residual thermometer | stage-1 thermometer | stage-1 missing | residual missing
        idx = np.concatenate([rf, s1f, s1n, rn]).astype(np.intp)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n_features):
            raise ValueError("a thermometer reads a feature outside the input row")
        self.n_gt, self.n_bits = len(rf) + len(s1f), len(idx)
        self.thr = np.concatenate([np.asarray(res.thr), np.asarray(p["s1.thermo_thr"])]).astype(np.float32)
        #: flat gather index into raveled rows: [k] for one row; its first n rows ([n, k]) for n rows
        self.gather1 = idx
        self.gather = np.arange(max_rows)[:, None] * n_features + idx[None, :]

        layers1 = tower_weights(p, "s1")
        pm1 = [bool(p[f"s1.W{i}.pm1"]) for i in range(len(layers1))]
        cols, ones = self._layout(res, layers1, pm1, len(rf), len(s1f) + len(s1n))

        # stage 1: (is_pm1, z input index, W, T, z output index, n_units): pm1: W = packed masks
        # [words, H+1], T = threshold table [inputs+1, H]; else W float32 [inputs, H], T float32 [H]
        # (indices are prebuilt ``(..., slice)`` tuples: one code path for [Z] and [n, Z] states)
        self.s1: list[tuple[bool, Ix, np.ndarray, np.ndarray, Ix, tuple[Any, slice], tuple[Any, int]]] = []
        for k, (w, t) in enumerate(layers1):
            c_in, c_out = cols[("s1", k)], cols[("s1", k + 1)]
            o_lo, o_hi, h = int(c_out[0]), int(c_out[-1]) + 1, w.shape[1]
            if pm1[k]:
                if (w.shape[0] + 1) * h > TABLE_MAX:
                    raise ValueError(f"s1.W{k}: threshold table too large for the small-batch path")
                lo, hi, words, table = _pm1_layer(w, t, c_in)
                self.s1.append((True, _ix(lo, hi), words, table, _ix(o_lo, o_hi), _ix(0, h), (Ellipsis, h)))
            else:
                lo, hi, wf = _span([(c_in, w)], ones)
                self.s1.append((False, _ix(lo, hi), wf, _thr32(t), _ix(o_lo, o_hi), _ix(0, h), (Ellipsis, h)))
        wh = np.concatenate([np.asarray(p[f"s1.W{h}"]) for h in HEADS["s1"]], axis=1)  # bin | fam
        bh = np.concatenate([np.asarray(p[f"s1.b{h}"], dtype=np.int64) for h in HEADS["s1"]])
        lo, hi, wf = _span([(cols[("s1", len(layers1))], wh)], ones, bh)
        self.head1 = (_ix(lo, hi), wf)

        # stage 2: residual steps of one depth fused into one product (their groups are adjacent in z)
        self.s2: list[tuple[Ix, np.ndarray, np.ndarray, Ix]] = []
        depths = _depths(res)
        for d in sorted(set(depths)):
            steps = [i for i, di in enumerate(depths) if di == d]
            lo, hi, wf = self._fused(res, steps, cols, ones)
            out = np.concatenate([cols[("r", i + 1)] for i in steps])
            if not np.array_equal(out, np.arange(out[0], out[-1] + 1)):
                raise ValueError("residual groups of one depth are not adjacent")
            thr = _thr32(np.concatenate([np.asarray(res.layers[i].thr) for i in steps]))
            self.s2.append((_ix(lo, hi), wf, thr, _ix(int(out[0]), int(out[-1]) + 1)))
        lo, hi, wf = _span([(cols[s], m) for s, m in res.head.sources], ones, np.asarray(res.head.bias))
        self.head2 = (_ix(lo, hi), wf)
        self.k2 = len(np.asarray(res.head.bias)) - 1  # the member's family logits after stage2_logit
        self.gt, self.isnan = _ix(0, self.n_gt), _ix(self.n_gt, self.n_bits)
        self.word = [(Ellipsis, j, slice(None)) for j in range(3)]
        #: the initial state (constant-1 columns set): one row, and max_rows rows (sliced to n)
        self.template1 = np.zeros(self.width, dtype=np.bool_)
        self.template1[sorted(ones)] = True
        self.template = np.repeat(self.template1[None, :], max_rows, axis=0)

    def _layout(self, res: Residual, layers1: list[Any], pm1: list[bool], b0: int, n_s1_bits: int) -> tuple[
            dict[Source, np.ndarray], set[int]]:  # fmt: skip
        """Columns of ``z``: bits, stage-1 levels, residual groups in order (an input of a ±1 layer
        word aligned and padded), with a constant-1 column right after each head's last input."""
        order: list[tuple[Source, int, bool]] = [(("bits", 0), self.n_bits, bool(pm1 and pm1[0]))]
        for k, (w, _) in enumerate(layers1):  # pad a level that a ±1 layer reads
            order.append((("s1", k + 1), w.shape[1], k + 1 < len(pm1) and pm1[k + 1]))
        order += [(("r", i + 1), len(np.asarray(st.thr)), False) for i, st in enumerate(res.layers)]
        rank = {src: r for r, (src, _, _) in enumerate(order)}
        rank[("s1", 0)] = rank[("r", 0)] = 0
        last = {max(rank[s] for s, _ in res.head.sources), rank[("s1", len(layers1))]}
        cols: dict[Source, np.ndarray] = {}
        ones: set[int] = set()
        width = 0
        for r, (src, k, pad) in enumerate(order):
            lo = _ceil64(width) if pad else width
            cols[src] = np.arange(lo, lo + k)
            width = lo + (_ceil64(k) if pad else k)
            if r in last:
                ones.add(width)
                width += 1
        bits = cols.pop(("bits", 0))
        cols[("s1", 0)] = bits[b0 : b0 + n_s1_bits]
        cols[("r", 0)] = np.concatenate([bits[:b0], bits[b0 + n_s1_bits :]])
        self.width = width
        return cols, ones

    @staticmethod
    def _fused(res: Residual, steps: list[int], cols: dict[Source, np.ndarray], ones: set[int]) -> tuple[
            int, int, np.ndarray]:  # fmt: skip
        """One float32 matrix for several residual steps: their columns side by side."""
        ws = [_span([(cols[s], m) for s, m in res.layers[i].sources], ones) for i in steps]
        lo, hi = min(w[0] for w in ws), max(w[1] for w in ws)
        out = np.zeros((hi - lo, sum(w[2].shape[1] for w in ws)), dtype=np.float32)
        c = 0
        for a, b, w in ws:
            out[a - lo : b - lo, c : c + w.shape[1]] = w
            c += w.shape[1]
        return lo, hi, out

    def run(self, x: np.ndarray, screen: Callable[[np.ndarray], np.ndarray] | None = None) -> EngineOutput:
        """``x``: float32 ``[n, F]``, ``1 <= n <= max_rows`` → the graph's integers.

        With ``screen``, stage 2 runs only if it flags a row (``stage2_logit`` is 0 on the others)."""
        n = x.shape[0]
        if n == 1:
            z = self.template1.copy()
            g = x.ravel()[self.gather1]
        else:
            z = self.template[:n].copy()
            g = x.ravel()[self.gather[:n]]
        gt, isnan = self.gt, self.isnan
        np.greater(g[gt], self.thr, out=z[gt])
        np.isnan(g[isnan], out=z[isnan])
        for is_pm1, ix, w, t, out, units, m in self.s1:
            if is_pm1:
                a = np.packbits(z[ix], axis=-1)
                if _BITCOUNT is None:
                    pc = np.add.reduce(_LUT[a[..., None] & w], axis=-2, dtype=t.dtype)
                else:
                    c = _BITCOUNT(a.view(np.uint64)[..., None] & w)  # [.., words, H+1]
                    if t.dtype == np.uint8:  # <= 3 words: uint8 sums
                        word = self.word
                        pc = c[word[0]]
                        for j in range(1, c.shape[-2]):
                            pc = pc + c[word[j]]
                    else:
                        pc = np.add.reduce(c, axis=-2, dtype=t.dtype)
                np.greater_equal(pc[units], t[pc[m]], out=z[out])  # P >= ceil((T + m) / 2)
            else:
                np.greater_equal(np.dot(z[ix], w), t, out=z[out])
        ix, w = self.head1
        hd = np.dot(z[ix], w).astype(np.int32)
        if n == 1:
            bin_logit, fam = hd[:1], hd[None, 1:]
        else:
            bin_logit, fam = hd[:, 0].copy(), np.ascontiguousarray(hd[:, 1:])
        flagged = None if screen is None else screen(bin_logit)
        k2 = self.k2
        if flagged is not None and not (flagged[0] if n == 1 else flagged.any()):
            return EngineOutput(bin_logit, fam, np.zeros(n, dtype=np.int32), np.zeros((n, k2), np.int32) if k2 else None)
        for ix, w, t, out in self.s2:
            np.greater_equal(np.dot(z[ix], w), t, out=z[out])
        ix, w = self.head2
        s2 = np.dot(z[ix], w).astype(np.int32).reshape(n, 1 + k2)  # stage2_logit | the member's family logits
        if flagged is not None and n > 1:
            s2[~flagged] = 0
        f2 = np.ascontiguousarray(s2[:, 1:]) if k2 else None
        return EngineOutput(bin_logit, fam, s2[:, 0].copy(), f2)
