"""numpy-only engine: runs a ``.bnnpack.npz`` with popcount binary layers.

Returns exactly the same integers as the ONNX graph under onnxruntime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sidecar.engines.base import EngineOutput
from sidecar.engines.pack import HEADS, TOWERS, load_pack, pack_bits

_LUT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount64(a: np.ndarray) -> np.ndarray:
    """Per-element popcount of a uint64 array (as uint8)."""
    bc = getattr(np, "bitwise_count", None)
    if bc is not None:
        return np.asarray(bc(a))
    a = np.ascontiguousarray(a)
    return _LUT[a.view(np.uint8)].reshape(*a.shape, 8).sum(axis=-1, dtype=np.uint8)


class NumpyEngine:
    name = "numpy"

    def __init__(self, npz_path: str | Path, chunk: int = 4096) -> None:
        self._p = load_pack(npz_path)
        self._chunk = chunk
        self._towers: dict[str, dict[str, Any]] = {}
        for t in TOWERS:
            p = self._p
            layers = []
            for i in range(int(p[f"{t}.n_layers"])):
                w = f"{t}.W{i}"
                if bool(p[w + ".pm1"]):
                    layers.append((True, p[w + ".packed"], p[f"{t}.T{i}"]))
                else:
                    layers.append((False, p[w].astype(np.int32), p[f"{t}.T{i}"]))
            heads = {h: (p[f"{t}.W{h}"].astype(np.int32), p[f"{t}.b{h}"]) for h in HEADS[t]}
            self._towers[t] = {
                "feat": p[f"{t}.thermo_feat"],
                "thr": p[f"{t}.thermo_thr"],
                "nan": p[f"{t}.nan_feat"],
                "layers": layers,
                "heads": heads,
            }

    def metadata(self) -> dict[str, str]:
        return dict(self._p["metadata"])

    @property
    def onnx_sha256(self) -> str:
        return str(self._p["onnx_sha256"])

    def _tower(self, t: dict[str, Any], x: np.ndarray) -> dict[str, np.ndarray]:
        bits = x[:, t["feat"]] > t["thr"]
        if t["nan"].size:
            bits = np.concatenate([bits, np.isnan(x[:, t["nan"]])], axis=1)
        h = bits.astype(np.uint8)
        for pm1, w, thr in t["layers"]:
            if pm1:
                a = pack_bits(h)  # [n, words]
                n_on = popcount64(a).sum(axis=1, dtype=np.int32)  # [n]
                pos = popcount64(a[:, None, :] & w[None, :, :]).sum(axis=2, dtype=np.int32)  # [n, H]
                acc = 2 * pos - n_on[:, None]
            else:
                acc = h.astype(np.int32) @ w
            h = (acc >= thr).astype(np.uint8)
        hi = h.astype(np.int32)
        return {name: (hi @ wh + bh).astype(np.int32) for name, (wh, bh) in t["heads"].items()}

    def run(self, x: np.ndarray) -> EngineOutput:
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[0]
        k = self._towers["s1"]["heads"]["fam"][0].shape[1]
        out_b = np.empty(n, dtype=np.int32)
        out_f = np.empty((n, k), dtype=np.int32)
        out_s = np.empty(n, dtype=np.int32)
        for lo in range(0, n, self._chunk):
            xs = x[lo : lo + self._chunk]
            r1 = self._tower(self._towers["s1"], xs)
            r2 = self._tower(self._towers["s2"], xs)
            out_b[lo : lo + len(xs)] = r1["bin"][:, 0]
            out_f[lo : lo + len(xs)] = r1["fam"]
            out_s[lo : lo + len(xs)] = r2["s2"][:, 0]
        return EngineOutput(bin_logit=out_b, fam_logits=out_f, stage2_logit=out_s)
