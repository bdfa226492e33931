"""The gateway's Prometheus metrics, served at ``GET /metrics``.

Per request: one counter and one histogram in the middleware, one counter where a request is accepted
or refused. The stream's state (length, lag, pending, dead letters, consumers) and the model each route
resolves to come from the last :class:`~streamml.monitoring.observer.Snapshot` (refreshed at most once a
second, when ``/metrics`` or the dashboard asks), never from Redis per request.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from streamml.errors import BrokerUnavailable, ModelUnavailable, Overloaded, RateLimited, StreammlError
from streamml.monitoring.build_info import build_info
from streamml.monitoring.observer import Snapshot

DURATION_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REFUSAL_REASONS: dict[type[StreammlError], str] = {
    Overloaded: "backlog",
    RateLimited: "rate_limit",
    BrokerUnavailable: "redis_down",
    ModelUnavailable: "registry_down",
}

Scope = dict[str, Any]


MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""Set (by ``streamml api --processes N``) when several gateway processes share one port: each writes
its counters to files there, and whichever process a scrape reaches sums them all (prometheus_client's
multiprocess mode), so ``/metrics`` describes the gateway, not one process of it."""


FEEDBACK_OUTCOMES = ("recorded", "repeated", "unmatched")


class GatewayMetrics:
    def __init__(self, routes: list[str], snapshot: StreamStateCollector | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.routes = frozenset(routes)
        self.shared = bool(os.environ.get(MULTIPROCESS_DIR))
        if not self.shared:  # an Info cannot be summed over processes; the exposition adds it
            build_info(r, "gateway")
        self.http_requests = Counter(
            "streamml_http_requests",
            "HTTP requests answered, by path template, method and status code",
            ["handler", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "streamml_http_request_duration_seconds",
            "Time to answer an HTTP request, by path template and method",
            ["handler", "method"],
            buckets=DURATION_BUCKETS_S,
            registry=r,
        )
        self.requests_accepted = Counter(
            "streamml_requests_accepted", "Requests accepted into the stream", ["route"], registry=r
        )
        self.records_accepted = Counter(
            "streamml_records_accepted", "Records accepted into the stream", ["route"], registry=r
        )
        self.refused = Counter(
            "streamml_requests_refused",
            "Requests refused with 429 or 503 (nothing published), by reason",
            ["reason"],
            registry=r,
        )
        self.validation_failures = Counter(
            "streamml_validation_failures",
            "Requests refused with 422: a malformed body, or a record that does not fit the model's schema",
            ["route"],
            registry=r,
        )
        self.feedback_records = Counter(
            "streamml_feedback_records",
            "Feedback records: recorded, repeated (counted once already), or unmatched (no answer kept)",
            ["outcome"],
            registry=r,
        )
        self.state = snapshot or StreamStateCollector()
        r.register(self.state)
        # Known label values start at 0, so a rate over the first refusal is right and every series a
        # dashboard queries exists from the first scrape (the Prometheus guide's advice).
        for reason in REFUSAL_REASONS.values():
            self.refused.labels(reason)
        for outcome in FEEDBACK_OUTCOMES:
            self.feedback_records.labels(outcome)
        for route in self.routes:
            self.requests_accepted.labels(route)
            self.records_accepted.labels(route)
        for route in (*self.routes, "-"):
            self.validation_failures.labels(route)

    def exposition(self) -> CollectorRegistry:
        """The registry ``/metrics`` serves: this process's, or every process's summed."""
        if not self.shared:
            return self.registry
        summed = CollectorRegistry()
        MultiProcessCollector(summed)  # type: ignore[no-untyped-call]
        build_info(summed, "gateway")
        summed.register(self.state)
        return summed

    def route_label(self, route: str | None) -> str:
        """Only configured routes become label values (a client's typo must not add a series)."""
        return route if route in self.routes else "-"

    def feedback(self, recorded: int, repeated: int, unmatched: int) -> None:
        for outcome, count in zip(FEEDBACK_OUTCOMES, (recorded, repeated, unmatched), strict=True):
            self.feedback_records.labels(outcome).inc(count)

    def accepted(self, route: str, records: int) -> None:
        self.requests_accepted.labels(route).inc()
        self.records_accepted.labels(route).inc(records)

    def refused_for(self, error: StreammlError, route: str | None) -> None:
        reason = next((r for t, r in REFUSAL_REASONS.items() if isinstance(error, t)), None)
        if reason is not None:
            self.refused.labels(reason).inc()
        elif error.code == "invalid_request":
            self.validation_failures.labels(self.route_label(route)).inc()


class StreamStateCollector(Collector):
    """Gauges of the stream's state and of the model each route serves, from the last snapshot."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        if snap is None:
            return
        stream = snap.stream
        up = GaugeMetricFamily(
            "streamml_redis_up", "1 when the last stream snapshot could read Redis", labels=["stream"]
        )
        up.add_metric([stream], 1.0 if snap.redis == "ok" else 0.0)
        yield up
        age = GaugeMetricFamily(
            "streamml_stream_snapshot_age_seconds",
            "Age of the snapshot these gauges come from",
            labels=["stream"],
        )
        age.add_metric([stream], max(time.time() - snap.at, 0.0))
        yield age
        for name, help_text, value in (
            (
                "streamml_stream_length",
                "Entries in the request stream (unread, pending, or acked and not yet trimmed)",
                snap.length,
            ),
            ("streamml_stream_lag", "Entries not yet delivered to the workers' group", snap.lag),
            ("streamml_stream_pending", "Entries delivered and not yet acknowledged", snap.pending),
            ("streamml_dead_letter_stream_length", "Entries in the dead-letter stream", snap.dead_letters),
            ("streamml_stream_consumers", "Consumers in the workers' group", len(snap.consumers)),
        ):
            gauge = GaugeMetricFamily(name, help_text, labels=["stream"])
            gauge.add_metric([stream], float(value))
            yield gauge
        idle = GaugeMetricFamily(
            "streamml_stream_consumer_idle_seconds",
            "Time since each consumer of the group last read or claimed (only the consumers there now)",
            labels=["stream", "consumer"],
        )
        for consumer in snap.consumers:
            idle.add_metric([stream, consumer["name"]], consumer["idle_ms"] / 1000.0)
        yield idle
        info = GaugeMetricFamily(
            "streamml_model_info",
            "1 for the model version each route resolves to now",
            labels=["route", "model", "version", "alias"],
        )
        for route, state in snap.routes.items():
            if state.version:
                info.add_metric([route, state.model, state.version, state.alias], 1.0)
        yield info
        yield from _rollout_metrics(snap)


def _rollout_metrics(snap: Snapshot) -> Iterator[Metric]:
    """Canary shares, and each route's newest shadow pair: labels are routes, outcomes and classes only
    (bounded); which versions the figures belong to is in ``streamml_shadow_pair_info``."""
    canary = GaugeMetricFamily(
        "streamml_canary_share", "Share of a route's requests its challenger answers", labels=["route"]
    )
    for route, share in snap.canary.items():
        canary.add_metric([route], share)
    yield canary
    pairs = snap.current_shadow()
    info = GaugeMetricFamily(
        "streamml_shadow_pair_info",
        "1 for the champion and challenger versions the shadow figures of a route belong to",
        labels=["route", "model", "champion_version", "challenger_version"],
    )
    records = GaugeMetricFamily(
        "streamml_shadow_records",
        "Records of the route's newest shadow pair: compared, sampled_out, challenger_error",
        labels=["route", "outcome"],
    )
    agreement = GaugeMetricFamily(
        "streamml_shadow_agreement",
        "Share of compared records the challenger labelled as the champion did",
        labels=["route"],
    )
    flips = GaugeMetricFamily(
        "streamml_shadow_flips",
        "Compared records by champion label and challenger label",
        labels=["route", "champion_label", "challenger_label"],
    )
    for route, report in pairs.items():
        info.add_metric(
            [route, report["model"], report["champion_version"], report["challenger_version"]], 1.0
        )
        for outcome, field in (
            ("compared", "records_compared"),
            ("sampled_out", "records_sampled_out"),
            ("challenger_error", "challenger_errors"),
        ):
            records.add_metric([route, outcome], float(report[field]))
        if report["agreement"] is not None:
            agreement.add_metric([route], report["agreement"])
        for champion, row in report["flips"].items():
            for challenger, count in row.items():
                flips.add_metric([route, champion, challenger], float(count))
    yield from (info, records, agreement, flips)
    feature_drift = GaugeMetricFamily(
        "streamml_feature_drift",
        "Drift score of a feature's recent values against the training data of the route's model "
        "(normalised Wasserstein for numbers, Jensen-Shannon distance for categories)",
        labels=["route", "feature"],
    )
    drifted = GaugeMetricFamily(
        "streamml_route_drifted",
        "1 when the share of drifted features of a route reaches the threshold",
        labels=["route"],
    )
    prediction = GaugeMetricFamily(
        "streamml_prediction_drift",
        "Jensen-Shannon distance of the recent class mix from the training labels' class mix",
        labels=["route"],
    )
    for route, report in snap.drift.items():
        for feature, entry in (report.get("features") or {}).items():
            if entry["score"] is not None:
                feature_drift.add_metric([route, feature], entry["score"])
        if report.get("status") in ("ok", "drifted"):
            drifted.add_metric([route], 1.0 if report["status"] == "drifted" else 0.0)
        if report.get("prediction") and report["prediction"]["score"] is not None:
            prediction.add_metric([route], report["prediction"]["score"])
    yield from (feature_drift, drifted, prediction)
