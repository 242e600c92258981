"""Stage 2 without recomputing stage 1: an exact residual plan for tower ``s2``.

The shipped cascade's tower ``s2`` reads only ``x`` (the graph contract), so it
recomputes stage 1's units next to its own, duplicates thermometer bits (and
cancels them with +1/-1 weights) and passes units through identity columns.
This module finds that work by **value numbering** over both towers:

* a thermometer bit is the value ``x[:, f] > thr`` (keyed by ``f`` and the float32
  bit pattern of ``thr``) or ``isnan(x[:, f])``; duplicated bits get one number;
* a unit ``acc >= T`` with ``acc = sum_r W[r] * in[r]`` over 0/1 inputs is keyed by its
  weights **merged** over the input numbers (duplicates summed, zeros dropped) and
  ``T``; equal keys are the same 0/1 function of ``x``. A unit reading one input
  ``a`` with weight ``w >= T > 0`` is ``a`` itself (an identity pass-through).

Every ``s2`` value that stage 1 already computed is read from stage 1's levels (the
thermometer bits and each hidden layer); only the rest is computed, layer by
layer, with the merged integer weights. All of it is integer arithmetic on 0/1
values, so ``stage2_logit`` is the graph's, bit for bit (tests compare it with
the graph as written). Pure numpy: both engines run the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sidecar.engines.pack import TOWERS, heads_of

#: a source of 0/1 columns: ``("s1", level)`` (stage 1's level: 0 = thermometer bits,
#: ``i + 1`` = hidden layer ``i``'s output) or ``("r", i)`` (this plan's group: 0 = its
#: thermometer bits, ``i + 1`` = the units of ``layers[i]``)
Source = tuple[str, int]


@dataclass
class Step:
    """``acc = sum(src @ W for src, W in sources) (+ bias)``; a layer keeps ``acc >= thr``."""

    sources: list[tuple[Source, np.ndarray]]  # (source, int64 W [k_src, H])
    thr: np.ndarray | None = None  # int32 [H] for a layer, None for the head
    bias: np.ndarray | None = None  # int32 [H] for the head


@dataclass
class Residual:
    """What tower ``s2`` needs beyond stage 1's levels."""

    feat: np.ndarray  # int64 [B]: new thermometer bits x[:, feat] > thr ...
    thr: np.ndarray  # float32 [B]
    nan: np.ndarray  # int64 [M]: ... then isnan(x[:, nan])  (group ("r", 0))
    layers: list[Step] = field(default_factory=list)  # group ("r", i + 1) = layers[i], in dependency order
    head: Step = field(default_factory=lambda: Step([]))  # column 0: stage2_logit; then fam2_logits if any
    s1_levels: list[int] = field(default_factory=list)  # stage-1 levels the plan reads
    s1_widths: dict[int, int] = field(default_factory=dict)  # columns of each stage-1 level

    def n_bits(self) -> int:
        return len(self.feat) + len(self.nan)

    def max_abs_weight(self) -> int:
        ws = [w for st in [*self.layers, self.head] for _, w in st.sources]
        return max((int(np.abs(w).max()) for w in ws if w.size), default=0)


