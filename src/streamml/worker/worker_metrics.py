"""A worker's Prometheus metrics. Each worker process exports its own series on its own port
(``streamml worker --metrics-port``); Prometheus sums them. Work is per batch and per request, never
per record: the batch's own tallies (:class:`~streamml.worker.sinks.WrittenBatch`, counted once for the
sinks and the metrics) give one increment per version and class.

Names follow Prometheus conventions: base units, ``_total`` on counters (prometheus-client adds it),
labels of bounded cardinality (route, model, version, reason, label — never a request id).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from streamml.errors import FailureReason
from streamml.monitoring.build_info import build_info
from streamml.worker.sinks import WrittenBatch, written_latency_ms

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PREDICT_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
LOAD_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class WorkerMetrics:
    """The worker's series, on a registry of its own (a test process may hold several workers)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.registry = CollectorRegistry()
        r = self.registry
        build_info(r, "worker")
        self.records = Counter(
            "streamml_records_predicted",
            "Records predicted and written",
            ["route", "model", "version"],
            registry=r,
        )
        self.requests = Counter(
            "streamml_requests_predicted",
            "Requests (stream entries) predicted and written",
            ["route", "model", "version"],
            registry=r,
        )
        self.classes = Counter(
            "streamml_predictions", "Predicted records by class label", ["route", "label"], registry=r
        )
        self.latency = Histogram(
            "streamml_end_to_end_latency_seconds",
            "From gateway acceptance to the prediction written, per request",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.batch_records = Histogram(
            "streamml_batch_records", "Records in one micro-batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.predict = Histogram(
            "streamml_predict_duration_seconds",
            "One batched predict call",
            ["model", "version"],
            buckets=PREDICT_BUCKETS_S,
            registry=r,
        )
        self.model_load = Histogram(
            "streamml_model_load_duration_seconds",
            "Downloading and loading one model version",
            ["model", "version"],
            buckets=LOAD_BUCKETS_S,
            registry=r,
        )
        self.dead_letters = Counter(
            "streamml_dead_letters", "Entries moved to the dead-letter stream", ["reason"], registry=r
        )
        self.retries = Counter(
            "streamml_failed_attempts",
            "Failed deliveries left pending for a retry",
            ["reason"],
            registry=r,
        )
        self.claimed = Counter(
            "streamml_entries_claimed",
            "Idle entries taken over from other consumers (XAUTOCLAIM)",
            registry=r,
        )
        self.reconnects = Counter(
            "streamml_redis_reconnect_attempts", "Attempts to reach Redis again after losing it", registry=r
        )

        for reason in FailureReason:  # known label values start at 0 (see gateway/metrics.py)
            self.dead_letters.labels(reason.value)
            self.retries.labels(reason.value)

    def batch(
        self, batch: WrittenBatch, dead: Sequence[FailureReason], retried: Sequence[FailureReason]
    ) -> None:
        """One written batch: per version and class (the batch's own tallies), per request latency."""
        if not self.enabled:
            return
        for (route, model, version), tally in batch.by_version.items():
            self.requests.labels(route, model, version).inc(tally.requests)
            self.records.labels(route, model, version).inc(tally.records)
            self.predict.labels(model, version).observe(tally.predict_ms / 1000.0)
        for (route, label), count in batch.classes.items():
            self.classes.labels(route, label).inc(count)
        latency: dict[str, Any] = {}  # one child per route: labels() costs more than observe()
        for result in batch.results:
            route = result.request.route
            child = latency.get(route) or latency.setdefault(route, self.latency.labels(route))
            child.observe(written_latency_ms(result, batch.written_ms) / 1000.0)
        if batch.records:
            self.batch_records.observe(batch.records)
        for reason in dead:
            self.dead_letters.labels(reason.value).inc()
        for reason in retried:
            self.retries.labels(reason.value).inc()
