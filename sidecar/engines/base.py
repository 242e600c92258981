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
    stage2_logit: int32 ``[n]``, stage-2 accumulator (computed for every row; the
        scorer only uses it where stage 1 flagged).
    """

    bin_logit: np.ndarray
    fam_logits: np.ndarray
    stage2_logit: np.ndarray


@runtime_checkable
class Engine(Protocol):
    name: str

    def run(self, x: np.ndarray) -> EngineOutput: ...
