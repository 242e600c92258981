"""A one-row fast path for onnxruntime (speed only, exact): issue #5's batch-1 latency.

At one row the graph's arithmetic is a small part of a call; the rest is per-call
overhead, which this path cuts three ways (each measured on the shipped model, one
core; figures in the E5 report):

* **IOBinding on preallocated buffers**: the input row is copied into a bound
  ``[1, F]`` float32 buffer and the outputs land in bound buffers, so a call skips
  the feed-dict validation, the input ``OrtValue`` wrap and the output allocations
  of ``InferenceSession.run`` (~9 us of ~35 us);
* **memory pattern on**: these sessions only ever see one row, so the planned memory
  pattern is reused every call (~5 us); the general sessions keep it off because
  their batch sizes vary;
* **no row-gather rewrite**: the ``Transpose`` pairs that make ``Gather`` copy whole
  rows pay off at large batches only; at one row they are extra nodes (~2 us).

With the split graphs (:mod:`sidecar.engines.onnx_split`), the cascade at one row runs
the stage-1 session, whose level outputs are bound to the very buffers the residual
session reads, and the residual session only when the screen flags the row: no copy
between the two, and a row the screen passes costs stage 1 alone.

The outputs are copied out of the bound buffers, so callers own what they get. The
buffers are shared, so a call that finds another thread inside returns None (the
caller takes its general path) instead of waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class _Bound:
    """``session`` with every input and output bound to a one-row buffer; buffers whose names
    are in ``shared`` are used as given (so two sessions can share them)."""

    def __init__(self, session: Any, shared: dict[str, np.ndarray]) -> None:
        self.sess = session
        feed: dict[str, np.ndarray] = {}
        for i in session.get_inputs():
            if i.name not in shared:
                raise ValueError(f"input {i.name} has no shared buffer")
            feed[i.name] = shared[i.name]
        self.outputs = [o.name for o in session.get_outputs()]
        probe = session.run(self.outputs, feed)
        self.bufs: dict[str, np.ndarray] = {}
        io = session.io_binding()
        for name, arr in feed.items():
            io.bind_input(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)
        for name, a in zip(self.outputs, probe, strict=True):
            buf = shared.get(name)
            if buf is None:
                buf = np.zeros(a.shape, dtype=a.dtype)
            elif buf.shape != a.shape or buf.dtype != a.dtype:
                raise ValueError(f"output {name} does not fit its shared buffer")
            self.bufs[name] = buf
            io.bind_output(name, "cpu", 0, buf.dtype, list(buf.shape), buf.ctypes.data)
        self.io = io
        self.run()
        if any(not np.array_equal(self.bufs[n], a) for n, a in zip(self.outputs, probe, strict=True)):
            raise ValueError("bound outputs differ from InferenceSession.run")

    def run(self) -> None:
        self.sess.run_with_iobinding(self.io)


class OneRow:
    """``full``: a session computing ``outputs`` (int32 ``bin_logit, fam_logits, stage2_logit`` and, with a
    committee member's family head, ``fam2_logits``) from
    input ``input_name`` (float32 ``[n, F]``). ``stage1``/``residual`` (optional, both or neither): the
    split sessions; stage 1 returns ``bin_logit, fam_logits`` then the levels the residual reads
    under the names ``level_inputs``."""

    def __init__(
        self,
        full: Any,
        input_name: str,
        outputs: list[str],
        n_features: int,
        stage1: Any = None,
        residual: Any = None,
        level_inputs: list[str] | None = None,
    ) -> None:
        self._x = np.zeros((1, n_features), dtype=np.float32)
        self._lock = threading.Lock()
        self._full = _Bound(full, {input_name: self._x})
        if self._full.outputs != outputs or any(b.dtype != np.int32 for b in self._full.bufs.values()):
            raise ValueError("outputs are not the contract's int32 outputs")
        self._out = [self._full.bufs[n] for n in outputs]
        self._s1: _Bound | None = None
        self._res: _Bound | None = None
        if stage1 is not None and residual is not None and level_inputs is not None:
            s1_out = [o.name for o in stage1.get_outputs()]
            if s1_out[:2] != outputs[:2] or len(s1_out) != 2 + len(level_inputs):
                raise ValueError("stage-1 outputs are not bin_logit, fam_logits and the levels")
            shared = {input_name: self._x}
            s1 = _Bound(stage1, shared)
            shared.update(zip(level_inputs, (s1.bufs[n] for n in s1_out[2:]), strict=True))
            # the residual reads the levels stage 1 just wrote: same memory, no copy
            self._res = _Bound(residual, shared)
            self._s1 = s1
            self._s1_out = [s1.bufs[n] for n in s1_out[:2]]
            self._res_out = [self._res.bufs[n] for n in self._res.outputs]  # stage2_logit (, fam2_logits)

    @property
    def cascades(self) -> bool:
        """True when :meth:`run_cascade` runs stage 2 only on a flagged row."""
        return self._s1 is not None

    def _take(self, x: np.ndarray) -> bool:
        if x.shape != self._x.shape or not self._lock.acquire(blocking=False):
            return False
        np.copyto(self._x, x, casting="unsafe")  # as np.asarray(x, dtype=float32)
        return True

    def run(self, x: np.ndarray) -> list[np.ndarray] | None:
        """``x``: one row (``[1, F]``) → copies of the outputs; None if another thread holds
        the buffers or ``x`` is not one row of F features."""
        if not self._take(x):
            return None
        try:
            self._full.run()
            return [a.copy() for a in self._out]
        finally:
            self._lock.release()

    def run_cascade(self, x: np.ndarray, screen: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray] | None:
        """Stage 1, then stage 2 only if ``screen(bin_logit)`` flags the row (else its outputs 0);
        None as in :meth:`run` (or without the split sessions)."""
        if self._s1 is None or self._res is None or not self._take(x):
            return None
        try:
            self._s1.run()
            b, f = (a.copy() for a in self._s1_out)
            if screen(b)[0]:
                self._res.run()
                s = [a.copy() for a in self._res_out]
            else:
                s = [np.zeros_like(a) for a in self._res_out]
            return [b, f, *s]
        finally:
            self._lock.release()
