"""What the pipeline is doing now, read from Redis: one snapshot, shared by the dashboard, the live
terminal view and the gateway's stream-state metrics.

Every figure covers all processes (it comes from Redis, not from one process's memory): records
accepted and predicted per route and the class mix (counters the gateway and the workers keep in the
same MULTI as the work they count), dead letters by reason, stream length, group lag and pending,
consumers and their idle time, and end-to-end latency of the requests written since the last snapshot
(from the results stream). A snapshot costs a handful of Redis commands; callers take one a second at
most, never per request.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamml import keys
from streamml.pacing import percentiles
from streamml.rollout.canary import CanaryStore
from streamml.rollout.shadow_store import ShadowStore
from streamml.stream.ids import as_text
from streamml.stream.status import StreamStatus

LATENCY_SAMPLE = 2000
"""Most results-stream entries read per snapshot for the latency percentiles (the newest ones)."""
HISTORY = 300
"""Snapshots kept for the charts: five minutes at one a second."""


@dataclass
class RouteState:
    """A route's model now and what came out of it."""

    model: str = ""
    version: str = ""
    alias: str = ""
    status: str = "ok"
    """'ok', or why the route does not resolve."""
    accepted: int = 0
    """Records accepted since the counters began (all gateway processes)."""
    predicted: int = 0
    """Records predicted (all workers)."""
    accepted_per_s: float = 0.0
    predicted_per_s: float = 0.0
    classes: dict[str, int] = field(default_factory=dict)
    """Predicted records per label, cumulative."""
    recent_classes: dict[str, int] = field(default_factory=dict)
    """Predicted records per label over the last minute."""


