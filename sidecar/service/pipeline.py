"""The service's data path: source threads → bounded queue → micro-batcher → scorer → sinks.

* One thread per source iterates it and puts ``(source, batch, token)`` on a bounded
  queue; a full queue blocks the source (back-pressure), never drops.
* One scoring loop (the caller's thread, :meth:`Service.run`) takes batches, closes
  micro-batches at ``batch_max`` records or ``batch_ms`` after their first record,
  scores them and writes every sink. With ``close_when_idle`` (default) an open
  micro-batch also closes as soon as the queue is empty (no more input is waiting):
  under load the queue is rarely empty and batches still fill up to ``batch_max``;
  at low rates a record does not wait ``batch_ms`` for company that is not coming.
  A :class:`VerdictBatch` from a source (ZeroMQ collector) goes straight to the sinks.
  A sink that raises is logged and counted; the others go on.
* Stop (:meth:`request_stop`, signal-safe): sources are closed, every queued batch is
  still scored and written (drain), sinks are flushed and closed, checkpoints saved.
* Accounting: records in (source ``stats.read``) = scored + forwarded + skipped (by
  reason) + in flight; in flight is 0 after a clean stop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from typing import Any

from sidecar.batching import Closed, MicroBatcher
from sidecar.flow import FlowBatch
from sidecar.scorer import Scorer
from sidecar.service.metrics import Metrics
from sidecar.verdict import VerdictBatch

log = logging.getLogger(__name__)

_END = object()
MAX_ERROR_LOGS = 20


class Service:
    def __init__(self, sources: list[tuple[str, Any]], sinks: list[tuple[str, Any]], scorer: Scorer,
                 batch_max: int = 1024, batch_ms: float = 50.0, queue_batches: int = 64,
                 checkpoint_interval: float = 1.0, idle_exit: float = 0.0,
                 metrics: Metrics | None = None, stop_timeout: float = 10.0,
                 close_when_idle: bool = True) -> None:
        self.sources = sources
        self.sinks = sinks
        self.scorer = scorer
        self.batcher = MicroBatcher(batch_max, batch_ms)
        #: close the open micro-batch when no input is waiting instead of holding it for ``batch_ms``
        self.close_when_idle = close_when_idle
        self.queue: queue.Queue[tuple[int, Any, Any]] = queue.Queue(maxsize=queue_batches)
        self.checkpoint_interval = checkpoint_interval
        self.idle_exit = idle_exit
        self.metrics = metrics
        #: after a stop request, give up waiting for sources that do not end after this many seconds
        self.stop_timeout = stop_timeout
        self.scored = 0
        self.forwarded = 0
        #: records the scorer could not handle, by reason (counted, passed to sinks' ``reject``)
        self.rejected: Counter[str] = Counter()
        self.batches = 0
        self.verdicts: Counter[str] = Counter()
        self.sink_errors: Counter[str] = Counter()
        self.source_errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._reopen = threading.Event()
        self._abort = threading.Event()
        self._threads: list[threading.Thread] = []
        self._done: set[int] = set()
        self._err_logs = 0
        if metrics is not None:
            metrics.bind(self)

    # -- control (thread- and signal-safe) ---------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def request_reopen(self) -> None:
        self._reopen.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- accounting -------------------------------------------------------------

    def accounting(self) -> dict[str, Any]:
        read = emitted = 0
        skipped: Counter[str] = Counter()
        missing: Counter[str] = Counter()
        for _, src in self.sources:
            st = getattr(src, "stats", None)
            read += int(getattr(st, "read", 0))
            emitted += int(getattr(st, "emitted", 0))
            skipped.update(getattr(st, "skipped", {}))
            missing.update(getattr(st, "missing", {}))
        nskip = sum(skipped.values())
        extra = {"values_missing": dict(sorted(missing.items()))} if missing else {}
        return {
            "records_in": read,
            "emitted": emitted,
            "scored": self.scored,
            "forwarded": self.forwarded,
            "skipped": dict(sorted(skipped.items())),
            "rejected": dict(self.rejected),
            "inflight": read - self.scored - self.forwarded - nskip - sum(self.rejected.values()),
            "verdicts": dict(sorted(self.verdicts.items())),
            "batches": self.batches,
            "sink_errors": dict(self.sink_errors),
            "source_errors": dict(self.source_errors),
            **extra,  # values the readers set to missing (records kept), only when it happened
        }

    # -- source threads -----------------------------------------------------------

    def _pump(self, idx: int) -> None:
        label, src = self.sources[idx]
        take = getattr(src, "take_token", None)
        try:
            for item in src:
                tok = take() if take is not None else None
                while True:
                    try:
                        self.queue.put((idx, item, tok), timeout=0.2)
                        break
                    except queue.Full:
                        if self._abort.is_set():
                            log.error("source %s: scorer is gone; dropping a batch of %d", label, len(item))
                            return
        except Exception:
            self.source_errors[label] += 1
            log.exception("source %s failed; it stops, the other sources go on", label)
        finally:
            while not self._abort.is_set():
                try:
                    self.queue.put((idx, _END, None), timeout=0.2)
                    break
                except queue.Full:
                    continue

    # -- sinks ------------------------------------------------------------------------

    def _sink_call(self, label: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.sink_errors[label] += 1
            if self._err_logs < MAX_ERROR_LOGS:
                self._err_logs += 1
                log.error("sink %s: %s: %s (counted; other sinks go on)", label, type(exc).__name__, exc,
                          exc_info=self._err_logs == 1)

    def _emit(self, v: VerdictBatch) -> None:
        for label, sink in self.sinks:
            self._sink_call(label, sink.write, v)
        for label, sink in self.sinks:
            self._sink_call(label, sink.flush)
        self.verdicts.update(map(str, v.cls.tolist()))  # per-class counts (np.unique on a str copy: ~3x the time)

    def _handle_closed(self, c: Closed) -> None:
        if len(c.batch):
            t0 = time.perf_counter()
            try:
                v = self.scorer.score(c.batch, source=c.key)
            except Exception as exc:  # a batch the model cannot take must not stop the service
                self._reject(c, exc)
                return
            if self.metrics is not None:
                self.metrics.score_seconds.observe(time.perf_counter() - t0)
            self._emit(v)
            self.scored += len(c.batch)
            self.batches += 1
            if self.metrics is not None:
                self.metrics.batch_latency.observe(time.monotonic() - c.opened)
        self._commit(c)

    def _reject(self, c: Closed, exc: Exception) -> None:
        n = len(c.batch)
        self.rejected["score-error"] += n
        log.error("could not score a batch of %d records (%s: %s); counted as rejected", n,
                  type(exc).__name__, exc)
        for label, sink in self.sinks:
            rej = getattr(sink, "reject", None)
            if rej is not None:
                self._sink_call(label, rej, c.batch, "score-error", str(exc))
        self._commit(c)

    def _commit(self, c: Closed) -> None:
        for src_idx, tok in c.tags:
            commit = getattr(self.sources[src_idx][1], "commit", None)
            if commit is not None:
                commit(tok)

    def _checkpoint(self) -> None:
        for label, sink in self.sinks:
            tick = getattr(sink, "tick", None)  # timed work, e.g. the block sink's TTL expiry
            if tick is not None:
                self._sink_call(label, tick)
            self._sink_call(label, sink.flush)
        for label, src in self.sources:
            save = getattr(src, "save_checkpoint", None)
            if save is None:
                continue
            try:
                save()
            except Exception as exc:
                log.error("source %s: cannot save checkpoint: %s", label, exc)

    # -- the scoring loop ------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run until stopped (or every source has ended); return the accounting summary."""
        for i, (label, _) in enumerate(self.sources):
            t = threading.Thread(target=self._pump, args=(i,), name=f"source-{label}", daemon=True)
            t.start()
            self._threads.append(t)
        closed_sources = False
        closed_at = 0.0
        last_ckpt = last_activity = time.monotonic()
        try:
            while True:
                if self._stop.is_set() and not closed_sources:
                    closed_sources = True
                    closed_at = time.monotonic()
                    log.info("stopping: closing sources, draining queued batches")
                    self._close_sources()
                if self._reopen.is_set():
                    self._reopen.clear()
                    log.info("reopening sinks")
                    for label, sink in self.sinks:
                        self._sink_call(label, sink.reopen)
                now = time.monotonic()
                dl = self.batcher.deadline()
                timeout = 0.1 if dl is None else min(0.1, max(0.0005, dl - now))
                try:
                    idx, item, tok = self.queue.get(timeout=timeout)
                except queue.Empty:
                    item = None
                if item is _END:
                    self._done.add(idx)
                elif isinstance(item, VerdictBatch):
                    last_activity = time.monotonic()
                    self._emit(item)
                    self.forwarded += len(item)
                    if tok is not None:
                        self._handle_closed(Closed(FlowBatch.empty(), [(idx, tok)]))
                elif isinstance(item, FlowBatch):
                    if len(item):
                        last_activity = time.monotonic()
                    for c in self.batcher.add(item, None if tok is None else (idx, tok), key=self.sources[idx][0]):
                        self._handle_closed(c)
                aged = self.batcher.poll()
                if aged is not None:
                    self._handle_closed(aged)
                elif self.close_when_idle and self.batcher.pending and self.queue.empty():
                    idle = self.batcher.flush()
                    if idle is not None:
                        self._handle_closed(idle)
                now = time.monotonic()
                if now - last_ckpt >= self.checkpoint_interval:
                    last_ckpt = now
                    self._checkpoint()
                if (self.idle_exit and not self._stop.is_set() and now - last_activity > self.idle_exit
                        and self.queue.empty() and not self.batcher.pending):
                    log.info("idle for %.1f s: stopping", self.idle_exit)
                    self.request_stop()
                if len(self._done) == len(self.sources) and self.queue.empty():
                    break
                if closed_sources and now - closed_at > self.stop_timeout and self.queue.empty():
                    stuck = [lb for i, (lb, _) in enumerate(self.sources) if i not in self._done]
                    log.error("sources %s did not end %.0f s after close(); exiting without them",
                              stuck, self.stop_timeout)
                    self._abort.set()
                    break
        except BaseException:
            self._abort.set()
            raise
        finally:
            rest = self.batcher.flush()
            if rest is not None:
                try:
                    self._handle_closed(rest)
                except Exception:
                    log.exception("could not score the last micro-batch at shutdown")
            self._close_sources()
            for t in self._threads:
                t.join(timeout=0.2 if self._abort.is_set() else 2.0)
            self._checkpoint()
            for label, sink in self.sinks:
                self._sink_call(label, sink.close)
        return self.accounting()

    def _close_sources(self) -> None:
        for label, src in self.sources:
            try:
                src.close()
            except Exception as exc:
                log.error("source %s: close failed: %s", label, exc)
