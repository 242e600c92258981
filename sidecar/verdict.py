"""Verdicts: what the scorer returns for a :class:`FlowBatch`, columnar too."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sidecar.flow import FlowBatch

#: ``stage`` values: which stage decided the verdict.
STAGE_SCREEN = 1  # the BNN screen said benign (stage 2 never ran)
STAGE_CASCADE = 2  # the BNN flagged it and stage 2 decided
STAGE_FORCED = 0  # not a model decision (tests, operator override)


@dataclass
class VerdictBatch:
    """One verdict per flow of ``flows`` (same order, same length).

    score: float64 in [0, 1], the BNN screen's malicious probability.
    score2: float64 in [0, 1], the stage-2 probability, NaN where stage 2 did not run.
    malicious: bool, the final decision after the second stage.
    cls: object (str), family name (``benign``, ``scan``, ``bruteforce``, ``dos``,
        ``ddos``, ``web``, ``infiltration``, ``botnet``).
    stage: int8, see ``STAGE_*``.
    model: short sha256 prefix of the model that decided.
    """

    flows: FlowBatch
    score: np.ndarray
    score2: np.ndarray
    malicious: np.ndarray
    cls: np.ndarray
    stage: np.ndarray
    model: str

    def __len__(self) -> int:
        return len(self.score)

    def take(self, idx: np.ndarray) -> VerdictBatch:
        return VerdictBatch(
            self.flows.take(idx),
            self.score[idx],
            self.score2[idx],
            self.malicious[idx],
            self.cls[idx],
            self.stage[idx],
            self.model,
        )

    @staticmethod
    def concat(batches: Sequence[VerdictBatch]) -> VerdictBatch:
        if len(batches) == 1:
            return batches[0]
        return VerdictBatch(
            FlowBatch.concat([b.flows for b in batches]),
            np.concatenate([b.score for b in batches]),
            np.concatenate([b.score2 for b in batches]),
            np.concatenate([b.malicious for b in batches]),
            np.concatenate([b.cls for b in batches]),
            np.concatenate([b.stage for b in batches]),
            batches[0].model if batches else "",
        )

    def iter_json(self) -> Iterator[dict[str, Any]]:
        """Verdict rows in the ``score`` output schema (Zeek-style ``id.*`` keys)."""
        f = self.flows
        ts = f["ts"].tolist()
        uid = f["uid"].tolist()
        oh, op = f["orig_h"].tolist(), f["orig_p"].tolist()
        rh, rp = f["resp_h"].tolist(), f["resp_p"].tolist()
        proto = f["proto"].tolist()
        score = np.round(self.score, 6).tolist()
        score2 = np.round(self.score2, 6).tolist()
        mal = self.malicious.tolist()
        cls = self.cls.tolist()
        stage = self.stage.tolist()
        for i in range(len(self)):
            yield {
                "ts": None if ts[i] != ts[i] else ts[i],
                "uid": uid[i],
                "id.orig_h": oh[i],
                "id.orig_p": None if op[i] < 0 else op[i],
                "id.resp_h": rh[i],
                "id.resp_p": None if rp[i] < 0 else rp[i],
                "proto": proto[i],
                "score": score[i],
                "score2": None if score2[i] != score2[i] else score2[i],
                "malicious": mal[i],
                "class": cls[i],
                "stage": stage[i],
                "model": self.model,
            }
