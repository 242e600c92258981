"""Pack an exported ONNX model into a numpy-only ``.bnnpack.npz``.

Reads the contract initializers (``<tower>.<name>``) with the ``onnx`` package
(imported lazily). Each binary layer whose weights are all ±1 is stored as
bit-packed uint64 words of the ``+1`` mask (``np.packbits`` along the input
axis, one row per output unit, zero-padded to whole words); any other matrix is
kept as its int8 matrix.

The file is written with ``np.savez_compressed``; the model metadata is stored as UTF-8
bytes (``metadata_json``, uint8) so the weights dominate its size. :func:`load_pack` also
reads packs written before (metadata as a numpy unicode scalar, uncompressed).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from sidecar.errors import ModelError

TOWERS = ("s1", "s2")
HEADS = {"s1": ("bin", "fam"), "s2": ("s2",)}
#: heads a tower may have: a committee member's family head (``s2.Wfam``, output ``fam2_logits``)
OPTIONAL_HEADS = {"s1": (), "s2": ("fam",)}


def heads_of(arrays: Any, t: str) -> tuple[str, ...]:
    """Tower ``t``'s heads in ``arrays`` (a pack dict or the initializers): required, then optional."""
    return HEADS[t] + tuple(h for h in OPTIONAL_HEADS[t] if f"{t}.W{h}" in arrays)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """uint8/bool ``[n, B]`` 0/1 → uint64 ``[n, ceil(B/64)]`` (packbits along axis 1, zero padded)."""
    by = np.packbits(np.asarray(bits, dtype=bool), axis=1)
    n, nbytes = by.shape
    words = max(1, -(-nbytes // 8))
    if words * 8 != nbytes:
        by = np.concatenate([by, np.zeros((n, words * 8 - nbytes), dtype=np.uint8)], axis=1)
    return np.ascontiguousarray(by).view(np.uint64).reshape(n, words)


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pack_onnx(onnx_path: str | Path, out_npz: str | Path) -> None:
    """Write the numpy-engine pack for ``onnx_path`` to ``out_npz``."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:
        raise ModelError(f"cannot read ONNX model {onnx_path}: {exc}") from exc
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    meta = {p.key: p.value for p in model.metadata_props}
    arrays: dict[str, np.ndarray] = {
        "metadata_json": np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8),
        "onnx_sha256": np.array(_sha256(onnx_path)),
    }

    def get(name: str) -> np.ndarray:
        if name not in inits:
            raise ModelError(f"{onnx_path}: missing initializer {name!r}")
        return np.asarray(inits[name])

    for t in TOWERS:
        arrays[f"{t}.thermo_feat"] = get(f"{t}.thermo_feat").astype(np.int64)
        arrays[f"{t}.thermo_thr"] = get(f"{t}.thermo_thr").astype(np.float32)
        nf = inits.get(f"{t}.nan_feat")
        arrays[f"{t}.nan_feat"] = np.asarray(nf, dtype=np.int64) if nf is not None else np.zeros(0, np.int64)
        n_layers = 0
        while f"{t}.W{n_layers}" in inits:
            w = get(f"{t}.W{n_layers}").astype(np.int8)
            p = f"{t}.W{n_layers}"
            arrays[p + ".shape"] = np.array(w.shape, dtype=np.int64)
            pm1 = bool(np.all((w == 1) | (w == -1)))
            arrays[p + ".pm1"] = np.array(pm1)
            if pm1:
                arrays[p + ".packed"] = pack_bits((w == 1).T)
            else:
                arrays[p] = w
            arrays[f"{t}.T{n_layers}"] = get(f"{t}.T{n_layers}").astype(np.int32)
            n_layers += 1
        arrays[f"{t}.n_layers"] = np.array(n_layers, dtype=np.int64)
        for h in heads_of(inits, t):
            arrays[f"{t}.W{h}"] = get(f"{t}.W{h}").astype(np.int8)
            arrays[f"{t}.b{h}"] = get(f"{t}.b{h}").astype(np.int32)
    with open(out_npz, "wb") as fh:
        np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]


def load_pack(npz: str | Path) -> dict[str, Any]:
    """Load a pack written by :func:`pack_onnx` into a plain dict of arrays (+ ``metadata`` dict)."""
    try:
        with np.load(npz, allow_pickle=False) as z:
            out: dict[str, Any] = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read model pack {npz}: {exc}") from exc
    mj = out["metadata_json"]
    try:
        text = mj.tobytes().decode("utf-8") if mj.dtype == np.uint8 else str(mj)
        out["metadata"] = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"model pack {npz}: unreadable metadata: {exc}") from exc
    out["onnx_sha256"] = str(out["onnx_sha256"])
    return out