def tower_weights(p: dict[str, Any], t: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(W int64 [B_in, H], T int32 [H])]`` of tower ``t`` from a pack dict (packed ±1 layers unpacked)."""
    out = []
    for i in range(int(p[f"{t}.n_layers"])):
        w = f"{t}.W{i}"
        if bool(p[w + ".pm1"]):
            b_in, h = (int(v) for v in p[w + ".shape"])
            words = np.ascontiguousarray(p[w + ".packed"])  # [H, words] uint64, packbits order
            plus = np.unpackbits(words.view(np.uint8), axis=1)[:, :b_in]  # [H, B_in]
            mat = np.where(plus.T.astype(bool), 1, -1).astype(np.int64)
            if mat.shape != (b_in, h):
                raise ValueError(f"{w}: packed shape {mat.shape} != {(b_in, h)}")
        else:
            mat = np.asarray(p[w], dtype=np.int64)
        out.append((mat, np.asarray(p[f"{t}.T{i}"], dtype=np.int32)))
    return out


class _Numbering:
    def __init__(self) -> None:
        self.ids: dict[tuple[Any, ...], int] = {}
        self.defs: list[tuple[Any, ...]] = []  # id -> definition

    def intern(self, key: tuple[Any, ...], definition: tuple[Any, ...]) -> int:
        got = self.ids.get(key)
        if got is None:
            got = self.ids[key] = len(self.defs)
            self.defs.append(definition)
        return got

    def bits(self, feat: np.ndarray, thr: np.ndarray, nan: np.ndarray) -> list[int]:
        pat = np.asarray(thr, dtype=np.float32).view(np.uint32)
        ids = [self.intern(("g", int(f), int(b)), ("g", int(f), float(t))) for f, b, t in zip(feat, pat, thr, strict=True)]
        return ids + [self.intern(("n", int(f)), ("n", int(f))) for f in nan]

    def merged(self, in_ids: list[int], w: np.ndarray) -> list[dict[int, int]]:
        """Per column of ``w`` [len(in_ids), H]: input number -> summed weight (zeros dropped)."""
        uniq, inv = np.unique(np.asarray(in_ids, dtype=np.int64), return_inverse=True)
        m = np.zeros((len(uniq), w.shape[1]), dtype=np.int64)
        np.add.at(m, inv, w)
        cols = []
        for c in range(w.shape[1]):
            nz = np.flatnonzero(m[:, c])
            cols.append({int(uniq[r]): int(m[r, c]) for r in nz})
        return cols

    def layer(self, in_ids: list[int], w: np.ndarray, thr: np.ndarray) -> list[int]:
        out = []
        for col, t in zip(self.merged(in_ids, w), thr.tolist(), strict=True):
            if len(col) == 1:
                (a, wa), = col.items()
                if wa >= t > 0:  # 0/1 input: (wa * a >= t) == a
                    out.append(a)
                    continue
            key = ("u", tuple(sorted(col.items())), int(t))
            out.append(self.intern(key, ("u", col, int(t))))
        return out


def plan_residual(p: dict[str, Any]) -> Residual:
    """The residual plan of tower ``s2`` given stage 1's levels (pack dict, see :mod:`sidecar.engines.pack`)."""
    num = _Numbering()
    where: dict[int, Source] = {}  # value number -> stage-1 source (first place seen)
    col_of: dict[int, int] = {}
    levels = [num.bits(p["s1.thermo_feat"], p["s1.thermo_thr"], p["s1.nan_feat"])]
    for w, t in tower_weights(p, "s1"):
        levels.append(num.layer(levels[-1], w, t))
    widths = {lv: len(ids) for lv, ids in enumerate(levels)}
    for lv, ids in enumerate(levels):
        for c, v in enumerate(ids):
            if v not in where:
                where[v], col_of[v] = ("s1", lv), c

    ids2 = num.bits(p["s2.thermo_feat"], p["s2.thermo_thr"], p["s2.nan_feat"])
    for w, t in tower_weights(p, "s2"):
        ids2 = num.layer(ids2, w, t)
    heads2 = heads_of(p, "s2")  # "s2" (the binary head, column 0), then the member's "fam" if any
    w_head = np.concatenate([np.asarray(p[f"s2.W{h}"], dtype=np.int64) for h in heads2], axis=1)
    head_cols = num.merged(ids2, w_head)

    depth: dict[int, int] = {}  # new value -> group depth (0 = thermometer bit)

    def need(v: int) -> None:
        if v in where or v in depth:
            return
        d = num.defs[v]
        if d[0] != "u":
            depth[v] = 0
            return
        for a in d[1]:
            need(a)
        depth[v] = 1 + max((depth[a] for a in d[1] if a not in where), default=0)

    for col in head_cols:
        for v in col:
            need(v)
    bits = sorted(v for v in depth if depth[v] == 0)
    g_bits = [v for v in bits if num.defs[v][0] == "g"]
    n_bits = [v for v in bits if num.defs[v][0] == "n"]
    src_of: dict[int, Source] = dict(where)
    width: dict[Source, int] = {("s1", lv): n for lv, n in widths.items()}
    for c, v in enumerate(g_bits + n_bits):
        src_of[v], col_of[v] = ("r", 0), c
    width[("r", 0)] = len(bits)
    # units grouped by depth and by the set of sources they read: one matmul per group, without
    # the zero blocks a whole-depth matmul would carry (e.g. score bits next to own units)
    groups: dict[tuple[int, tuple[Source, ...]], list[int]] = {}
    for d in range(1, max(depth.values(), default=0) + 1):
        here: dict[tuple[Source, ...], list[int]] = {}
        for v in sorted(u for u in depth if depth[u] == d):
            here.setdefault(tuple(sorted({src_of[a] for a in num.defs[v][1]})), []).append(v)
        for srcs, vs in here.items():
            gid: Source = ("r", len(groups) + 1)
            groups[(d, srcs)] = vs
            width[gid] = len(vs)
            for c, v in enumerate(vs):
                src_of[v], col_of[v] = gid, c
    used_s1: set[int] = set()

    def step(cols: list[dict[int, int]]) -> list[tuple[Source, np.ndarray]]:
        mats: dict[Source, np.ndarray] = {}
        for c, col in enumerate(cols):
            for v, wv in col.items():
                s = src_of[v]
                if s not in mats:
                    mats[s] = np.zeros((width[s], len(cols)), dtype=np.int64)
                mats[s][col_of[v], c] = wv
                if s[0] == "s1":
                    used_s1.add(s[1])
        return sorted(mats.items())

    res = Residual(
        feat=np.array([num.defs[v][1] for v in g_bits], dtype=np.int64),
        thr=np.array([num.defs[v][2] for v in g_bits], dtype=np.float32),
        nan=np.array([num.defs[v][1] for v in n_bits], dtype=np.int64),
    )
    for vs in groups.values():  # group ("r", i + 1) is layers[i]
        res.layers.append(Step(step([num.defs[v][1] for v in vs]), thr=np.array([num.defs[v][2] for v in vs], dtype=np.int32)))
    res.head = Step(step(head_cols), bias=np.concatenate([np.asarray(p[f"s2.b{h}"], dtype=np.int32).reshape(-1)
                                                          for h in heads2]))  # fmt: skip
    res.s1_levels = sorted(used_s1)
    res.s1_widths = widths
    return res