@dataclass
class Snapshot:
    at: float
    """Epoch seconds."""
    redis: str = "ok"
    """'ok', or why Redis could not be read (the rest is then the last known state)."""
    registry: str = "ok"
    """'ok', what is wrong with the routes' models, or 'not checked' (a view without a registry)."""
    routes: dict[str, RouteState] = field(default_factory=dict)
    stream: str = ""
    length: int = 0
    lag: int = 0
    pending: int = 0
    dead_letters: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    consumers: list[dict[str, Any]] = field(default_factory=list)
    """name, pending, idle_ms of each consumer of the group."""
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    """p50/p95/p99/max from acceptance to written, of the requests written since the previous snapshot."""
    latency_requests: int = 0
    canary: dict[str, float] = field(default_factory=dict)
    """Route -> share of its requests its challenger answers."""
    shadow: list[dict[str, Any]] = field(default_factory=list)
    """Shadow reports per (route, champion, challenger) version pair (``ShadowReport.as_dict``)."""

    drift: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Route -> drift of its current model version (``streamml.rollout.drift_monitor.drift_reports``)."""
    accuracy: list[dict[str, Any]] = field(default_factory=list)
    """Accuracy against feedback per route and version, and per shadow pair
    (``streamml.rollout.ground_truth.FeedbackStore.reports``)."""

    def current_shadow(self) -> dict[str, dict[str, Any]]:
        """Per route, the report of its newest version pair (the one a dashboard shows)."""
        return {report["route"]: report for report in self.shadow}  # reports come in version order

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelInUse:
    """What a route resolves to now, as the caller knows it (the gateway asks its registry)."""

    route: str
    model: str = ""
    version: str = ""
    alias: str = ""
    error: str | None = None


class StreamObserver:
    """Takes snapshots; keeps the previous one to turn counters into rates, and a short history."""

    def __init__(self, redis: Redis, status: StreamStatus) -> None:
        self.redis = redis
        self.status = status
        self.topology = status.topology
        self.canaries = CanaryStore(redis, self.topology)
        self.shadows = ShadowStore(redis, self.topology)
        self.history: deque[Snapshot] = deque(maxlen=HISTORY)
        self._last_result_ids: dict[str, str] = {}
        """Per results stream, the newest entry seen (absent: the first snapshot reads the newest)."""
        self._recent: deque[tuple[float, dict[str, dict[str, int]]]] = deque()

    @property
    def last(self) -> Snapshot | None:
        return self.history[-1] if self.history else None

    async def snapshot(self, models: list[ModelInUse] | None = None) -> Snapshot:
        """A new snapshot (and into the history). Redis down is a state, not an error."""
        now = time.time()
        snap = Snapshot(at=now, stream=self.topology.name)
        for model in models or []:
            snap.routes[model.route] = RouteState(
                model=model.model,
                version=model.version,
                alias=model.alias,
                status="ok" if model.error is None else f"unavailable: {model.error}",
            )
        if models is None:
            snap.registry = "not checked"  # the caller has no registry (the terminal view)
        elif any(m.error for m in models):
            snap.registry = "some routes cannot be served"
        try:
            await self._read(snap)
        except (RedisError, OSError) as exc:
            previous = self.last
            snap.redis = f"unreachable ({type(exc).__name__})"
            if previous is not None:  # keep showing the last known figures, marked stale
                for name in (
                    "length",
                    "lag",
                    "pending",
                    "dead_letters",
                    "dead_letters_by_reason",
                    "consumers",
                    "canary",
                    "shadow",
                ):
                    setattr(snap, name, getattr(previous, name))
                for route, state in previous.routes.items():
                    current = snap.routes.setdefault(route, RouteState())
                    current.accepted, current.predicted = state.accepted, state.predicted
                    current.classes = state.classes
        self.history.append(snap)
        return snap

    async def _read(self, snap: Snapshot) -> None:
        parts = self.topology.partitions
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in parts:  # on a cluster, one round trip per node
                pipe.hgetall(part.counters.accepted)
                pipe.hgetall(part.counters.predicted)
                pipe.hgetall(part.counters.dead_letters)
                pipe.hgetall(part.counters.classes)
                pipe.xlen(part.stream)
                pipe.xlen(part.dead_letters)
            replies = await pipe.execute()
        accepted: dict[str, int] = {}
        predicted: dict[str, int] = {}
        dead: dict[str, int] = {}
        classes: dict[str, int] = {}
        for i in range(len(parts)):
            six = replies[i * 6 : i * 6 + 6]
            for total, counted in zip((accepted, predicted, dead, classes), six[:4], strict=True):
                for name, count in _ints(counted).items():
                    total[name] = total.get(name, 0) + count
            snap.length += int(six[4])
            snap.dead_letters += int(six[5])
        snap.dead_letters_by_reason = dead
        for route, count in accepted.items():
            snap.routes.setdefault(route, RouteState()).accepted = count
        for route, count in predicted.items():
            snap.routes.setdefault(route, RouteState()).predicted = count
        for field_name, count in classes.items():
            route, _, label = field_name.partition(keys.CLASS_SEPARATOR)
            snap.routes.setdefault(route, RouteState()).classes[label] = count
        previous = self.last
        for route, state in snap.routes.items():  # versions learned from earlier results stay known
            before = previous.routes.get(route) if previous is not None else None
            if before is not None and not state.version:
                state.model, state.version, state.alias = before.model, before.version, before.alias
        await self._group(snap)
        await self._latency(snap)
        snap.canary = await self.canaries.shares()
        snap.shadow = [report.as_dict() for report in await self.shadows.reports()]
        self._rates(snap)

    async def _group(self, snap: Snapshot) -> None:
        group = next((g for g in await self.status.groups() if g["name"] == self.topology.group), None)
        if group is not None:
            snap.pending, snap.lag, snap.consumers = group["pending"], group["lag"], group["consumers"]

    async def _latency(self, snap: Snapshot) -> None:
        """Latency of the requests written since the previous snapshot (the newest LATENCY_SAMPLE of
        each partition's results stream; the first snapshot takes the newest there are)."""
        parts = self.topology.partitions
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in parts:
                last = self._last_result_ids.get(part.results)
                pipe.xrevrange(
                    part.results,
                    max="+",
                    min="-" if last is None else f"({last}",
                    count=LATENCY_SAMPLE,
                )
            pages: list[Any] = await pipe.execute()
        entries: list[Any] = []
        for part, page in zip(parts, pages, strict=True):
            if page:
                self._last_result_ids[part.results] = as_text(page[0][0])
                entries += page
        if not entries:
            return
        latencies = [float(fields[b"latency_ms"]) for _, fields in entries if b"latency_ms" in fields]
        snap.latency_ms = percentiles(latencies)
        snap.latency_requests = len(latencies)
        for _, fields in entries:
            route = fields.get(b"model_route")
            state = snap.routes.get(as_text(route)) if route else None
            if state is not None and not state.version:  # the caller did not say: the results do
                state.model = as_text(fields.get(b"model_name", b""))
                state.version = as_text(fields.get(b"model_version", b""))

    def _rates(self, snap: Snapshot) -> None:
        previous = self.last
        if previous is not None and previous.redis == "ok":
            seconds = max(snap.at - previous.at, 1e-3)
            for route, state in snap.routes.items():
                before = previous.routes.get(route, RouteState())
                state.accepted_per_s = round(max(state.accepted - before.accepted, 0) / seconds, 1)
                state.predicted_per_s = round(max(state.predicted - before.predicted, 0) / seconds, 1)
        self._recent.append((snap.at, {r: dict(s.classes) for r, s in snap.routes.items()}))
        while self._recent and self._recent[0][0] < snap.at - 60:
            self._recent.popleft()
        oldest = self._recent[0][1]
        for route, state in snap.routes.items():
            base = oldest.get(route, {})
            state.recent_classes = {
                label: count - base.get(label, 0)
                for label, count in state.classes.items()
                if count > base.get(label, 0)
            }


def _ints(mapping: Any) -> dict[str, int]:
    return {as_text(k): int(v) for k, v in (mapping or {}).items()}


def dumps(snap: Snapshot) -> bytes:
    return orjson.dumps(snap.as_dict())
