"""onnxruntime engine (lazy import; raises EngineUnavailable when missing).

Session: one intra-op and one inter-op thread (the sidecar scales by processes,
one per core), sequential execution, all graph optimisations.

Load-time layout rewrite (speed only, exact): onnxruntime's ``Gather`` along
axis 1 copies element by element and was over half the run time of the contract
graph at batch 1024. Each thermometer ``Gather(x, idx, axis=1)`` is therefore run
as ``Transpose(Gather(Transpose(x), idx, axis=0))`` — whole-row copies. This is
pure data movement, so the integer outputs are identical (the engine tests
compare them with the numpy engine bit for bit). The rewrite edits the model's
protobuf bytes in memory with the wire-format helpers of :mod:`sidecar.engines.proto`
(no ``onnx`` package needed at runtime); the file on disk and its sha256 are untouched,
and if the graph does not have the expected shape the model is loaded as it is.

Load-time split (speed only, exact; :mod:`sidecar.engines.onnx_split`): tower ``s2``
runs as its residual plan on stage 1's levels (:mod:`sidecar.engines.reuse`) instead of
recomputing them. ``run`` uses one session with stage 1 + residual; ``run_cascade`` runs
a stage-1 session, then the residual session only on the rows the screen flags.
onnxruntime does not prune nodes for outputs a call does not ask for (measured: asking
the file's graph for ``bin_logit``/``fam_logits`` only takes as long as all three), so
the split has to be in the graphs themselves.

One-row calls (issue #5's batch-1 latency) go through :mod:`sidecar.engines.onnx_tiny`:
the same graphs without the row-gather rewrite, bound to preallocated buffers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sidecar.engines.base import EngineOutput
from sidecar.engines.onnx_tiny import OneRow
from sidecar.engines.proto import transpose_gathers
from sidecar.errors import EngineUnavailable, ModelError

log = logging.getLogger(__name__)

OUTPUTS = ["bin_logit", "fam_logits", "stage2_logit"]
#: the committee member's family head, in models that have one
FAM2 = "fam2_logits"


class OnnxEngine:
    """``rewrite``: the row-gather layout rewrite; ``split``: stage 1 + residual sessions
    (:mod:`sidecar.engines.onnx_split`). Both off = the file's graph exactly as written."""

    name = "onnx"
    #: below this many rows :meth:`run_cascade` makes one ``run`` call and zeroes the unflagged
    #: ``stage2_logit`` (one row: the bound one-row path of :mod:`sidecar.engines.onnx_tiny`)
    cascade_min_rows = 32
    #: from ``cascade_min_rows`` up, the split is taken when the recent flagged fraction predicts
    #: no flagged row at all, or at least this many unflagged rows: the residual session call and
    #: the row gathers cost about as much as stage 2 on ~150-250 rows (measured at batch 32-512 with
    #: 0, 10, 25 and 45 % of the rows flagged: with none flagged the split wins from 32 rows up, with
    #: any flagged one call wins up to ~200 rows)
    cascade_min_saved = 160
    #: above this recent flagged fraction the split costs more than one ``run`` (measured on the
    #: shipped model at batch 1024: break-even near half the rows)
    cascade_max_frac = 0.45

    def __init__(
        self, path: str | Path, intra_op_threads: int = 1, rewrite: bool = True, split: bool = True, tiny: bool = True
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineUnavailable("onnxruntime is not installed; use the numpy engine") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # batch sizes vary call to call (micro-batches, and the rows a screen flags): a memory
        # pattern is planned per input shape, which made a varying-size call ~1.6x dearer (measured)
        opts.enable_mem_pattern = False
        self._path = path
        self._one: OneRow | None = None
        try:
            blob = Path(path).read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read ONNX model {path}: {exc}") from exc

        def session(model: bytes) -> Any:
            return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])

        self._stage1: Any = None
        self._residual: Any = None
        self._frac = 0.0  # moving average of the flagged fraction (see run_cascade)
        if split:
            try:
                self._load_split(blob, session, rewrite)
            except Exception as exc:  # ValueError from the rewrite, or onnxruntime rejecting it
                log.warning("%s: split graph unavailable (%s); running the graph as written", path, exc)
                self._stage1 = None
        if self._stage1 is None:
            self._sess = self._load_plain(blob, session, rewrite)
        self._input = self._sess.get_inputs()[0].name
        #: the graph's outputs in contract order: OUTPUTS, then FAM2 if the model has it
        self._outputs = OUTPUTS + [FAM2] * any(o.name == FAM2 for o in self._sess.get_outputs())
        if tiny:
            self._one = self._load_one_row(blob, ort, intra_op_threads)

    def _load_one_row(self, blob: bytes, ort: Any, intra_op_threads: int) -> OneRow | None:
        """The one-row path (:mod:`sidecar.engines.onnx_tiny`): the same graph as :meth:`run`'s
        (split or as written) without the row-gather rewrite, memory pattern on; None if unavailable."""
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_mem_pattern = True  # this session only ever sees shape [1, F]
        try:
            from sidecar.engines.onnx_split import Split

            def session(model: bytes) -> Any:
                return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])

            sp = Split(blob, rows=False) if self._stage1 is not None else None
            full = session(sp.full if sp is not None else blob)
            n_features = full.get_inputs()[0].shape[1]
            if not isinstance(n_features, int):
                raise ValueError(f"feature dimension is not fixed ({n_features!r})")
            if sp is None:
                return OneRow(full, self._input, self._outputs, n_features)
            s1, res = session(sp.stage1), session(sp.residual_model)
            return OneRow(full, self._input, self._outputs, n_features, s1, res, list(sp.level_inputs))
        except Exception as exc:  # onnxruntime's own exception types, ValueError from the checks
            log.debug("%s: one-row path unavailable (%s)", self._path, exc)
            return None

    def _layout(self, model: bytes, rewrite: bool) -> bytes:
        if not rewrite:
            return model
        try:
            out, n = transpose_gathers(model)
        except (ValueError, UnicodeDecodeError) as exc:
            log.debug("%s: layout rewrite skipped (%s)", self._path, exc)
            return model
        log.debug("%s: %d thermometer gathers run as row gathers", self._path, n)
        return out

    def _load_split(self, blob: bytes, session: Callable[[bytes], Any], rewrite: bool) -> None:
        from sidecar.engines.onnx_split import Split

        sp = Split(blob, rows=rewrite)
        self._sess = session(sp.full)
        self._stage1 = session(sp.stage1)
        self._residual = session(sp.residual_model)
        self._s1_outputs = [o.name for o in self._stage1.get_outputs()]
        self._s2_outputs = list(sp.s2_outputs)
        self._level_inputs = sp.level_inputs
        log.debug("%s: split graph (stage 1 + residual, %d new bits)", self._path, sp.residual.n_bits())

    def _load_plain(self, blob: bytes, session: Callable[[bytes], Any], rewrite: bool) -> Any:
        model = self._layout(blob, rewrite)
        try:
            return session(model)
        except Exception as exc:  # onnxruntime raises its own exception types
            if model is blob:
                raise ModelError(f"cannot load ONNX model {self._path}: {exc}") from exc
            log.warning("%s: rewritten graph rejected (%s); loading it unchanged", self._path, exc)
            try:
                return session(blob)
            except Exception as exc2:
                raise ModelError(f"cannot load ONNX model {self._path}: {exc2}") from exc2

    @property
    def split(self) -> bool:
        """True when stage 2 runs as the residual plan (and :meth:`run_cascade` skips unflagged rows)."""
        return self._stage1 is not None

    def metadata(self) -> dict[str, str]:
        return dict(self._sess.get_modelmeta().custom_metadata_map)

    def bin_logit_bounds(self) -> tuple[int, int] | None:
        """Smallest and largest ``bin_logit`` this model can give (None if the graph is unreadable):
        a screen evaluated once on that range is an exact lookup table."""
        from sidecar.engines import proto
        from sidecar.engines.reuse import bin_logit_bounds

        try:
            g = proto.parse_model(Path(self._path).read_bytes())
            return bin_logit_bounds({k: g.init_array(k) for k in ("s1.Wbin", "s1.bbin")})
        except (OSError, KeyError, ValueError, IndexError):
            return None

    @staticmethod
    def _x(x: np.ndarray) -> np.ndarray:
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.float32)
        return x

    @staticmethod
    def _output(got: list[np.ndarray]) -> EngineOutput:
        """The graph's outputs (contract order, int32) as an :class:`EngineOutput`."""
        if any(a.dtype != np.int32 for a in got):
            got = [np.asarray(a, dtype=np.int32) for a in got]
        return EngineOutput(got[0], got[1], got[2], got[3] if len(got) > 3 else None)

    def run(self, x: np.ndarray) -> EngineOutput:
        if len(x) == 1 and self._one is not None:
            got = self._one.run(x)
            if got is not None:
                return self._output(got)
        return self._output(self._sess.run(self._outputs, {self._input: self._x(x)}))

    def run_cascade(self, x: np.ndarray, screen: Callable[[np.ndarray], np.ndarray]) -> EngineOutput:
        """Like :meth:`run`, but stage 2 runs only on rows where ``screen(bin_logit)`` is true;
        ``stage2_logit`` is 0 elsewhere (the scorer reads it only where the screen flagged).

        Two exact ways, chosen per call: the split (stage-1 session, then the residual session on
        the flagged rows) or one ``run`` with the unflagged rows zeroed. The split pays a second
        session call and the row gathers, so it is taken only on batches of ``cascade_min_rows`` or
        more where fewer than ``cascade_max_frac`` of the rows are flagged and either none or at
        least ``cascade_min_saved`` rows are expected unflagged; that fraction is tracked as a
        moving average of the recent calls (flows come in bursts). One row takes the bound
        one-row path (stage 1, then stage 2 only if flagged) when it is free."""
        if len(x) == 1 and self._one is not None:
            got = self._one.run_cascade(x, screen)
            if got is not None:
                return self._output(got)
        x = self._x(x)
        if not self._use_split(len(x)):
            out = self.run(x)  # fresh arrays: zeroed in place
            flagged = np.asarray(screen(out.bin_logit), dtype=np.bool_)
            out.stage2_logit *= flagged
            if out.fam2_logits is not None:
                out.fam2_logits *= flagged[:, None]
            if len(x) >= self.cascade_min_rows:
                self._track(int(np.count_nonzero(flagged)), len(x))
            return out
        b, f, *levels = self._stage1.run(self._s1_outputs, {self._input: x})
        b, f = np.asarray(b, dtype=np.int32), np.asarray(f, dtype=np.int32)
        s = np.zeros(len(b), dtype=np.int32)
        f2 = np.zeros((len(b), f.shape[1]), dtype=np.int32) if len(self._s2_outputs) > 1 else None
        sel = np.flatnonzero(screen(b))
        self._track(len(sel), len(b))
        if len(sel):
            if len(sel) == len(b):
                feed = {self._input: x, **dict(zip(self._level_inputs, levels, strict=True))}
                sel_ix: Any = slice(None)
            else:
                feed = {self._input: np.take(x, sel, axis=0)}
                feed.update((k, np.take(lv, sel, axis=0)) for k, lv in zip(self._level_inputs, levels, strict=True))
                sel_ix = sel
            got = self._residual.run(self._s2_outputs, feed)
            s[sel_ix] = got[0]
            if f2 is not None:
                f2[sel_ix] = got[1]
        return EngineOutput(bin_logit=b, fam_logits=f, stage2_logit=s, fam2_logits=f2)

    def _use_split(self, n: int) -> bool:
        if self._stage1 is None or n < self.cascade_min_rows or self._frac > self.cascade_max_frac:
            return False
        return n * self._frac < 0.5 or n * (1.0 - self._frac) >= self.cascade_min_saved

    def _track(self, flagged: int, n: int) -> None:
        if n and n >= self.cascade_min_rows:
            self._frac += 0.25 * (flagged / n - self._frac)
