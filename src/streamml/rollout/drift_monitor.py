"""Drift over the stream: each worker keeps a window of the records its champions predicted, per route,
and writes it to Redis every few seconds; a report merges the windows of every live worker for the
route's current model version and scores them against that version's training profile
(:mod:`streamml.models.drift` has the statistics).

Canary answers are left out: the window describes what the champion saw and answered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from streamml.errors import ModelUnavailable
from streamml.models.dispatch import Scored
from streamml.models.drift import DriftWindow, Thresholds, WindowCounts, drift_report
from streamml.models.refs import ModelRef
from streamml.models.registry import ModelRegistry
from streamml.output_kinds import PREDICT
from streamml.rows import Rows
from streamml.settings import DriftSettings
from streamml.stream.topology import StreamTopology

log = logging.getLogger(__name__)

UNKNOWN_RETRY_S = 60.0
"""How long a version without a training profile waits before the registry is asked again."""


def thresholds(settings: DriftSettings) -> Thresholds:
    return Thresholds(settings.threshold, settings.null_rate_threshold, settings.share, settings.min_records)


@dataclass
class _RouteWindow:
    model: ModelRef
    window: DriftWindow | None
    """None: the version has no training profile (drift "unknown")."""
    checked_s: float
    allowance: float = 0.0
    """Records the rate cap lets in now (a token bucket refilled at ``max_records_per_s``)."""
    refilled_s: float = 0.0

    def admit(self, offered: int, rate: float, now: float) -> int:
        """How many of ``offered`` records the window takes now (all of them when uncapped)."""
        if rate <= 0:
            return offered
        self.allowance = min(self.allowance + (now - self.refilled_s) * rate, rate)
        self.refilled_s = now
        taken = min(offered, int(self.allowance))
        self.allowance -= taken
        return taken


class DriftMonitor:
    """A worker's windows, one per route (restarted when the route's champion version changes)."""

    def __init__(
        self,
        redis: Redis,
        registry: ModelRegistry,
        topology: StreamTopology,
        consumer: str,
        settings: DriftSettings,
    ) -> None:
        self.redis = redis
        self.registry = registry
        self.topology = topology
        self.consumer = consumer
        self.settings = settings
        self._routes: dict[str, _RouteWindow] = {}

    async def observe(self, results: Sequence[Scored[Any]]) -> None:
        """Add a batch's champion answers to their routes' windows."""
        by_route: dict[str, list[Scored[Any]]] = {}
        for result in results:
            if not result.canary and result.request.output == PREDICT:
                by_route.setdefault(result.request.route, []).append(result)
        for route, scored in by_route.items():
            model = scored[0].model
            current = self._routes.get(route)
            if current is None or current.model != model or self._retry_due(current):
                current = self._routes[route] = await self._start(model)
            if current.window is None:
                continue
            parts: list[Rows] = []
            labels: list[str] = []
            for result in scored:
                if result.model == model:
                    parts.append(result.request.rows)
                    if result.categorical:  # the class mix: only a classifier's labels have one
                        labels += map(str, result.labels)
            if not parts:
                continue
            rows = Rows.concat(parts)
            taken = current.admit(len(rows), self.settings.max_records_per_s, time.monotonic())
            if taken < len(rows):  # evenly spread over the batch; only those become records
                picks = [index * len(rows) // taken for index in range(taken)]
                records = rows.pick(picks)
                labels = [labels[i] for i in picks] if labels else []
            else:
                records = rows.records
            if records:
                current.window.add(records, labels)

    def _retry_due(self, current: _RouteWindow) -> bool:
        return current.window is None and time.monotonic() - current.checked_s > UNKNOWN_RETRY_S

    async def _start(self, model: ModelRef) -> _RouteWindow:
        try:
            reference = await self.registry.catalog.reference(model)
        except ModelUnavailable as exc:
            log.warning("no drift reference for %s: %s", model.uri, exc)
            reference = None
        window = None
        if reference is not None:
            window = DriftWindow(
                reference, max_records=self.settings.window_records, max_age_s=self.settings.window_s
            )
        now = time.monotonic()
        return _RouteWindow(model, window, now, self.settings.max_records_per_s, now)

    async def publish(self) -> None:
        """Write every window (its counts, model version and age) where reports read them."""
        now_s = time.time()
        ttl = int(self.settings.window_s) + 60
        async with self.redis.pipeline(transaction=False) as pipe:
            for route, current in self._routes.items():
                document: dict[str, Any] = {
                    "model": current.model.name,
                    "version": current.model.version,
                    "at": now_s,
                }
                if current.window is not None:
                    document["counts"] = current.window.flush(now_s).as_dict()
                key = self.topology.drift(route)
                pipe.hset(key, self.consumer, orjson.dumps(document))
                pipe.expire(key, ttl)
            await pipe.execute()


async def drift_reports(
    redis: Redis,
    registry: ModelRegistry,
    topology: StreamTopology,
    settings: DriftSettings,
    route: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Per route: its current model version's drift, over every live worker's window of that version."""
    out: dict[str, dict[str, Any]] = {}
    # A stopped worker's last window still counts until its records are older than the window.
    fresh_after = time.time() - settings.window_s
    for name in [route] if route else registry.routes:
        status = await registry.resolver.status(name)
        if status.ref is None:
            out[name] = {"status": "unknown", "reason": f"the route does not resolve: {status.error}"}
            continue
        ref = status.ref
        merged = WindowCounts()
        workers = 0
        raw: Any = await redis.hgetall(topology.drift(name))
        for document in (orjson.loads(value) for value in raw.values()):
            if document["version"] != ref.version or document["at"] < fresh_after or "counts" not in document:
                continue
            merged.add(WindowCounts.from_dict(document["counts"]))
            workers += 1
        reference = await registry.catalog.reference(ref)
        report = drift_report(reference, merged, thresholds(settings))
        out[name] = {"model": ref.name, "version": ref.version, "workers": workers} | report
    return out
