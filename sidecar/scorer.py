"""The scorer: canonical flows → features → engine → verdicts. No I/O.

All float post-processing of the engine's integer outputs happens here, once, so
every engine that computes the same integers yields bit-identical scores and
verdicts (see docs/ARCHITECTURE.md, "The model graph contract").
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sidecar.engines.base import Engine, EngineOutput
from sidecar.errors import ConfigError, ModelError
from sidecar.features.capture import DuplicateCheck
from sidecar.features.guess import GuessCounter, GuessRule
from sidecar.features.rate import RateCounter, RateRule, end_times, key_hash
from sidecar.features.schema import FEATURE_NAMES, extract
from sidecar.flow import FlowBatch
from sidecar.networks import NetworkSet
from sidecar.verdict import STAGE_CASCADE, STAGE_GUESS, STAGE_RATE, STAGE_SCREEN, VerdictBatch

#: family given to a flow that only the flood rule flagged (one client hammering one service)
RATE_CLASS = "dos"
#: a model verdict of this family whose flood count reaches the threshold is re-classed RATE_CLASS:
#: a scan spreads over ports or hosts, a flood hits one service (measured: no scan record of the lab or
#: the labelled Zeek captures reaches the default count; 1,402 of the lab's 1,500 SYN-flood flows do)
SCAN_CLASS = "scan"
#: family given to a login session only the guessing rule flagged (one client, session after session)
GUESS_CLASS = "bruteforce"
#: largest bin_logit range for which the screen is a lookup table (the shipped model: a few hundred values)
LUT_MAX = 1 << 20


@dataclass(frozen=True)
class ModelMeta:
    features: list[str]
    families: list[str]
    bin_scale: float
    bin_offset: float
    s2_scale: float
    s2_offset: float
    threshold1: float
    threshold2: float
    #: scales of stage 1's and the committee member's family logits (``bnn.fam_scale``,
    #: ``bnn.s2_fam_scale``); None for a model whose stage 2 has no family head
    fam_scale: float | None = None
    s2_fam_scale: float | None = None

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMeta:
        try:
            return cls(
                features=list(json.loads(props["bnn.features"])),
                families=list(json.loads(props["bnn.families"])),
                bin_scale=float(props["bnn.bin_scale"]),
                bin_offset=float(props["bnn.bin_offset"]),
                s2_scale=float(props["bnn.s2_scale"]),
                s2_offset=float(props["bnn.s2_offset"]),
                threshold1=float(props["bnn.threshold1"]),
                threshold2=float(props["bnn.threshold2"]),
                fam_scale=float(props["bnn.fam_scale"]) if "bnn.fam_scale" in props else None,
                s2_fam_scale=float(props["bnn.s2_fam_scale"]) if "bnn.s2_fam_scale" in props else None,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"model metadata is incomplete or malformed: {exc}") from exc


def family_logits(out: EngineOutput, meta: ModelMeta) -> np.ndarray:
    """The family scores the verdict's class is named by: with a committee member's family head
    (``fam2_logits`` and both scales), both members vote, each head's integer logits times its
    scale, summed (on the held-out CIC rows 190 family errors instead of 197; 10-fold CV: 8 % fewer,
    model card); else stage 1's integer logits. Only rows stage 2 ran on carry ``fam2_logits``,
    which covers every flagged row."""
    fam = np.asarray(out.fam_logits)
    f2 = out.fam2_logits
    if f2 is None or meta.fam_scale is None or meta.s2_fam_scale is None or f2.shape != fam.shape:
        return fam
    both: np.ndarray = fam * meta.fam_scale + np.asarray(f2) * meta.s2_fam_scale
    return both


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))
    return out


@dataclass
class Scorer:
    engine: Engine
    meta: ModelMeta
    model_id: str
    flagged: Counter[str] = field(default_factory=Counter)
    scored: int = 0
    #: the flood rule beside the model (:mod:`sidecar.features.rate`); threshold 0 = off
    rate: RateRule = field(default_factory=RateRule)
    #: flows flagged by the flood rule alone (the model said benign)
    rate_flagged: int = 0
    #: flows the flood or guessing rule would have flagged but whose client is in ``rate.ignore``
    rate_ignored: int = 0
    #: flows the model flagged as ``scan`` that the flood rule's count re-classed as ``dos``
    rate_relabelled: int = 0
    #: the guessing rule beside the model (:mod:`sidecar.features.guess`); threshold 0 = off
    guess: GuessRule = field(default_factory=GuessRule)
    #: login sessions flagged by the guessing rule alone (the model said benign)
    guess_flagged: int = 0
    #: login sessions the model flagged as ``scan`` that the guessing rule re-classed as ``bruteforce``
    guess_relabelled: int = 0
    #: flag a flow only when the family vote (:func:`family_logits`) agrees it is an attack (its most
    #: likely family is not benign): fewer benign alerts and fewer scans (model card, "Operating points");
    #: off by default
    family_agreement: bool = False
    #: flows both BNNs flagged that ``family_agreement`` left benign (the family vote said benign)
    family_vetoed: int = 0
    #: does a source's sensor see every packet twice? (:mod:`sidecar.features.capture`)
    capture: DuplicateCheck = field(default_factory=DuplicateCheck)
    _ignore: NetworkSet | None = field(default=None, repr=False)
    #: one flood-rule counter per source (the service's source label, else ``FlowBatch.source``): Zeek
    #: and Suricata watching the same link report every flow twice, so their records are not counted together
    _counters: dict[str, RateCounter] = field(default_factory=dict, repr=False)
    _guess_counters: dict[str, GuessCounter] = field(default_factory=dict, repr=False)
    _lut: tuple[int, np.ndarray] | bool | None = field(default=None, repr=False)  # screen lookup table

    def post(self, out: EngineOutput) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Integer engine outputs → (p1, p2, malicious, class, stage)."""
        m = self.meta
        p1 = _sigmoid(out.bin_logit.astype(np.float64) * m.bin_scale + m.bin_offset)
        p2_all = _sigmoid(out.stage2_logit.astype(np.float64) * m.s2_scale + m.s2_offset)
        screen = p1 >= m.threshold1
        p2 = np.where(screen, p2_all, np.nan)
        mal = screen & (p2_all >= m.threshold2)
        fam = family_logits(out, m)
        best_any = fam.argmax(axis=1)
        if self.family_agreement:
            veto = mal & (best_any == 0)
            self.family_vetoed += int(np.count_nonzero(veto))
            mal &= ~veto
        best_attack = fam[:, 1:].argmax(axis=1) + 1 if fam.shape[1] > 1 else best_any
        idx = np.where(mal, np.where(best_any == 0, best_attack, best_any), 0)
        names = np.asarray(m.families, dtype=object)
        cls = names[idx]
        stage = np.where(screen, STAGE_CASCADE, STAGE_SCREEN).astype(np.int8)
        return p1, p2, mal, cls, stage

    def screen(self, bin_logit: np.ndarray) -> np.ndarray:
        """Rows the stage-1 screen passes to stage 2 (the same test as :meth:`post`).

        ``bin_logit`` is an integer with a range fixed by the model, so the test is looked up in a
        table computed once over that range with the same float expression (exact by construction);
        values outside it, or engines that do not report the range, take the float path."""
        lut = self._screen_table()
        if lut is not None and len(bin_logit):
            lo, table = lut
            if len(bin_logit) == 1:  # one row: Python int arithmetic, no array temporaries
                k = int(bin_logit[0]) - lo
                if 0 <= k < len(table):
                    one: np.ndarray = table[k : k + 1].copy()
                    return one
                return self._screen_float(bin_logit)
            i = bin_logit.astype(np.int64) - lo
            if int(i.min()) >= 0 and int(i.max()) < len(table):
                hit: np.ndarray = table[i]
                return hit
        return self._screen_float(bin_logit)

    def _screen_float(self, bin_logit: np.ndarray) -> np.ndarray:
        m = self.meta
        flagged: np.ndarray = _sigmoid(bin_logit.astype(np.float64) * m.bin_scale + m.bin_offset) >= m.threshold1
        return flagged

    def _screen_table(self) -> tuple[int, np.ndarray] | None:
        if self._lut is None:
            bounds = getattr(self.engine, "bin_logit_bounds", None)
            b = bounds() if bounds is not None else None
            if b is None or not b[0] <= b[1] or b[1] - b[0] > LUT_MAX:
                self._lut = False
            else:
                self._lut = (int(b[0]), self._screen_float(np.arange(b[0], b[1] + 1, dtype=np.int64)))
        return self._lut if isinstance(self._lut, tuple) else None

    def reset_rate(self) -> None:
        """Forget the flood rule's counts (a new, unrelated input: another file, another capture)."""
        self._counters.clear()
        self._guess_counters.clear()

    def score(self, batch: FlowBatch, source: str | None = None) -> VerdictBatch:
        """Verdicts for one batch. ``source`` names where the records came from (the service passes its
        source's label); the count rules and the capture check count per source, by default per format
        (``batch.source``)."""
        tag = batch.source if source is None else source
        x = extract(batch)
        self.capture.update(tag, x)
        cascade = getattr(self.engine, "run_cascade", None)  # engines that can skip stage 2 per row
        out = cascade(x, self.screen) if cascade is not None else self.engine.run(x)
        p1, p2, mal, cls, stage = self.post(out)
        if self.rate.enabled or self.guess.enabled:
            mal = self._rules(batch, tag, mal, cls, stage)
        self.scored += len(batch)
        self.flagged.update(cls[mal].tolist())
        return VerdictBatch(batch, p1, p2, mal, cls, stage, self.model_id)

    def _rules(self, batch: FlowBatch, tag: str, mal: np.ndarray, cls: np.ndarray, stage: np.ndarray) -> np.ndarray:
        """The count rules beside the model, guessing rule first (a login session that also floods is
        guessing), then the flood rule. Each counts the batch into ``tag``'s counter and flags (its stage
        and class) the records the model called benign whose count reaches its threshold, and
        re-classes the model's ``scan`` verdicts among them (a scan spreads over ports and hosts; these
        hit one service). ``cls`` and ``stage`` change in place; returns the new malicious mask."""
        spared = np.zeros(len(batch), dtype=bool)
        # end times and key hashes once for both rules (the guessing rule alone hashes only its sessions)
        t, h = (end_times(batch), key_hash(batch)) if self.rate.enabled else (None, None)
        if self.guess.enabled:
            counts = self._counter(self._guess_counters, tag, GuessCounter, self.guess.window_s).update(batch, t, h)
            mal, flagged, relabelled = self._apply(batch, counts >= self.guess.threshold, mal, cls, stage,
                                                   GUESS_CLASS, STAGE_GUESS, spared)  # fmt: skip
            self.guess_flagged += flagged
            self.guess_relabelled += relabelled
        if self.rate.enabled:
            counts = self._counter(self._counters, tag, RateCounter, self.rate.window_s).count(t, h)
            mal, flagged, relabelled = self._apply(batch, counts >= self.rate.threshold, mal, cls, stage,
                                                   RATE_CLASS, STAGE_RATE, spared)  # fmt: skip
            self.rate_flagged += flagged
            self.rate_relabelled += relabelled
        self.rate_ignored += int(np.count_nonzero(spared))
        return mal

    @staticmethod
    def _counter(counters: dict[str, Any], tag: str, kind: type[Any], window_s: float) -> Any:
        """``tag``'s counter of one rule, made on first use (one per source: see ``_counters``)."""
        c = counters.get(tag)
        if c is None:
            c = counters[tag] = kind(window_s)
        return c

    def _apply(self, batch: FlowBatch, hot: np.ndarray, mal: np.ndarray, cls: np.ndarray, stage: np.ndarray,
               klass: str, st: int, spared: np.ndarray) -> tuple[np.ndarray, int, int]:  # fmt: skip
        """Flag ``hot`` records the model called benign as ``klass``/``st`` and re-class its ``scan``
        verdicts among them; ``rate.ignore`` clients are never flagged (marked in ``spared``)."""
        if self.rate.ignore and hot.any():
            if self._ignore is None:
                self._ignore = NetworkSet(self.rate.ignore)
            idx = np.flatnonzero(hot)
            keep = idx[self._ignore.contains(batch["orig_h"][idx])]
            hot[keep] = False
            spared[keep[~mal[keep]]] = True
        if not hot.any():
            return mal, 0, 0
        both = np.flatnonzero(hot & mal)
        relabel = both[cls[both] == SCAN_CLASS]
        hot &= ~mal
        cls[hot] = klass
        cls[relabel] = klass
        stage[hot] = st
        return mal | hot, int(np.count_nonzero(hot)), len(relabel)


