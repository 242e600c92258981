"""Binary neural network (straight-through estimator) and its exact integer export.

Model (one tower):

* **Thermometer** input: per feature up to :data:`N_THRESH` thresholds from training
  quantiles (duplicates removed), bit = ``x > thr`` (NaN compares False -> all zero),
  plus one ``isnan`` bit per feature.
* **Hidden layers**: ``acc = bits @ sign(W)`` (±1 weights, STE), BatchNorm, then a 0/1
  step activation ``h = BN(acc) >= 0`` (STE: hardtanh gradient).
* **Heads**: float linear heads (binary, family) on the last hidden bits, quantised
  for export to int8 weights + int32 bias with one scale per head
  (``logit ≈ int_logit * scale``; ``bin_scale`` goes to the model metadata).

Export folds each BatchNorm into an integer threshold: with ``s = sqrt(var + eps)``,
``BN(acc) >= 0`` is ``gamma * (acc - mu) / s + beta >= 0``. For ``gamma > 0`` that is
``acc >= mu - beta * s / gamma`` -> ``T = ceil(.)``; for ``gamma < 0`` it is
``acc <= t`` -> flip the weight column (``-acc >= -t``) -> ``T = ceil(-t)``;
``gamma == 0`` gives a constant unit. :func:`verify_folding` checks the integer
network reproduces the torch eval-mode bits exactly.

This module is one tower (stage 1, ``s1``); the stacked second stage is in
:mod:`sidecar.train.stage2`, training + export of the whole cascade in
:mod:`sidecar.train.cascade`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sidecar.features.labels import FAMILIES

log = logging.getLogger(__name__)


def minibatches(n: int, batch_size: int, g: torch.Generator) -> Iterator[np.ndarray]:
    """One epoch's shuffled minibatch row indices; a last batch of fewer than 2 rows is dropped
    (batch norm needs two). Every trainer here draws its permutation through this, from ``g``."""
    perm = torch.randperm(n, generator=g).numpy()
    for i in range(0, n, batch_size):
        idx = perm[i : i + batch_size]
        if len(idx) >= 2:
            yield idx

N_THRESH = 7
HIDDEN: tuple[int, ...] = (128, 64)


# ---------------------------------------------------------------- thermometer
@dataclass
class Thermometer:
    thermo_feat: np.ndarray  # int64 [B]
    thermo_thr: np.ndarray  # float32 [B]
    nan_feat: np.ndarray  # int64 [F]

    @property
    def n_bits(self) -> int:
        return len(self.thermo_feat) + len(self.nan_feat)

    def bits(self, X: np.ndarray) -> np.ndarray:
        """uint8 [n, B + F_nan], exactly as the ONNX graph computes them."""
        g = X[:, self.thermo_feat]
        with np.errstate(invalid="ignore"):
            t = g > self.thermo_thr[None, :]
        m = np.isnan(X[:, self.nan_feat])
        return np.concatenate([t, m], axis=1).astype(np.uint8)


def fit_thermometer(X: np.ndarray, n_thresh: int = N_THRESH) -> Thermometer:
    feats: list[int] = []
    thrs: list[float] = []
    qs = np.arange(1, n_thresh + 1) / (n_thresh + 1)
    for j in range(X.shape[1]):
        col = X[:, j]
        col = col[~np.isnan(col)]
        if col.size == 0:
            continue
        t = np.unique(np.quantile(col, qs).astype(np.float32))
        # a threshold equal to the max makes a constant-0 bit; drop it
        t = t[t < col.max()]
        feats += [j] * len(t)
        thrs += t.tolist()
    return Thermometer(
        np.asarray(feats, np.int64), np.asarray(thrs, np.float32), np.arange(X.shape[1], dtype=np.int64)
    )


# ---------------------------------------------------------------- model
class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    out = _SignSTE.apply(x)
    assert isinstance(out, torch.Tensor)
    return out


class BinaryLinear(nn.Module):
    """``acc = a @ sign(W)^T`` with a latent float weight (no bias)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in).uniform_(-1, 1))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a @ sign_ste(self.weight).t()


