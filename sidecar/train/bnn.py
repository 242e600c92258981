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

Tower ``s2`` is a PLACEHOLDER until a real stage-2 model exists: it is a copy of
``s1``'s thermometer, hidden layers and binary head (exported as head ``s2``:
``s2.Ws2``/``s2.bs2``), so ``stage2_logit == bin_logit`` and the cascade reduces to
stage 1 (``threshold2`` = ``threshold1`` = 0.5, ``s2_scale`` = ``bin_scale``).

Files written by :func:`train_and_export`: ``towers.npz`` (flat ``<tower>.<name>``
keys: ``thermo_feat, thermo_thr, nan_feat, W{i}, T{i}``, heads ``Wbin, bbin, Wfam,
bfam`` / ``Ws2, bs2``, scales), ``metrics.json`` (metrics + metadata strings),
``data_report.json`` and, when ``sidecar.engines.graph`` exists, ``model.onnx`` (+ ``.sha256``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sidecar.features.labels import FAMILIES
from sidecar.features.schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION

log = logging.getLogger(__name__)

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
def fold_layers(model: BNN) -> list[tuple[np.ndarray, np.ndarray]]:
    """Hidden layers -> ``[(W int8 ±1 [B_in, H], T int32 [H])]`` with BN folded in."""
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    for lin, bn in zip(model.lins, model.bns, strict=True):
        assert isinstance(lin, BinaryLinear) and isinstance(bn, nn.BatchNorm1d)
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
        layers.append((w.astype(np.int8), T.astype(np.int32)))
    return layers


def _quant_head(lin: nn.Linear) -> tuple[np.ndarray, np.ndarray, float]:
    W = lin.weight.detach().double().numpy().T  # [H, k]
    b = lin.bias.detach().double().numpy()
    scale = max(float(np.abs(W).max()), 1e-12) / 127.0
    Wq = np.clip(np.round(W / scale), -127, 127).astype(np.int8)
    bq = np.round(b / scale).astype(np.int32)
    return Wq, bq, scale


def int_forward(tower: dict[str, Any], X: np.ndarray) -> dict[str, Any]:
    """Reference integer forward of one tower (what ONNX/numpy engines compute)."""
    th = Thermometer(tower["thermo_feat"], tower["thermo_thr"], tower["nan_feat"])
    a = th.bits(X).astype(np.int32)
    hs = []
    for W, T in tower["layers"]:
        a = ((a @ W.astype(np.int32)) >= T[None, :]).astype(np.int32)
        hs.append(a)
    h = "bin" if "Wbin" in tower else "s2"  # s2 towers have head "s2"; its logit is returned as bin_logit
    out: dict[str, Any] = {
        "hidden": hs,
        "bin_logit": (a @ tower[f"W{h}"].astype(np.int32))[:, 0] + tower[f"b{h}"][0],
    }
    if "Wfam" in tower:
        out["fam_logits"] = a @ tower["Wfam"].astype(np.int32) + tower["bfam"][None, :]
    return out


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
    Wbin, bbin, sbin = _quant_head(model.head_bin)
    Wfam, bfam, sfam = _quant_head(model.head_fam)
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


def _onnx_check(blob: bytes, towers: dict[str, dict[str, Any]], X: np.ndarray) -> dict[str, Any]:
    """Run the ONNX model with onnxruntime (if installed) and compare with :func:`int_forward`."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "onnxruntime not installed"}
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    b, f, s2 = sess.run(["bin_logit", "fam_logits", "stage2_logit"], {"x": X.astype(np.float32)})
    r1, r2 = int_forward(towers["s1"], X), int_forward(towers["s2"], X)
    return {
        "rows": len(X),
        "bin_equal": bool(np.array_equal(b, r1["bin_logit"])),
        "fam_equal": bool(np.array_equal(f, r1["fam_logits"])),
        "s2_equal": bool(np.array_equal(s2, r2["bin_logit"])),
    }


def data_digest(X: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256(np.ascontiguousarray(X).tobytes())
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
) -> BNN:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = BNN(bits.shape[1], hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xb = torch.from_numpy(bits.astype(np.float32))
    yf = torch.from_numpy(y_fam.astype(np.int64))
    yb = (yf != 0).float()
    g = torch.Generator().manual_seed(seed)
    n = len(xb)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        tot = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            if len(idx) < 2:
                continue
            lb, lf = model(xb[idx])
            loss = nn.functional.binary_cross_entropy_with_logits(lb, yb[idx]) + nn.functional.cross_entropy(
                lf, yf[idx]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for lin in model.lins:
                    assert isinstance(lin, BinaryLinear)
                    lin.weight.clamp_(-1, 1)
            tot += float(loss.detach()) * len(idx)
        log.info("epoch %d loss %.4f", ep, tot / n)
    model.eval()
    return model


def _binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    tp = int(((p == 1) & (y == 1)).sum())
    fp = int(((p == 1) & (y == 0)).sum())
    fn = int(((p == 0) & (y == 1)).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"accuracy": float((p == y).mean()), "precision": prec, "recall": rec, "f1": f1}


def train_and_export(
    out_dir: str | Path,
    seed: int = 0,
    epochs: int = 5,
    data: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Train on all CIC data (or ``data=(X, y_family)``), export towers, return held-out metrics."""
    from sklearn.model_selection import train_test_split

    from sidecar.train.data import load_cic

    t0 = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    if data is None:
        X, y, _, _, report = load_cic()
    else:
        X, y = data
    idx_tr, idx_te = train_test_split(np.arange(len(y)), test_size=0.2, random_state=seed, stratify=y)
    th = fit_thermometer(X[idx_tr])
    model = train_model(th.bits(X[idx_tr]), y[idx_tr], seed=seed, epochs=epochs)
    s1 = export_tower(model, th)
    ver = verify_folding(model, s1, X[idx_te])
    o = int_forward(s1, X[idx_te])
    yb_te = (y[idx_te] != 0).astype(np.int64)
    pred = (o["bin_logit"] >= 0).astype(np.int64)  # p1 >= 0.5 with bin_offset 0
    metrics: dict[str, Any] = _binary_metrics(yb_te, pred)
    metrics["family_accuracy"] = float((o["fam_logits"].argmax(1) == y[idx_te]).mean())
    with torch.no_grad():
        lb, _ = model(torch.from_numpy(th.bits(X[idx_te]).astype(np.float32)))
    metrics["torch_bin_agreement"] = float(((lb.numpy() >= 0).astype(np.int64) == pred).mean())
    metrics.update(
        n_train=len(idx_tr),
        n_test=len(idx_te),
        epochs=epochs,
        seed=seed,
        folding=ver,
        duplicates_removed=report.get("duplicates_removed"),
        n_bits=th.n_bits,
        train_seconds=round(time.time() - t0, 1),
    )
    # s2: PLACEHOLDER — s1's thermometer + hidden layers + bin head as head "s2" (stage2_logit == bin_logit)
    s2 = {k: v for k, v in s1.items() if k in ("thermo_feat", "thermo_thr", "nan_feat", "layers")}
    s2.update(Ws2=s1["Wbin"], bs2=s1["bbin"], s2_scale=s1["bin_scale"])
    towers = {"s1": s1, "s2": s2}
    savez: Any = np.savez
    savez(out / "towers.npz", **flatten_towers(towers))
    meta = {
        "bnn.families": json.dumps(list(FAMILIES)),
        "bnn.bin_scale": repr(s1["bin_scale"]),
        "bnn.bin_offset": "0.0",
        "bnn.s2_scale": repr(s1["bin_scale"]),
        "bnn.s2_offset": "0.0",
        "bnn.threshold1": "0.5",
        "bnn.threshold2": "0.5",
        "bnn.metrics": json.dumps({k: v for k, v in metrics.items() if k != "folding"}),
    }
    (out / "metrics.json").write_text(
        json.dumps({"metrics": metrics, "metadata": meta}, indent=2, default=str)
    )
    if report:
        (out / "data_report.json").write_text(json.dumps(report, indent=2, default=str))
    build_onnx: Any = None
    try:  # written by another module owner; optional until it lands
        import sidecar.engines.graph as _graph

        build_onnx = getattr(_graph, "build_onnx", None)
    except ImportError:
        pass
    if build_onnx is not None:
        try:
            full_meta = dict(meta)
            full_meta.update(
                {
                    "bnn.schema_version": FEATURE_SCHEMA_VERSION,
                    "bnn.features": json.dumps(list(FEATURE_NAMES)),
                    "bnn.thermometer": json.dumps(
                        {
                            "feat": s1["thermo_feat"].tolist(),
                            "thr": s1["thermo_thr"].tolist(),
                            "nan_feat": s1["nan_feat"].tolist(),
                        }
                    ),
                    "bnn.data_digest": data_digest(X, y),
                    "bnn.created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            )
            blob = build_onnx(graph_towers(towers), full_meta)
            (out / "model.onnx").write_bytes(blob)
            (out / "model.onnx.sha256").write_text(f"{hashlib.sha256(blob).hexdigest()}  model.onnx\n")
            metrics["onnx"] = str(out / "model.onnx")
            metrics["onnx_check"] = _onnx_check(blob, towers, X[idx_te])
        except Exception as e:  # another helper's file; report, don't fail training
            log.warning("build_onnx failed: %s", e)
            metrics["onnx_error"] = repr(e)
    return metrics


if __name__ == "__main__":  # pragma: no cover
    import sys

    logging.basicConfig(level=logging.INFO)
    ep = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    print(
        json.dumps(
            train_and_export(sys.argv[1] if len(sys.argv) > 1 else "/tmp/bnn-first", epochs=ep),
            indent=2,
            default=str,
        )
    )
