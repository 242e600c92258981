"""Prometheus metrics of the service (prometheus-client), served on ``/metrics``.

Counters are read from the service's own accounting at scrape time (one source of
truth, so ``/metrics`` and the exit summary always agree); the batch latency
histograms are observed by the scoring loop. Each service gets its own
``CollectorRegistry`` (no global state, several services per process in tests).

| metric | type | labels |
|---|---|---|
| ``bnn_sidecar_records_in_total`` | counter | source |
| ``bnn_sidecar_records_scored_total`` | counter | |
| ``bnn_sidecar_records_forwarded_total`` | counter | (verdicts received ready-made, e.g. ZeroMQ collector) |
| ``bnn_sidecar_records_skipped_total`` | counter | source, reason |
| ``bnn_sidecar_records_rejected_total`` | counter | reason (batches the scorer raised on) |
| ``bnn_sidecar_records_inflight`` | gauge | (read, not yet scored/forwarded/skipped/rejected) |
| ``bnn_sidecar_verdicts_total`` | counter | class |
| ``bnn_sidecar_flood_rule_flagged_total`` / ``_flood_rule_reclassed_total`` | counter | (flood rule: flagged alone / scan re-classed dos) |
| ``bnn_sidecar_guess_rule_flagged_total`` / ``_guess_rule_reclassed_total`` | counter | (guessing rule: flagged alone / scan re-classed bruteforce) |
| ``bnn_sidecar_family_agreement_vetoed_total`` | counter | (both BNNs flagged, the family head said benign; ``sidecar.family_agreement``) |
| ``bnn_sidecar_unanswered_syn_total`` / ``_twin_syn_total`` | counter | source (twins / attempts near 1: the sensor sees each packet twice) |
| ``bnn_sidecar_batches_total`` | counter | |
| ``bnn_sidecar_batch_latency_seconds`` | histogram | (first record of a micro-batch in → verdicts written) |
| ``bnn_sidecar_score_seconds`` | histogram | (features + engine + post-processing of a batch) |
| ``bnn_sidecar_queue_depth`` / ``_queue_capacity`` | gauge | (batches between sources and scorer) |
| ``bnn_sidecar_sink_errors_total`` | counter | sink |
| ``bnn_sidecar_source_errors_total`` | counter | source |
| ``bnn_sidecar_reconnects_total`` | counter | source (sources exposing ``reconnects``) |
| ``bnn_sidecar_model_info`` | info | model, sha256, engine |
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, Info, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sidecar.errors import ConfigError

if TYPE_CHECKING:
    from sidecar.service.pipeline import Service

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
P = "bnn_sidecar_"


class _ServiceCollector(Collector):
    def __init__(self, svc: Service) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        svc = self.svc
        acc = svc.accounting()
        rin = CounterMetricFamily(P + "records_in", "records read by sources", labels=["source"])
        skipped = CounterMetricFamily(P + "records_skipped", "records skipped by sources, by reason",
                                      labels=["source", "reason"])
        rec = CounterMetricFamily(P + "reconnects", "source reconnects", labels=["source"])
        srcerr = CounterMetricFamily(P + "source_errors", "source iterations that raised", labels=["source"])
        for label, src in svc.sources:
            st = getattr(src, "stats", None)
            rin.add_metric([label], getattr(st, "read", 0))
            for reason, n in sorted(getattr(st, "skipped", {}).items()):
                skipped.add_metric([label, reason], n)
            rec.add_metric([label], int(getattr(src, "reconnects", 0) or 0))
            srcerr.add_metric([label], svc.source_errors.get(label, 0))
        yield from (rin, skipped, rec, srcerr)
        yield CounterMetricFamily(P + "records_scored", "records scored by the model", value=acc["scored"])
        yield CounterMetricFamily(P + "records_forwarded", "ready-made verdicts passed to sinks",
                                  value=acc["forwarded"])
        rej = CounterMetricFamily(P + "records_rejected", "records the scorer could not handle",
                                  labels=["reason"])
        for reason, n in sorted(acc["rejected"].items()):
            rej.add_metric([reason], n)
        yield rej
        yield GaugeMetricFamily(P + "records_inflight", "records read but not yet scored/forwarded/skipped",
                                value=acc["inflight"])
        yield CounterMetricFamily(P + "batches", "micro-batches handled", value=svc.batches)
        ver = CounterMetricFamily(P + "verdicts", "verdicts by class", labels=["class"])
        for cls, n in sorted(svc.verdicts.items()):
            ver.add_metric([cls], n)
        yield ver
        scorer = getattr(svc, "scorer", None)
        yield CounterMetricFamily(P + "flood_rule_flagged", "flows only the flood rule flagged (stage 3; the model said benign)",
                                  value=getattr(scorer, "rate_flagged", 0))
        yield CounterMetricFamily(P + "flood_rule_reclassed", "flows the model flagged as scan that the flood rule re-classed as dos",
                                  value=getattr(scorer, "rate_relabelled", 0))
        yield CounterMetricFamily(P + "guess_rule_flagged",
                                  "login sessions only the guessing rule flagged (stage 4; the model said benign)",
                                  value=getattr(scorer, "guess_flagged", 0))
        yield CounterMetricFamily(P + "guess_rule_reclassed",
                                  "login sessions the model flagged as scan that the guessing rule re-classed as bruteforce",
                                  value=getattr(scorer, "guess_relabelled", 0))
        yield CounterMetricFamily(P + "family_agreement_vetoed",
                                  "flows both BNNs flagged that the family head called benign (sidecar.family_agreement)",
                                  value=getattr(scorer, "family_vetoed", 0))
        attempts = CounterMetricFamily(P + "unanswered_syn", "unanswered SYN-only TCP records of 1-2 packets",
                                       labels=["source"])
        twins = CounterMetricFamily(P + "twin_syn", "of those, two packets < 100 us apart (a sensor seeing each packet twice)",
                                    labels=["source"])
        check = getattr(scorer, "capture", None)
        for src, t in sorted(getattr(check, "sources", {}).items()):
            attempts.add_metric([src], t.attempts)
            twins.add_metric([src], t.twins)
        yield attempts
        yield twins
        se = CounterMetricFamily(P + "sink_errors", "sink calls that raised", labels=["sink"])
        for label, _ in svc.sinks:
            se.add_metric([label], svc.sink_errors.get(label, 0))
        yield se
        yield GaugeMetricFamily(P + "queue_depth", "batches waiting between sources and scorer",
                                value=svc.queue.qsize())
        yield GaugeMetricFamily(P + "queue_capacity", "bound of the source→scorer queue",
                                value=svc.queue.maxsize)


class Metrics:
    """The metric objects of one service plus the optional HTTP endpoint."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.batch_latency = Histogram(P + "batch_latency_seconds",
                                       "first record of a micro-batch received -> verdicts written to sinks",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.score_seconds = Histogram(P + "score_seconds", "scoring time of one micro-batch",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.model_info = Info(P + "model", "the model scoring flows", registry=self.registry)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    def bind(self, svc: Service) -> None:
        self.registry.register(_ServiceCollector(svc))

    def serve(self, host: str, port: int) -> tuple[str, int]:
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        self.address = (host, int(self._server.server_port))
        log.info("metrics on http://%s:%d/metrics", *self.address)
        return self.address

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
