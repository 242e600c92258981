"""``bnn-sidecar train`` with the documented command reproduces the shipped weights exactly."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

SHIPPED = Path(__file__).resolve().parent.parent / "sidecar" / "data" / "model" / "bnn.onnx"


def _weights_digest(path: Path) -> str:
    m = onnx.load(str(path))
    return hashlib.sha256(b"".join(i.SerializeToString() for i in m.graph.initializer)).hexdigest()


@pytest.mark.slow
def test_train_reproduces_shipped_model(shared: Path, tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "sidecar.cli.main", "-q", "train", "--data", str(shared), "--out", str(tmp_path),
         "--epochs", "20", "--seed", "0"],
        capture_output=True, timeout=900,
    )
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    assert _weights_digest(tmp_path / "model.onnx") == _weights_digest(SHIPPED)
    assert (tmp_path / "model.bnnpack.npz").exists()