def pack_dict_from_inits(inits: dict[str, np.ndarray]) -> dict[str, Any]:
    """The contract initializers (``<tower>.<name>``) in the pack-dict form :func:`plan_residual` reads."""
    p: dict[str, Any] = {}
    for t in TOWERS:
        p[f"{t}.thermo_feat"] = np.asarray(inits[f"{t}.thermo_feat"], dtype=np.int64)
        p[f"{t}.thermo_thr"] = np.asarray(inits[f"{t}.thermo_thr"], dtype=np.float32)
        nf = inits.get(f"{t}.nan_feat")
        p[f"{t}.nan_feat"] = np.asarray(nf, dtype=np.int64) if nf is not None else np.zeros(0, np.int64)
        n = 0
        while f"{t}.W{n}" in inits:
            p[f"{t}.W{n}"] = np.asarray(inits[f"{t}.W{n}"])
            p[f"{t}.W{n}.pm1"] = False
            p[f"{t}.T{n}"] = np.asarray(inits[f"{t}.T{n}"])
            n += 1
        p[f"{t}.n_layers"] = n
        for h in heads_of(inits, t):
            p[f"{t}.W{h}"] = np.asarray(inits[f"{t}.W{h}"])
            p[f"{t}.b{h}"] = np.asarray(inits[f"{t}.b{h}"])
    return p


def bin_logit_bounds(p: dict[str, Any]) -> tuple[int, int]:
    """The smallest and largest ``bin_logit`` the model can output (its head reads 0/1 units):
    a screen evaluated on this range once is a lookup table for every possible row."""
    w = np.asarray(p["s1.Wbin"], dtype=np.int64)[:, 0]
    b = int(np.asarray(p["s1.bbin"], dtype=np.int64).reshape(-1)[0])
    return b + int(w[w < 0].sum()), b + int(w[w > 0].sum())