class BNN(nn.Module):
    def __init__(self, n_in: int, hidden: tuple[int, ...] = HIDDEN, n_fam: int = len(FAMILIES)) -> None:
        super().__init__()
        self.lins = nn.ModuleList()
        self.bns = nn.ModuleList()
        d = n_in
        for h in hidden:
            self.lins.append(BinaryLinear(d, h))
            self.bns.append(nn.BatchNorm1d(h))
            d = h
        self.head_bin = nn.Linear(d, 1)
        self.head_fam = nn.Linear(d, n_fam)

    def hidden_bits(self, a: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for lin, bn in zip(self.lins, self.bns, strict=True):
            a = (sign_ste(bn(lin(a))) + 1) / 2  # 0/1 bits
            out.append(a)
        return out

    def forward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden_bits(a)[-1]
        return self.head_bin(h).squeeze(1), self.head_fam(h)


# ---------------------------------------------------------------- export
def fold_bn(lin: BinaryLinear, bn: nn.BatchNorm1d) -> tuple[np.ndarray, np.ndarray]:
    """One binary layer -> ``(W int8 ±1 [B_in, H], T int32 [H])`` with its BatchNorm folded in."""
    assert bn.running_mean is not None and bn.running_var is not None
    w = torch.where(lin.weight.detach() >= 0, 1, -1).numpy().astype(np.int64).T.copy()  # [B_in, H]
    n_in = w.shape[0]
    mu = bn.running_mean.detach().double().numpy()
    s = np.sqrt(bn.running_var.detach().double().numpy() + bn.eps)
    gamma = bn.weight.detach().double().numpy()
    beta = bn.bias.detach().double().numpy()
    T = np.zeros(w.shape[1], np.int64)
    for k in range(w.shape[1]):
        if gamma[k] > 0:
            T[k] = math.ceil(mu[k] - beta[k] * s[k] / gamma[k] - 1e-9)
        elif gamma[k] < 0:
            w[:, k] = -w[:, k]
            T[k] = math.ceil(-(mu[k] - beta[k] * s[k] / gamma[k]) - 1e-9)
        else:
            T[k] = -n_in - 1 if beta[k] >= 0 else n_in + 1
    T = np.clip(T, -n_in - 1, n_in + 1)
    return w.astype(np.int8), T.astype(np.int32)


def fold_layers(model: BNN) -> list[tuple[np.ndarray, np.ndarray]]:
    """Hidden layers -> ``[(W int8 ±1 [B_in, H], T int32 [H])]`` with BN folded in."""
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    for lin, bn in zip(model.lins, model.bns, strict=True):
        assert isinstance(lin, BinaryLinear) and isinstance(bn, nn.BatchNorm1d)
        layers.append(fold_bn(lin, bn))
    return layers


def quant_head(lin: nn.Linear) -> tuple[np.ndarray, np.ndarray, float]:
    W = lin.weight.detach().double().numpy().T  # [H, k]
    b = lin.bias.detach().double().numpy()
    scale = max(float(np.abs(W).max()), 1e-12) / 127.0
    Wq = np.clip(np.round(W / scale), -127, 127).astype(np.int8)
    bq = np.round(b / scale).astype(np.int32)
    return Wq, bq, scale


def int_forward(tower: dict[str, Any], X: np.ndarray) -> dict[str, Any]:
    """Reference integer forward of one tower (what ONNX/numpy engines compute)."""
    th = Thermometer(tower["thermo_feat"], tower["thermo_thr"], tower["nan_feat"])
    a = th.bits(X).astype(np.float32)
    hs = []
    for W, T in tower["layers"]:
        a = ((a @ _f32(W)) >= T[None, :]).astype(np.float32)
        hs.append(a.astype(np.int32))
    h = "bin" if "Wbin" in tower else "s2"  # s2 towers have head "s2"; its logit is returned as bin_logit
    out: dict[str, Any] = {
        "hidden": hs,
        "bin_logit": (a @ _f32(tower[f"W{h}"]))[:, 0].astype(np.int32) + tower[f"b{h}"][0],
    }
    if "Wfam" in tower:
        out["fam_logits"] = (a @ _f32(tower["Wfam"])).astype(np.int32) + tower["bfam"][None, :]
    return out


def _f32(w: np.ndarray) -> np.ndarray:
    """Integer weights as float32 for a BLAS product with 0/1 inputs: exact (every partial sum is an
    integer below 2**24 in magnitude, checked), and ~20x faster than numpy's integer matmul."""
    if w.size and int(np.abs(np.asarray(w, dtype=np.int64)).sum(axis=0).max()) >= 1 << 24:
        raise ValueError("weights too large for an exact float32 product")
    return np.asarray(w, dtype=np.float32)


def torch_hidden_bits(model: BNN, bits: np.ndarray) -> list[np.ndarray]:
    model.eval()
    with torch.no_grad():
        hs = model.hidden_bits(torch.from_numpy(bits.astype(np.float32)))
    return [h.numpy().astype(np.int32) for h in hs]


def verify_folding(model: BNN, tower: dict[str, Any], X: np.ndarray) -> dict[str, Any]:
    """Compare folded integer hidden bits with torch eval-mode bits; returns mismatch counts."""
    th = Thermometer(tower["thermo_feat"], tower["thermo_thr"], tower["nan_feat"])
    ref = torch_hidden_bits(model, th.bits(X))
    got = int_forward(tower, X)["hidden"]
    mism = [int((r != g).sum()) for r, g in zip(ref, got, strict=True)]
    return {"rows": len(X), "bit_mismatches": mism, "exact": all(m == 0 for m in mism)}


def export_tower(model: BNN, th: Thermometer) -> dict[str, Any]:
    Wbin, bbin, sbin = quant_head(model.head_bin)
    Wfam, bfam, sfam = quant_head(model.head_fam)
    return {
        "thermo_feat": th.thermo_feat,
        "thermo_thr": th.thermo_thr,
        "nan_feat": th.nan_feat,
        "layers": fold_layers(model),
        "Wbin": Wbin,
        "bbin": bbin,
        "Wfam": Wfam,
        "bfam": bfam,
        "bin_scale": sbin,
        "fam_scale": sfam,
    }


def flatten_towers(towers: dict[str, dict[str, Any]]) -> dict[str, np.ndarray]:
    """``{"s1": {...}}`` -> flat ``{"s1.W0": ..., "s1.T0": ...}`` (contract initializer names)."""
    flat: dict[str, np.ndarray] = {}
    for name, t in towers.items():
        for k, v in t.items():
            if k == "layers":
                for i, (W, T) in enumerate(v):
                    flat[f"{name}.W{i}"] = W
                    flat[f"{name}.T{i}"] = T
            else:
                flat[f"{name}.{k}"] = np.asarray(v)
    return flat


def graph_towers(towers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Towers in ``sidecar.engines.graph.build_onnx``'s input form (``heads`` dict)."""
    out: dict[str, dict[str, Any]] = {}
    for name, t in towers.items():
        heads = {h: (t[f"W{h}"], t[f"b{h}"]) for h in ("bin", "fam", "s2") if f"W{h}" in t}
        out[name] = {k: t[k] for k in ("thermo_feat", "thermo_thr", "nan_feat", "layers")} | {"heads": heads}
    return out


def data_digest(X: np.ndarray, y: np.ndarray, chunk: int = 1 << 18) -> str:
    """sha256 of the float32 feature bytes then the label bytes (read in chunks: memmap-friendly)."""
    h = hashlib.sha256()
    for lo in range(0, len(X), chunk):
        h.update(np.ascontiguousarray(X[lo : lo + chunk]).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- training
def train_model(
    bits: np.ndarray,
    y_fam: np.ndarray,
    seed: int = 0,
    epochs: int = 5,
    hidden: tuple[int, ...] = HIDDEN,
    batch_size: int = 256,
    lr: float = 1e-2,
    progress: bool = False,
    lr_schedule: str = "cos",
    thermo: Thermometer | None = None,
) -> BNN:
    """Train stage 1 (binary + family heads); Adam, cosine learning-rate decay per epoch.

    ``bits`` is the thermometer code ``[n, B]``, or, when ``thermo`` is given, the raw feature
    matrix (an ``np.memmap`` is fine): each minibatch is then encoded on the fly, so the bit
    matrix of a large data set never has to fit in memory (same numbers either way).
    """
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    n_in = thermo.n_bits if thermo is not None else bits.shape[1]
    model = BNN(n_in, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    yf_all = np.asarray(y_fam, dtype=np.int64)
    g = torch.Generator().manual_seed(seed)
    n = len(yf_all)
    from tqdm import tqdm

    def batch(ii: np.ndarray) -> torch.Tensor:
        b = thermo.bits(np.asarray(bits[ii])) if thermo is not None else bits[ii]
        return torch.from_numpy(np.asarray(b, dtype=np.float32))

    for ep in tqdm(range(epochs), desc="stage 1 epochs", disable=not progress, unit="ep"):
        if lr_schedule == "cos":
            for grp in opt.param_groups:
                grp["lr"] = lr * 0.5 * (1 + math.cos(math.pi * ep / max(epochs, 1)))
        model.train()
        tot = 0.0
        for idx in minibatches(n, batch_size, g):
            yf = torch.from_numpy(yf_all[idx])
            lb, lf = model(batch(idx))
            loss = nn.functional.binary_cross_entropy_with_logits(
                lb, (yf != 0).float()
            ) + nn.functional.cross_entropy(lf, yf)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for lin in model.lins:
                    assert isinstance(lin, BinaryLinear)
                    lin.weight.clamp_(-1, 1)
            tot += float(loss.detach()) * len(idx)
        log.info("epoch %d loss %.4f", ep, tot / max(n, 1))
    model.eval()
    return model


def int_logits_chunked(
    tower: dict[str, Any], X: np.ndarray, chunk: int = 65536, keys: tuple[str, ...] = ("bin_logit", "fam_logits")
) -> dict[str, np.ndarray]:
    """:func:`int_forward` heads ``keys`` (those the tower has; no hidden bits) over ``X`` in chunks, written
    into arrays allocated once: bounded memory beside the outputs (on 12.8 M training rows the family
    logits alone are 410 MB, so callers that need only ``bin_logit`` ask for it)."""
    outs: dict[str, np.ndarray] = {}
    for lo in range(0, len(X), chunk):
        o = int_forward(tower, np.asarray(X[lo : lo + chunk]))
        for k in keys:
            if k in o:
                if k not in outs:
                    outs[k] = np.empty((len(X), *o[k].shape[1:]), dtype=o[k].dtype)
                outs[k][lo : lo + len(o[k])] = o[k]
    return outs


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    tp = int(((p == 1) & (y == 1)).sum())
    fp = int(((p == 1) & (y == 0)).sum())
    fn = int(((p == 0) & (y == 1)).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"accuracy": float((p == y).mean()), "precision": prec, "recall": rec, "f1": f1}
