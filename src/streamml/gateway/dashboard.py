"""The live dashboard: one page (``GET /dashboard``, no build step, nothing fetched from elsewhere) fed by
Server-Sent Events (``GET /dashboard/events``) with one snapshot a second.

Snapshots are shared: whoever asks after the last one is ``max_age_s`` old takes the next one, everyone
else gets that one, so ten open pages cost what one does. ``/metrics`` reads the same snapshots.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from importlib import resources

from redis.exceptions import RedisError

from streamml.models.registry import ModelRegistry
from streamml.monitoring.model_states import ModelStates, RouteLoad, servable
from streamml.monitoring.observer import ModelInUse, Snapshot, StreamObserver
from streamml.rollout.drift_monitor import drift_reports
from streamml.rollout.ground_truth import FeedbackStore
from streamml.settings import DriftSettings

SNAPSHOT_EVERY_S = 1.0


def page() -> str:
    return resources.files("streamml.gateway").joinpath("static/dashboard.html").read_text("utf-8")


class SnapshotHub:
    def __init__(
        self,
        observer: StreamObserver,
        registry: ModelRegistry,
        drift: DriftSettings | None = None,
        states: ModelStates | None = None,
        feedback: FeedbackStore | None = None,
    ) -> None:
        self.observer = observer
        self.registry = registry
        self.drift = drift
        self.states = states
        """What the workers report of each route's version: a version no worker can load is shown so."""
        self.feedback = feedback
        """Accuracy against the feedback received (None: not shown)."""
        self._lock = asyncio.Lock()

    async def current(self, max_age_s: float = SNAPSHOT_EVERY_S) -> Snapshot:
        """The latest snapshot, taken now if the last one is older than ``max_age_s``."""
        last = self.observer.last
        if last is not None and time.time() - last.at < max_age_s:
            return last
        async with self._lock:  # one refresh at a time; the others take its result
            last = self.observer.last
            if last is not None and time.time() - last.at < max_age_s:
                return last
            snap = await self.observer.snapshot(await self._models())
            if self.drift is not None and snap.redis == "ok":
                try:
                    snap.drift = await drift_reports(
                        self.observer.redis, self.registry, self.observer.topology, self.drift
                    )
                except (RedisError, OSError) as exc:
                    snap.redis = f"unreachable ({type(exc).__name__})"
            if self.feedback is not None and snap.redis == "ok":
                try:
                    snap.accuracy = await self.feedback.reports()
                except (RedisError, OSError) as exc:
                    snap.redis = f"unreachable ({type(exc).__name__})"
            return snap

    async def _models(self) -> list[ModelInUse]:
        out = []
        resolver = self.registry.resolver
        loads = await self._loads()
        for route in resolver.routes:
            status = await resolver.status(route)
            target = resolver.target(route)
            alias = target.alias or ""
            if status.ref is None:
                out.append(ModelInUse(route, target.name, "", alias, status.error))
                continue
            ok, load_error = servable(loads.get(route, []), status.ref.version)
            error = status.refresh_error if ok else f"no worker can load it: {load_error}"
            out.append(ModelInUse(route, status.ref.name, status.ref.version, alias, error))
        return out

    async def _loads(self) -> dict[str, list[RouteLoad]]:
        if self.states is None:
            return {}
        try:
            return await self.states.read()
        except (RedisError, OSError):
            return {}  # the snapshot says Redis is down

    async def stream(self) -> AsyncIterator[Snapshot]:
        """The recent history (so a new page draws its charts at once), then a snapshot a second."""
        sent = 0.0
        for snap in list(self.observer.history)[:-1]:
            yield snap
            sent = snap.at
        while True:
            snap = await self.current()
            if snap.at > sent:
                yield snap
                sent = snap.at
            await asyncio.sleep(max(snap.at + SNAPSHOT_EVERY_S - time.time(), 0.05))
