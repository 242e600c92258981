"""The engine interface: pure computation, no I/O beyond loading the model file.

An engine runs the exported model graph on a float32 feature matrix (``[n, F]``,
NaN = missing, columns in the model's feature order) and returns the graph's
**integer** outputs. All float post-processing (logit scaling, sigmoid, decision
thresholds) happens once, in shared scorer code, so two engines that compute the
same integers give bit-identical scores and verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class EngineOutput:
    """Integer outputs of the model graph for ``n`` rows.

    bin_logit: int32 ``[n]``, stage-1 (BNN) binary head accumulator.
    fam_logits: int32 ``[n, K]``, stage-1 family head accumulators.
    stage2_logit: int32 ``[n]``, stage-2 accumulator (``run``: every row; ``run_cascade``:
        only where the screen flagged, 0 elsewhere; the scorer only reads it there).
    fam2_logits: int32 ``[n, K]``, the committee member's family head accumulators (output
        ``fam2_logits`` of the graph; rows as ``stage2_logit``), or None for a model without one.
    """

    bin_logit: np.ndarray
    fam_logits: np.ndarray
    stage2_logit: np.ndarray
    fam2_logits: np.ndarray | None = None


@runtime_checkable
class Engine(Protocol):
    """Both shipped engines also have ``run_cascade(x, screen) -> EngineOutput`` (``screen``:
    elementwise ``bin_logit -> bool``; stage 2 only on flagged rows, identical verdicts) and
    ``bin_logit_bounds() -> (lo, hi)``; the scorer uses ``run_cascade`` when present."""

    name: str

    def run(self, x: np.ndarray) -> EngineOutput: ...
