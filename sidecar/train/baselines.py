"""Baselines trained on the same rows and folds as the BNN: a full-precision MLP and a tree model.

Both see the same 20 features. The MLP gets them standardised, with NaN replaced by 0
*after* standardisation (the training mean) plus one is-missing indicator per feature, so
missing stays distinguishable from any value. The tree model is a random forest
(``sklearn.ensemble.RandomForestClassifier``, 50 trees, one core), which handles NaN natively.
(Gradient-boosted trees were tried first: ``HistGradientBoostingClassifier`` at its default
learning rate diverged on these 8 unbalanced classes, 0.66 family accuracy, and took minutes.)
Every ``fit_*`` returns a predict function ``X -> (p_malicious float[n], family int[n])``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from sidecar.features.labels import FAMILIES
from sidecar.train.bnn import minibatches

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class _MLP(nn.Module):
    def __init__(self, n_in: int, hidden: tuple[int, ...], n_fam: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = n_in
        for h in hidden:
            layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.ReLU()]
            d = h
        self.body = nn.Sequential(*layers)
        self.head_bin = nn.Linear(d, 1)
        self.head_fam = nn.Linear(d, n_fam)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.head_bin(h).squeeze(1), self.head_fam(h)


def fit_mlp(
    X: np.ndarray,
    y_fam: np.ndarray,
    seed: int = 0,
    epochs: int = 5,
    hidden: tuple[int, ...] = (128, 64),
    batch_size: int = 256,
    lr: float = 1e-3,
) -> Predictor:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    with np.errstate(invalid="ignore"):
        mu = np.nanmean(X, axis=0)
        sd = np.nanstd(X, axis=0)
    mu = np.where(np.isfinite(mu), mu, 0.0)
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)

    def prep(A: np.ndarray) -> torch.Tensor:
        z = (A - mu) / sd
        miss = np.isnan(z)
        return torch.from_numpy(np.concatenate([np.where(miss, 0.0, z), miss], axis=1).astype(np.float32))

    xt = prep(X)
    yf = torch.from_numpy(y_fam.astype(np.int64))
    yb = (yf != 0).float()
    net = _MLP(xt.shape[1], hidden, len(FAMILIES))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    n = len(xt)
    for _ in range(epochs):
        net.train()
        for idx_np in minibatches(n, batch_size, g):
            idx = torch.from_numpy(idx_np)
            lb, lf = net(xt[idx])
            loss = nn.functional.binary_cross_entropy_with_logits(lb, yb[idx]) + nn.functional.cross_entropy(
                lf, yf[idx]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()

    def predict(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            lb, lf = net(prep(A))
        return torch.sigmoid(lb).numpy().astype(np.float64), lf.argmax(1).numpy().astype(np.int64)

    return predict


def fit_tree(X: np.ndarray, y_fam: np.ndarray, seed: int = 0, n_trees: int = 50) -> Predictor:
    from sklearn.ensemble import RandomForestClassifier

    clf = RandomForestClassifier(n_estimators=n_trees, random_state=seed, n_jobs=1)
    clf.fit(X, y_fam)
    classes = np.asarray(clf.classes_)

    def predict(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pr = clf.predict_proba(A)
        benign = pr[:, classes == 0].sum(axis=1) if (classes == 0).any() else np.zeros(len(A))
        return 1.0 - benign, classes[pr.argmax(axis=1)].astype(np.int64)

    return predict
