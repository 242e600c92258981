"""``bnn-sidecar pack MODEL.onnx [--out PACK]``: derive the numpy engine's bit-packed file.

The pack records the sha256 of the ONNX it came from; the numpy engine refuses a stale pack.
Needs the ``onnx`` package (``train`` or ``dev`` extra) to read the model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sidecar.errors import InputError


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="ONNX model (with its .sha256 beside it)")
    p.add_argument("--out", help="output .bnnpack.npz (default: beside the model)")


def run(args: argparse.Namespace) -> int:
    from sidecar.engines.load import pack_path_for, verify_sha256

    model = Path(args.model)
    if not model.is_file():
        raise InputError(f"model {model} not found")
    verify_sha256(model)
    try:
        from sidecar.engines.pack import pack_onnx
    except ImportError as exc:  # pragma: no cover - pack imports onnx lazily
        raise InputError(f"packing needs the 'onnx' package: {exc}") from exc
    out = Path(args.out) if args.out else pack_path_for(model)
    try:
        pack_onnx(model, out)
    except ImportError as exc:
        raise InputError(f"packing needs the 'onnx' package (pip install onnx): {exc}") from exc
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0
