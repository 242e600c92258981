"""Stage 2: a stacked BNN that re-examines the flows stage 1 flags, with exact integer export.

Inputs of stage 2 (all bits, so both engines agree exactly):

* its **own thermometer**: stage 1's thresholds plus :data:`S2_THRESH` finer quantile
  thresholds per feature, fitted on the flows stage 1 flags (the hard negatives live there);
* the **stage-1 score as bits**: ``bin_logit >= t_k`` for :data:`N_SCORE_BITS` integer
  thresholds ``t_k`` (quantiles of the stage-1 logit over flagged training rows).

Trained on the training rows stage 1 flags (binary target, benign rows up-weighted).

Export within the graph contract (one tower ``s2``: thermometer -> integer layers -> head).
The contract's ``s2`` thermometer reads only ``x``, so the tower *recomputes* stage 1 next
to its own units: ``L0``/``L1`` hold stage 1's ±1 columns beside stage 2's, and ``L2``
turns stage 1's hidden bits into the score bits. Columns of stage 1 must ignore stage 2's
inputs; instead of zero weights (which would force an int8 matrix) stage 2's bits enter
**twice** (identical copies: duplicated thermometer thresholds, duplicated hidden units with
identical weights and thresholds) and stage 1 columns weigh the copies ``+1`` and ``-1``,
which cancel exactly. So ``L0``, ``L1`` and ``L3`` are ±1 (popcount in the numpy engine);
only ``L2`` (score bits = stage 1's int8 head, plus an identity pass-through) is a small
int8 matrix, which the contract allows for ``s2``.

``s2`` layers: ``L0`` [B2, 128+2*H0] ±1, ``L1`` [128+2*H0, 64+H1] ±1,
``L2`` [64+H1, S+H1] int8, ``L3`` [S+H1, H2] ±1, head ``s2`` [H2, 1] int8.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sidecar.train.bnn import (
    BinaryLinear,
    Thermometer,
    fit_thermometer,
    fold_bn,
    minibatches,
    quant_head,
    sign_ste,
)

log = logging.getLogger(__name__)

S2_THRESH = 15
N_SCORE_BITS = 8
S2_HIDDEN: tuple[int, int, int] = (32, 32, 16)
NEG_WEIGHT_CAP = 20.0


def _step(x: torch.Tensor) -> torch.Tensor:
    return (sign_ste(x) + 1) / 2


class Stage2Net(nn.Module):
    """Trainable part of stage 2 (the recomputed stage-1 columns are fixed inputs here)."""

    def __init__(self, n_bits: int, n_h0_s1: int, n_score: int, hidden: tuple[int, int, int]) -> None:
        super().__init__()
        h0, h1, h2 = hidden
        self.l0, self.bn0 = BinaryLinear(n_bits, h0), nn.BatchNorm1d(h0)
        self.l1, self.bn1 = BinaryLinear(n_h0_s1 + 2 * h0, h1), nn.BatchNorm1d(h1)
        self.l2, self.bn2 = BinaryLinear(n_score + h1, h2), nn.BatchNorm1d(h2)
        self.head = nn.Linear(h2, 1)

    def hidden_bits(
        self, bits: torch.Tensor, h0_s1: torch.Tensor, score: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a0 = _step(self.bn0(self.l0(bits)))
        a1 = _step(self.bn1(self.l1(torch.cat([h0_s1, a0, a0], dim=1))))
        a2 = _step(self.bn2(self.l2(torch.cat([score, a1], dim=1))))
        return a0, a1, a2

    def forward(self, bits: torch.Tensor, h0_s1: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden_bits(bits, h0_s1, score)[2]).squeeze(1)


@dataclass
class Stage2Inputs:
    thermo: Thermometer  # s2 thermometer: [s1 thr, own thr, own thr (copy)] + s1 nan bits
    n_s1_thr: int
    n_own: int
    score_thr: np.ndarray  # int64 [S], on stage 1's integer bin_logit


def s1_hidden_and_logit(s1: dict[str, Any], X: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    th = Thermometer(s1["thermo_feat"], s1["thermo_thr"], s1["nan_feat"])
    a = th.bits(X).astype(np.int32)
    hs = []
    for W, T in s1["layers"]:
        a = ((a @ W.astype(np.int32)) >= T[None, :]).astype(np.int32)
        hs.append(a)
    logit = (a @ s1["Wbin"].astype(np.int32))[:, 0] + int(s1["bbin"][0])
    return hs, logit


def fit_inputs(s1: dict[str, Any], X_flagged: np.ndarray, logit_flagged: np.ndarray) -> Stage2Inputs:
    own = fit_thermometer(X_flagged, S2_THRESH)
    feat = np.concatenate([s1["thermo_feat"], own.thermo_feat, own.thermo_feat])
    thr = np.concatenate([s1["thermo_thr"], own.thermo_thr, own.thermo_thr]).astype(np.float32)
    qs = np.arange(1, N_SCORE_BITS + 1) / (N_SCORE_BITS + 1)
    st = np.unique(np.ceil(np.quantile(logit_flagged, qs)).astype(np.int64)) if len(logit_flagged) else np.zeros(1)
    return Stage2Inputs(
        Thermometer(feat.astype(np.int64), thr, np.asarray(s1["nan_feat"], np.int64)),
        len(s1["thermo_feat"]),
        len(own.thermo_feat),
        st.astype(np.int64),
    )


def score_bits(logit: np.ndarray, score_thr: np.ndarray) -> np.ndarray:
    return (logit[:, None] >= score_thr[None, :]).astype(np.uint8)


def train_stage2(
    inp: Stage2Inputs,
    X: np.ndarray,
    y_bin: np.ndarray,
    s1: dict[str, Any],
    seed: int = 0,
    epochs: int = 20,
    hidden: tuple[int, int, int] = S2_HIDDEN,
    batch_size: int = 128,
    lr: float = 1e-2,
    neg_weight_cap: float = NEG_WEIGHT_CAP,
    progress: bool = False,
) -> Stage2Net:
    """Train on the (flagged) rows ``X`` with binary labels ``y_bin``."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    y_all = np.asarray(y_bin, dtype=np.float32)

    def batch(ii: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xb = np.asarray(X[ii])
        hs, logit = s1_hidden_and_logit(s1, xb)
        return (
            torch.from_numpy(inp.thermo.bits(xb).astype(np.float32)),
            torch.from_numpy(hs[0].astype(np.float32)),
            torch.from_numpy(score_bits(logit, inp.score_thr).astype(np.float32)),
        )

    n_h0 = s1["layers"][0][0].shape[1]
    net = Stage2Net(inp.thermo.n_bits, n_h0, len(inp.score_thr), hidden)
    n_pos = float(y_all.sum())
    n_neg = float(len(y_all) - n_pos)
    # benign rows are rare among flagged flows: weigh them up (capped) so stage 2 learns to veto
    w_neg = min(max(n_pos / max(n_neg, 1.0), 1.0), neg_weight_cap)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    n = len(y_all)
    from tqdm import tqdm

    for ep in tqdm(range(epochs), desc="stage 2 epochs", disable=not progress, unit="ep"):
        net.train()
        tot = 0.0
        for idx in minibatches(n, batch_size, g):
            y = torch.from_numpy(y_all[idx])
            out = net(*batch(idx))
            wt = torch.where(y > 0, 1.0, w_neg)
            loss = nn.functional.binary_cross_entropy_with_logits(out, y, weight=wt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for lin in (net.l0, net.l1, net.l2):
                    lin.weight.clamp_(-1, 1)
            tot += float(loss.detach()) * len(idx)
        log.debug("stage2 epoch %d loss %.4f", ep, tot / max(n, 1))
    net.eval()
    return net


def export_stage2(net: Stage2Net, inp: Stage2Inputs, s1: dict[str, Any]) -> dict[str, Any]:
    """The contract tower ``s2`` (see the module docstring for the layout)."""
    (W10, T10), (W11, T11) = s1["layers"]
    n_thr, n_own = inp.n_s1_thr, inp.n_own
    n_nan = len(inp.thermo.nan_feat)
    b2 = n_thr + 2 * n_own + n_nan
    w0, t0 = fold_bn(net.l0, net.bn0)  # [b2, H0]
    h0 = w0.shape[1]
    own_rows = slice(n_thr, n_thr + n_own)
    dup_rows = slice(n_thr + n_own, n_thr + 2 * n_own)
    s1cols = np.empty((b2, W10.shape[1]), np.int8)
    s1cols[:n_thr] = W10[:n_thr]
    s1cols[n_thr + 2 * n_own :] = W10[n_thr:]
    s1cols[own_rows] = 1
    s1cols[dup_rows] = -1
    L0 = (np.concatenate([s1cols, w0, w0], axis=1), np.concatenate([T10, t0, t0]).astype(np.int32))

    w1, t1 = fold_bn(net.l1, net.bn1)  # [128 + 2*H0, H1]
    n_h0 = W11.shape[0]
    s1c1 = np.empty((n_h0 + 2 * h0, W11.shape[1]), np.int8)
    s1c1[:n_h0] = W11
    s1c1[n_h0 : n_h0 + h0] = 1
    s1c1[n_h0 + h0 :] = -1
    L1 = (np.concatenate([s1c1, w1], axis=1), np.concatenate([T11, t1]).astype(np.int32))

    h1 = w1.shape[1]
    n_h1 = W11.shape[1]
    S = len(inp.score_thr)
    wbin = s1["Wbin"][:, 0].astype(np.int64)
    if np.abs(wbin).max() > 127:
        raise ValueError("stage 1 head does not fit int8")
    W2 = np.zeros((n_h1 + h1, S + h1), np.int8)
    W2[:n_h1, :S] = wbin[:, None]
    W2[n_h1 + np.arange(h1), S + np.arange(h1)] = 1
    T2 = np.concatenate([inp.score_thr - int(s1["bbin"][0]), np.ones(h1, np.int64)])
    lim = np.iinfo(np.int32)
    if T2.min() < lim.min or T2.max() > lim.max:
        raise ValueError("score threshold out of int32 range")
    L2 = (W2, T2.astype(np.int32))

    L3 = fold_bn(net.l2, net.bn2)
    Ws2, bs2, s2_scale = quant_head(net.head)
    return {
        "thermo_feat": inp.thermo.thermo_feat,
        "thermo_thr": inp.thermo.thermo_thr,
        "nan_feat": inp.thermo.nan_feat,
        "layers": [L0, L1, L2, L3],
        "Ws2": Ws2,
        "bs2": bs2,
        "s2_scale": s2_scale,
    }


def torch_logit(net: Stage2Net, inp: Stage2Inputs, s1: dict[str, Any], X: np.ndarray) -> np.ndarray:
    """Float stage-2 logits of the torch model (eval mode), for export checks."""
    hs, logit = s1_hidden_and_logit(s1, X)
    with torch.no_grad():
        out = net(
            torch.from_numpy(inp.thermo.bits(X).astype(np.float32)),
            torch.from_numpy(hs[0].astype(np.float32)),
            torch.from_numpy(score_bits(logit, inp.score_thr).astype(np.float32)),
        )
    return np.asarray(out.numpy(), dtype=np.float64)


def calibrate_offset(logit: np.ndarray, scale: float, y_bin: np.ndarray) -> float:
    """``s2_offset`` minimising errors (FP + FN) of ``logit * scale + offset >= 0`` on held-back rows."""
    if len(logit) == 0:
        return 0.0
    z = np.unique(logit) * scale
    # candidate cut points between consecutive values, plus "veto nothing"
    cuts = np.concatenate([[z[0] - 1.0], (z[:-1] + z[1:]) / 2]) if len(z) > 1 else np.array([z[0] - 1.0])
    v = logit * scale
    errs = [int(((v >= c) != (y_bin == 1)).sum()) for c in cuts]
    best = int(np.argmin(errs))  # first minimum: the most permissive cut among the best
    return float(-cuts[best])
