"""Model loading: sha256 verification and engine selection."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sidecar.errors import ChecksumError, ConfigError, ModelError


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc}") from exc
    return h.hexdigest()


def verify_sha256(model_path: str | Path) -> str:
    """Check ``model_path`` against ``<model_path>.sha256``; return the digest."""
    model_path = Path(model_path)
    sums = Path(str(model_path) + ".sha256")
    try:
        text = sums.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(f"checksum file {sums} is missing or unreadable: {exc}") from exc
    parts = text.split()
    if not parts:
        raise ModelError(f"checksum file {sums} is empty")
    expected = parts[0].lower()
    actual = sha256_file(model_path)
    if actual != expected:
        raise ChecksumError(
            f"sha256 mismatch for {model_path}: expected {expected} (from {sums}), got {actual}"
        )
    return actual


def pack_path_for(model_path: str | Path) -> Path:
    """``model.onnx`` → ``model.bnnpack.npz`` (beside it)."""
    p = Path(model_path)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(stem + ".bnnpack.npz")


def load_engine(model_path: str | Path, kind: str = "onnx") -> Any:
    """Verify the ONNX ``model_path`` against its ``.sha256`` and return an engine.

    ``kind="numpy"`` loads ``<model>.bnnpack.npz`` beside the ONNX and checks the pack
    records the verified ONNX digest (a stale pack raises ChecksumError).
    """
    if kind not in ("onnx", "numpy"):
        raise ConfigError(f"unknown engine kind {kind!r} (expected 'onnx' or 'numpy')")
    digest = verify_sha256(model_path)
    if kind == "onnx":
        from sidecar.engines.onnx_engine import OnnxEngine

        return OnnxEngine(model_path)
    from sidecar.engines.numpy_engine import NumpyEngine

    pack = pack_path_for(model_path)
    if not pack.exists():
        raise ModelError(f"numpy engine pack {pack} is missing; run `bnn-sidecar pack {model_path}`")
    eng = NumpyEngine(pack)
    if eng.onnx_sha256 != digest:
        raise ChecksumError(
            f"pack {pack} was built from ONNX sha256 {eng.onnx_sha256}, but {model_path} has sha256 {digest}"
        )
    return eng
