"""The stream worker: read micro-batches from the consumer group, predict, write the sinks, then ack.

Delivery is at-least-once. An entry is acknowledged only after every sink has its predictions, or
after it has been moved to the dead-letter stream with the reason. A failed entry stays pending and
is claimed again (XAUTOCLAIM) once it has been idle ``claim_idle_ms``; after ``max_deliveries`` it is
dead-lettered. Entries of a consumer that died are claimed the same way by the live ones.

This module owns the loop: where entries come from (new ones, this consumer's own pending ones after a
restart, idle ones claimed from others), heart-beats, trimming, the reconnect policy and shutdown. One
micro-batch is :mod:`streamml.stream.batch` (the retry policy and the counts); Redis commands are the
broker's (:mod:`streamml.stream.broker`), inference is dispatch's (:mod:`streamml.models.dispatch`),
writing is the sinks' (:mod:`streamml.stream.sinks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence

from redis.asyncio import Redis

from streamml.errors import ModelUnavailable, RedisUnreachable, StreamGroupNotFound
from streamml.models.dispatch import Rollout
from streamml.models.registry import ModelRegistry
from streamml.settings import Settings
from streamml.stream.batch import REDIS_DOWN, BatchHandler, WorkerStats
from streamml.stream.broker import Broker
from streamml.stream.drift import DriftMonitor
from streamml.stream.metrics import WorkerMetrics
from streamml.stream.rollout import RolloutStore
from streamml.stream.sinks import CsvSink, RedisSink, Sink

log = logging.getLogger(__name__)

RECONNECT_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
"""Pauses between attempts while Redis is unreachable; the last one repeats."""
BURST_RETRY_PAUSE_S = 0.05
"""Burst mode: a failing dependency gets this moment before the next attempt."""


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Reconnect:
    """The one policy for a Redis outage: back off, log every attempt with how long it has lasted,
    and give up with :class:`RedisUnreachable` after ``give_up_s`` (0: never)."""

    def __init__(
        self,
        give_up_s: float,
        sleep: Callable[[float], Awaitable[None]],
        on_attempt: Callable[[], None] = lambda: None,
    ) -> None:
        self.give_up_s = give_up_s
        self._sleep = sleep
        self._on_attempt = on_attempt
        self._since: float | None = None
        self._attempt = 0

    def connected(self) -> None:
        if self._since is not None:
            log.info("Redis reachable again after %.1fs", time.monotonic() - self._since)
        self._since, self._attempt = None, 0

    async def wait(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._since = self._since if self._since is not None else now
        down_s = now - self._since
        if self.give_up_s > 0 and down_s >= self.give_up_s:
            log.error("Redis unreachable for %.0fs (%s); giving up", down_s, type(exc).__name__)
            raise RedisUnreachable(f"Redis unreachable for {down_s:.0f}s: {exc}") from exc
        pause = RECONNECT_BACKOFF_S[min(self._attempt, len(RECONNECT_BACKOFF_S) - 1)]
        self._attempt += 1
        self._on_attempt()
        log.warning(
            "Redis unreachable for %.1fs (%s, attempt %d); retrying in %.1fs",
            down_s,
            type(exc).__name__,
            self._attempt,
            pause,
        )
        await self._sleep(pause)


class Worker:
    """One consumer of the group. ``run(burst=True)`` drains the stream and returns (tests, backfills)."""

    def __init__(
        self,
        redis: Redis,
        registry: ModelRegistry,
        settings: Settings,
        *,
        consumer: str | None = None,
        sinks: Sequence[Sink] | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.config = settings.worker
        self.broker = Broker(redis, settings.streams)
        self.consumer = consumer or self.config.consumer or default_consumer_name()
        self.sinks = list(sinks or (CsvSink(settings.predictions_csv()), RedisSink(settings.streams)))
        self.stats = WorkerStats()
        self.metrics = metrics or WorkerMetrics(enabled=settings.metrics)
        self.batches = BatchHandler(
            self.broker, registry, self.sinks, self.consumer, settings.worker, self.stats, self.metrics
        )
        self.rollouts = RolloutStore(redis, settings.streams.stream)
        if settings.drift.enabled:
            self.batches.drift = DriftMonitor(
                redis, registry, settings.streams.stream, self.consumer, settings.drift
            )
        self.drift_publish_s = settings.drift.publish_s
        self.shadow_sample = settings.shadow_sample
        self.stopping = asyncio.Event()
        self._reconnect = Reconnect(self.config.redis_give_up_s, self._sleep, self.metrics.reconnects.inc)
        self._due = {"heartbeat": 0.0, "claim": 0.0, "trim": time.monotonic(), "rollout": 0.0, "drift": 0.0}

    def stop(self) -> None:
        """Ask the loop to finish its current batch and return (signal handlers call this)."""
        self.stopping.set()

    async def run(self, *, burst: bool = False) -> WorkerStats:
        try:
            await self._until_done(self.broker.ensure_group)
            await self._warm_up()
            await self._until_done(self._refresh_rollout)
            log.info("worker %s reading %s as group %s", self.consumer, self.broker.stream, self.broker.group)
            # First our own pending entries: a restart under the same name resumes where it stopped.
            await self._until_done(self._drain_own_pending)
            while not self.stopping.is_set():
                try:
                    more = await self._step(burst)
                    self._reconnect.connected()
                    if not more:
                        break
                except REDIS_DOWN as exc:
                    await self._reconnect.wait(exc)
                except StreamGroupNotFound as exc:
                    log.error("%s", exc)
                    await self._until_done(self.broker.ensure_group)
        finally:
            await self._shutdown()
        return self.stats

    async def _step(self, burst: bool) -> bool:
        """One turn of the loop; False when a burst run has nothing left to do."""
        now = time.monotonic()
        if now >= self._due["heartbeat"]:
            await self.broker.heartbeat(self.consumer)
            self._due["heartbeat"] = now + self.config.heartbeat_s
        if now >= self._due["rollout"]:
            await self._refresh_rollout()
        if now >= self._due["drift"] and self.batches.drift is not None:
            await self.batches.drift.publish()
            self._due["drift"] = now + self.drift_publish_s
        if now >= self._due["claim"]:
            await self._claim_idle()
            self._due["claim"] = time.monotonic() + self.config.claim_interval_s
        if now >= self._due["trim"]:
            await self.broker.trim_acknowledged()
            self._due["trim"] = now + self.config.trim_interval_s
        raw = await self.broker.read_new(self.consumer, self.config.batch_entries, self.config.block_ms)
        if raw:
            await self.batches.handle(raw)
            return True
        return not burst or await self._retry_own_failures()

    async def _refresh_rollout(self) -> None:
        """Pick up the canary shares (``streamml canary set``) every worker follows."""
        self.batches.rollout = Rollout(await self.rollouts.canary(), self.shadow_sample)
        self._due["rollout"] = time.monotonic() + self.config.rollout_refresh_s

    async def _until_done(self, operation: Callable[[], Awaitable[None]]) -> None:
        while not self.stopping.is_set():
            try:
                await operation()
                self._reconnect.connected()
                return
            except REDIS_DOWN as exc:
                await self._reconnect.wait(exc)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)

    async def _shutdown(self) -> None:
        try:
            await self.broker.forget_worker(self.consumer)
            if self.batches.drift is not None:  # its window still describes recent records
                await self.batches.drift.publish()
        except REDIS_DOWN:
            log.warning("could not deregister consumer %s: Redis unreachable", self.consumer)
        for sink in self.sinks:
            sink.close()
        stats = self.stats
        log.info(
            "worker %s stopped: %d entries, %d records, %d dead-lettered",
            self.consumer,
            stats.entries,
            stats.records,
            stats.dead_lettered,
        )

    async def _warm_up(self) -> None:
        """Load every route's model before reading, so no entry waits on a model load (and is not
        taken for a dead consumer's meanwhile). A model that cannot load now is retried per batch."""
        for route in self.registry.routes:
            try:
                await asyncio.to_thread(self.registry.load, await self.registry.aresolve(route))
            except ModelUnavailable as exc:
                log.warning("cannot load the model of route %s yet: %s", route, exc)
        # Models and libraries are loaded: keep the collector from walking them on every full pass.
        gc.collect()
        gc.freeze()

    # -- where entries come from ---------------------------------------------------------------

    async def _drain_own_pending(self) -> None:
        """Process entries delivered to this consumer name before and never acked."""
        after = "0"
        while not self.stopping.is_set():
            raw = await self.broker.read_own_pending(self.consumer, self.config.batch_entries, after)
            if not raw:
                return
            await self.batches.handle(
                raw, await self.broker.delivery_counts(self.consumer, [sid for sid, _ in raw])
            )
            after = raw[-1][0]

    async def _claim_idle(self) -> None:
        """Take over entries idle past ``claim_idle_ms`` (dead consumers', or failed attempts)."""
        start = "0-0"
        while not self.stopping.is_set():
            page = await self.broker.claim_idle(
                self.consumer, self.config.claim_idle_ms, start, self.config.batch_entries
            )
            if page.deleted:
                log.warning("%d pending entries were trimmed before they were processed", len(page.deleted))
            if page.entries:
                log.info("claimed %d idle entries", len(page.entries))
                self.metrics.claimed.inc(len(page.entries))
                ids = [sid for sid, _ in page.entries]
                await self.batches.handle(page.entries, await self.broker.delivery_counts(self.consumer, ids))
            if page.next_start in ("0-0", "0"):
                return
            start = page.next_start

    async def _retry_own_failures(self) -> bool:
        """Burst mode: retry entries this consumer failed without waiting for the idle time.
        False when there is nothing left to retry."""
        ids = await self.broker.own_pending_ids(self.consumer, self.config.batch_entries)
        if not ids:
            return False
        raw = await self.broker.claim(self.consumer, ids)
        await asyncio.sleep(BURST_RETRY_PAUSE_S)
        await self.batches.handle(raw, await self.broker.delivery_counts(self.consumer, ids))
        return True