def make_scorer(
    model_path: str | Path,
    engine: str = "onnx",
    rate: RateRule | None = None,
    threshold: float | None = None,
    family_agreement: bool = False,
    guess: GuessRule | None = None,
) -> Scorer:
    """Load a model (sha256-checked) with the chosen engine and wrap it in a :class:`Scorer`.

    ``rate``: the flood rule beside the model (default :class:`RateRule`, ``threshold=0`` turns it off);
    its ``ignore`` networks are spared by both count rules.
    ``guess``: the guessing rule beside the model (default :class:`GuessRule`, ``threshold=0`` turns it off).
    ``threshold``: the operator's own decision threshold instead of the model's ``bnn.threshold1``
    (lower: more detections and more false positives). For a committee model (``bnn.stage2`` =
    ``committee``) both members flag at it; for a stacked model it moves the screen only."""
    from sidecar.engines import load

    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ConfigError(f"decision threshold must be in (0, 1), got {threshold}")
    eng = load.load_engine(model_path, engine)
    props: dict[str, str] = eng.metadata()
    meta = ModelMeta.from_props(props)
    if threshold is not None:
        committee = props.get("bnn.stage2") == "committee"
        meta = replace(meta, threshold1=threshold, threshold2=threshold if committee else meta.threshold2)
    if tuple(meta.features) != FEATURE_NAMES:
        raise ModelError(
            f"{model_path}: model features {meta.features} do not match this sidecar's feature schema "
            f"{list(FEATURE_NAMES)}; retrain or upgrade"
        )
    return Scorer(eng, meta, load.sha256_file(model_path)[:12], rate=RateRule() if rate is None else rate,
                  family_agreement=family_agreement, guess=GuessRule() if guess is None else guess)
