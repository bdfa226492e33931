"""The stream worker: read micro-batches from the consumer group, predict, write the sinks, then ack.

Delivery is at-least-once. An entry is acknowledged only after every sink has its predictions, or
after it has been moved to the dead-letter stream with the reason. A failed entry stays pending and
is claimed again (XAUTOCLAIM) once it has been idle ``claim_idle_ms``; after ``max_deliveries`` it is
dead-lettered. Entries of a consumer that died are claimed the same way by the live ones.

This module owns the loop: where entries come from (new ones, this consumer's own pending ones after a
restart, idle ones claimed from others), heart-beats, trimming, the reconnect policy and shutdown. One
micro-batch is :mod:`streamml.worker.batch` (the retry policy and the counts); consumer-group commands
are the consumer's (:mod:`streamml.stream.consumer`), inference is dispatch's
(:mod:`streamml.models.dispatch`), writing is the sinks' (:mod:`streamml.worker.sinks`).
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

from redis.asyncio import Redis, RedisCluster

from streamml.errors import ModelUnavailable, StreamGroupNotFound
from streamml.models.refs import ModelRef
from streamml.models.registry import ModelRegistry
from streamml.models.schema import InputSchema
from streamml.models.traffic import Rollout
from streamml.monitoring.model_states import ModelStates
from streamml.rollout.canary import CanaryStore
from streamml.rollout.drift_monitor import DriftMonitor
from streamml.settings import Settings
from streamml.stream.consumer import Consumer, RawEntry
from streamml.stream.nodes import SlotClients, leaked_connection_error
from streamml.stream.topology import StreamTopology
from streamml.worker.answer_sink import AnswerSink
from streamml.worker.batch import BatchHandler, WorkerStats
from streamml.worker.health import WorkerHealth
from streamml.worker.loads import route_loads
from streamml.worker.prediction_log import PredictionLog
from streamml.worker.reconnect import REDIS_DOWN, Reconnect
from streamml.worker.sinks import CsvSink, RedisSink, Sink
from streamml.worker.worker_metrics import WorkerMetrics

log = logging.getLogger(__name__)

BURST_RETRY_PAUSE_S = 0.05
"""Burst mode: a failing dependency gets this moment before the next attempt."""
PARTITION_BLOCK_MS = 500
"""With several partitions, a reader blocks at least this long: an entry wakes it at once anyway, and
with one task per partition the short single-stream wait (``block_ms``, which paces that loop's
housekeeping) would have every idle partition ask Redis 50 times a second."""


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    """One consumer of the group. ``run(burst=True)`` drains the stream and returns (tests, backfills).

    With several partitions, one task reads each (a cluster refuses one XREADGROUP across slots, and a
    blocking read per partition wakes at once whichever partition gets work); they take turns at
    processing, so a worker still predicts one batch at a time and holds at most one unprocessed batch
    per partition."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        registry: ModelRegistry,
        settings: Settings,
        *,
        consumer: str | None = None,
        sinks: Sequence[Sink] | None = None,
        metrics: WorkerMetrics | None = None,
        health: WorkerHealth | None = None,
    ) -> None:
        self.registry = registry
        self.config = settings.worker
        self.topology = StreamTopology.of(settings.stream, cluster=settings.redis.cluster)
        name = consumer or self.config.consumer or default_consumer_name()
        self.consumer = Consumer(SlotClients(redis), self.topology, name)
        self.sinks = list(sinks or self._default_sinks(settings, registry, name))
        self.stats = WorkerStats()
        self.metrics = metrics or WorkerMetrics(enabled=settings.metrics)
        self.drift: DriftMonitor | None = None
        if settings.drift.enabled:
            self.drift = DriftMonitor(
                self.consumer.slots.redis, registry, self.topology, name, settings.drift
            )
        self.handlers = [
            BatchHandler(
                self.consumer,
                part,
                registry,
                self.sinks,
                settings.worker,
                self.stats,
                self.metrics,
                self.drift,
            )
            for part in self.topology.partitions
        ]
        self.canaries = CanaryStore(self.consumer.slots.redis, self.topology)
        self.model_states = ModelStates(self.consumer.slots.redis, self.topology)
        self.drift_publish_s = settings.drift.publish_s
        self.shadow_sample = settings.rollout.shadow_sample
        self.rollout_refresh_s = settings.rollout.refresh_s
        self.stopping = asyncio.Event()
        self._turn = asyncio.Lock()
        """Held while a batch is processed: partitions take turns."""
        self._reconnect = Reconnect(self.config.redis_give_up_s, self._sleep, self.metrics.reconnects.inc)
        self.health = health or WorkerHealth()
        """What the metrics port's /ready answers."""
        self.health.reconnect = self._reconnect
        now = time.monotonic()
        self._due = {"heartbeat": 0.0, "rollout": 0.0, "drift": 0.0}
        self._claim_due = [0.0] * len(self.handlers)
        self._block_ms = (
            self.config.block_ms if len(self.handlers) == 1 else max(self.config.block_ms, PARTITION_BLOCK_MS)
        )
        self._trim_due = [now] * len(self.handlers)

    @property
    def name(self) -> str:
        """This worker's consumer name in the group."""
        return self.consumer.name

    def stop(self) -> None:
        """Ask the loop to finish its current batch and return (signal handlers call this)."""
        self.stopping.set()

    def _default_sinks(self, settings: Settings, registry: ModelRegistry, name: str) -> list[Sink]:
        sinks: list[Sink] = [CsvSink(settings.predictions_csv()), RedisSink(self.topology, settings.stream)]
        if settings.prediction_log.enabled:

            def schema_of(ref: ModelRef) -> InputSchema | None:
                model = registry.loader.loaded(ref)
                return model.schema if model is not None else None

            sinks.append(
                PredictionLog(settings.prediction_log, settings.prediction_log_dir(), name, schema_of)
            )
        if settings.feedback.enabled:
            sinks.append(AnswerSink(settings.feedback.ttl_s))
        return sinks

    async def run(self, *, burst: bool = False) -> WorkerStats:
        try:
            await self._until_done(self.consumer.ensure_groups)
            await self._warm_up()
            await self._until_done(self._refresh_rollout)
            log.info(
                "worker %s reading %s (%d partition(s)) as group %s",
                self.name,
                self.topology.name,
                self.topology.count,
                self.topology.group,
            )
            async with asyncio.TaskGroup() as tasks:
                for handler in self.handlers:
                    tasks.create_task(self._consume(handler, burst))
        finally:
            await self._shutdown()
        return self.stats

    async def _consume(self, handler: BatchHandler, burst: bool) -> None:
        """Read and process one partition until stopped (or, in burst mode, until it is drained)."""
        # First our own pending entries: a restart under the same name resumes where it stopped.
        await self._until_done(lambda: self._drain_own_pending(handler))
        while not self.stopping.is_set():
            try:
                more = await self._step(handler, burst)
                self._reconnect.connected()
                if not more:
                    await handler.flush()
                    break
            except REDIS_DOWN as exc:
                await self._reconnect.wait(exc)
            except (AttributeError, TypeError) as exc:  # redis-py#4287: see streamml.stream.nodes
                if not leaked_connection_error(exc):
                    raise
                await self._reconnect.wait(exc)
            except StreamGroupNotFound as exc:
                log.error("%s", exc)
                await self._until_done(self.consumer.ensure_groups)

    async def _step(self, handler: BatchHandler, burst: bool) -> bool:
        """One turn of a partition's loop; False when a burst run has nothing left to do there."""
        await self._housekeeping()
        index, now = handler.partition.index, time.monotonic()
        if now >= self._claim_due[index]:
            self._claim_due[index] = now + self.config.claim_interval_s
            await handler.flush()  # what is still settling is this worker's, not idle
            await self._claim_idle(handler)
        if now >= self._trim_due[index]:
            self._trim_due[index] = now + self.config.trim_interval_s
            await self.consumer.trim_acknowledged(handler.partition)
        # Read while the previous batch settles (worker/batch.py).
        raw = await self.consumer.read_new(handler.partition, self.config.batch_entries, self._block_ms)
        if raw:
            await self._handle(handler, raw)
            return True
        await handler.flush()  # nothing new: the last batch settles now, not with the next one
        return not burst or await self._retry_own_failures(handler)

    async def _handle(
        self, handler: BatchHandler, raw: Sequence[RawEntry], deliveries: dict[str, int] | None = None
    ) -> None:
        async with self._turn:
            await handler.handle(raw, deliveries)

    async def _housekeeping(self) -> None:
        """What the worker does for all partitions: heartbeat, canary shares, drift windows. Each is
        marked done before it is awaited, so the partitions' tasks never do it twice."""
        now = time.monotonic()
        if now >= self._due["heartbeat"]:
            self._due["heartbeat"] = now + self.config.heartbeat_s
            await self.consumer.heartbeat()
            loads = await route_loads(self.registry)
            self.health.observe(loads)
            await self.model_states.publish(self.name, loads)
        if now >= self._due["rollout"]:
            await self._refresh_rollout()
        if now >= self._due["drift"] and self.drift is not None:
            self._due["drift"] = now + self.drift_publish_s
            await self.drift.publish()

    async def _refresh_rollout(self) -> None:
        """Pick up the canary shares (``streamml canary set``) every worker follows."""
        self._due["rollout"] = time.monotonic() + self.rollout_refresh_s
        rollout = Rollout(await self.canaries.shares(), self.shadow_sample)
        for handler in self.handlers:
            handler.rollout = rollout

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
            for handler in self.handlers:  # the batches in hand are acknowledged before leaving
                await handler.flush()
            await self.consumer.forget()
            await self.model_states.forget(self.name)
            if self.drift is not None:  # its window still describes recent records
                await self.drift.publish()
        except REDIS_DOWN:
            log.warning("could not deregister consumer %s: Redis unreachable", self.name)
        for sink in self.sinks:
            sink.close()
        stats = self.stats
        log.info(
            "worker %s stopped: %d entries, %d records, %d dead-lettered",
            self.name,
            stats.entries,
            stats.records,
            stats.dead_lettered,
        )

    async def _warm_up(self) -> None:
        """Load every route's model before reading, so no entry waits on a model load (and is not
        taken for a dead consumer's meanwhile). A model that cannot load now is retried per batch."""
        for route in self.registry.routes:
            try:
                await self.registry.loader.load(await self.registry.resolver.resolve(route))
            except ModelUnavailable as exc:
                log.warning("cannot load the model of route %s: %s", route, exc)
        self.health.observe(await route_loads(self.registry))
        # Models and libraries are loaded: keep the collector from walking them on every full pass.
        gc.collect()
        gc.freeze()

    # -- where entries come from ---------------------------------------------------------------

    async def _drain_own_pending(self, handler: BatchHandler) -> None:
        """Process entries delivered to this consumer name before and never acked."""
        after, part = "0", handler.partition
        while not self.stopping.is_set():
            raw = await self.consumer.read_own_pending(part, self.config.batch_entries, after)
            if not raw:
                return
            ids = [sid for sid, _ in raw]
            await self._handle(handler, raw, await self.consumer.delivery_counts(part, ids))
            after = raw[-1][0]
        await handler.flush()

    async def _claim_idle(self, handler: BatchHandler) -> None:
        """Take over entries idle past ``claim_idle_ms`` (dead consumers', or failed attempts)."""
        start, part = "0-0", handler.partition
        while not self.stopping.is_set():
            page = await self.consumer.claim_idle(
                part, self.config.claim_idle_ms, start, self.config.batch_entries
            )
            if page.deleted:
                log.warning("%d pending entries were trimmed before they were processed", len(page.deleted))
            if page.entries:
                log.info("claimed %d idle entries", len(page.entries))
                self.metrics.claimed.inc(len(page.entries))
                ids = [sid for sid, _ in page.entries]
                counts = await self.consumer.delivery_counts(part, ids)
                await self._handle(handler, page.entries, counts)
            if page.next_start in ("0-0", "0"):
                return
            start = page.next_start

    async def _retry_own_failures(self, handler: BatchHandler) -> bool:
        """Burst mode: retry entries this consumer failed without waiting for the idle time.
        False when there is nothing left to retry."""
        part = handler.partition
        ids = await self.consumer.own_pending_ids(part, self.config.batch_entries)
        if not ids:
            return False
        raw = await self.consumer.claim(part, ids)
        await asyncio.sleep(BURST_RETRY_PAUSE_S)
        await self._handle(handler, raw, await self.consumer.delivery_counts(part, ids))
        return True
