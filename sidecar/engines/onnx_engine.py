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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sidecar.engines.base import EngineOutput
from sidecar.engines.proto import transpose_gathers
from sidecar.errors import EngineUnavailable, ModelError

log = logging.getLogger(__name__)

OUTPUTS = ["bin_logit", "fam_logits", "stage2_logit"]


class OnnxEngine:
    """``rewrite``: the row-gather layout rewrite; ``split``: stage 1 + residual sessions
    (:mod:`sidecar.engines.onnx_split`). Both off = the file's graph exactly as written."""

    name = "onnx"
    #: below this many rows :meth:`run_cascade` makes one ``run`` call and zeroes the unflagged
    #: ``stage2_logit``: two session calls cost more than stage 2 on a few rows (measured with
    #: callgrind: at one row both ways execute the same instruction count; from 2 rows up to
    #: ~64 one call is cheaper)
    cascade_min_rows = 64
    #: above this recent flagged fraction the split costs more than one ``run`` (measured on the
    #: shipped model at batch 1024: break-even near half the rows)
    cascade_max_frac = 0.45

    def __init__(self, path: str | Path, intra_op_threads: int = 1, rewrite: bool = True, split: bool = True) -> None:
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

    def run(self, x: np.ndarray) -> EngineOutput:
        b, f, s = self._sess.run(OUTPUTS, {self._input: self._x(x)})
        if b.dtype != np.int32 or f.dtype != np.int32 or s.dtype != np.int32:
            b, f, s = (np.asarray(a, dtype=np.int32) for a in (b, f, s))
        return EngineOutput(bin_logit=b, fam_logits=f, stage2_logit=s)

    def run_cascade(self, x: np.ndarray, screen: Callable[[np.ndarray], np.ndarray]) -> EngineOutput:
        """Like :meth:`run`, but stage 2 runs only on rows where ``screen(bin_logit)`` is true;
        ``stage2_logit`` is 0 elsewhere (the scorer reads it only where the screen flagged).

        Two exact ways, chosen per call: the split (stage-1 session, then the residual session on
        the flagged rows) or one ``run`` with the unflagged rows zeroed. The split pays a second
        session call and the row gathers, so it wins only on batches of ``cascade_min_rows`` or
        more where fewer than ``cascade_max_frac`` of the rows are flagged; that fraction is
        tracked as a moving average of the recent calls (flows come in bursts)."""
        x = self._x(x)
        if self._stage1 is None or len(x) < self.cascade_min_rows or self._frac > self.cascade_max_frac:
            out = self.run(x)
            flagged = screen(out.bin_logit)
            out.stage2_logit = np.where(flagged, out.stage2_logit, 0).astype(np.int32)
            self._track(int(np.count_nonzero(flagged)), len(x))
            return out
        b, f, *levels = self._stage1.run(self._s1_outputs, {self._input: x})
        b, f = np.asarray(b, dtype=np.int32), np.asarray(f, dtype=np.int32)
        s = np.zeros(len(b), dtype=np.int32)
        sel = np.flatnonzero(screen(b))
        self._track(len(sel), len(b))
        if len(sel) == len(b):
            feed = {self._input: x, **dict(zip(self._level_inputs, levels, strict=True))}
            s[:] = self._residual.run([OUTPUTS[2]], feed)[0]
        elif len(sel):
            feed = {self._input: np.take(x, sel, axis=0)}
            feed.update((k, np.take(lv, sel, axis=0)) for k, lv in zip(self._level_inputs, levels, strict=True))
            s[sel] = self._residual.run([OUTPUTS[2]], feed)[0]
        return EngineOutput(bin_logit=b, fam_logits=f, stage2_logit=s)

    def _track(self, flagged: int, n: int) -> None:
        if n and n >= self.cascade_min_rows:
            self._frac += 0.25 * (flagged / n - self._frac)
