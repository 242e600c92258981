"""onnxruntime engine (lazy import; raises EngineUnavailable when missing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sidecar.engines.base import EngineOutput
from sidecar.errors import EngineUnavailable, ModelError


class OnnxEngine:
    name = "onnx"

    def __init__(self, path: str | Path, intra_op_threads: int = 1) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineUnavailable("onnxruntime is not installed; use the numpy engine") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        try:
            self._sess: Any = ort.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"cannot load ONNX model {path}: {exc}") from exc
        self._input = self._sess.get_inputs()[0].name

    def metadata(self) -> dict[str, str]:
        return dict(self._sess.get_modelmeta().custom_metadata_map)

    def run(self, x: np.ndarray) -> EngineOutput:
        x = np.ascontiguousarray(x, dtype=np.float32)
        b, f, s = self._sess.run(["bin_logit", "fam_logits", "stage2_logit"], {self._input: x})
        return EngineOutput(
            bin_logit=np.asarray(b, dtype=np.int32),
            fam_logits=np.asarray(f, dtype=np.int32),
            stage2_logit=np.asarray(s, dtype=np.int32),
        )
