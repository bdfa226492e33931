"""The stream worker: read micro-batches from the consumer group, predict, write sinks, then ack.

Delivery is at-least-once. An entry is acknowledged only after every sink has its predictions, or
after it has been moved to the dead-letter stream with the reason. A failed entry stays pending and
is claimed again (XAUTOCLAIM) once it has been idle ``claim_idle_ms``; after ``max_deliveries`` it is
dead-lettered. Entries of a consumer that died are claimed the same way by the live ones.

Inside a batch, entries are grouped by (model, version) and each group costs one predict call, run
in a thread when it is large enough to be worth the hop, so the event loop keeps reading, acking and
heart-beating.
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
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamml import keys
from streamml.broker import Broker, Entry, InvalidEntry, as_text, decode_entry, id_key, now_ms
from streamml.errors import ModelLoadError, ModelUnavailable, UnknownRoute
from streamml.inference import LoadedModel
from streamml.registry import ModelRef, ModelRegistry
from streamml.settings import Settings
from streamml.sinks import CsvSink, RequestResult, queue_redis_writes

log = logging.getLogger(__name__)

KEEP_ALIVE_STOP_S = 10.0
"""Longest wait for the in-flight keep-alive to finish its last XCLAIM (it is bounded by the socket
timeout)."""
INLINE_RECORDS = 64
"""Batches up to this many records are predicted (and their CSV rows written) on the event loop: a
thread hop costs more than the work itself (~0.1 ms on the numpy path). Larger ones go to a thread so
the loop keeps heart-beating and re-marking in-flight entries."""
RECONNECT_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
"""Pauses between attempts while Redis is unreachable; the last one repeats."""

# Reason codes in the dead-letter stream.
INVALID_PAYLOAD = "invalid_payload"
UNKNOWN_MODEL = "unknown_model"
MODEL_LOAD_FAILED = "model_load_failed"
PREDICTION_FAILED = "prediction_failed"
PERMANENT = frozenset({INVALID_PAYLOAD, UNKNOWN_MODEL})
"""Failures that no retry can mend: dead-lettered on the first delivery."""


def reconnect_pause(attempt: int) -> float:
    """The pause before reconnect attempt ``attempt`` (0-based); the last one repeats."""
    return RECONNECT_BACKOFF_S[min(attempt, len(RECONNECT_BACKOFF_S) - 1)]


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class Failure:
    stream_id: str
    fields: dict[bytes, bytes]
    reason: str
    error: BaseException


@dataclass
class BatchOutcome:
    acked: int = 0
    records: int = 0
    dead_lettered: int = 0
    left_pending: int = 0
    failures: list[Failure] = field(default_factory=list)


@dataclass
class WorkerStats:
    batches: int = 0
    entries: int = 0
    records: int = 0
    dead_lettered: int = 0
    failed_attempts: int = 0


class Worker:
    """One consumer of the group. ``run(burst=True)`` drains the stream and returns (tests, backfills)."""

    def __init__(
        self,
        redis: Redis,
        registry: ModelRegistry,
        settings: Settings,
        *,
        consumer: str | None = None,
        csv_sink: CsvSink | None = None,
    ) -> None:
        self.redis = redis
        self.registry = registry
        self.settings = settings
        self.config = settings.worker
        self.streams = settings.streams
        self.broker = Broker(redis, settings.streams)
        self.consumer = consumer or self.config.consumer or default_consumer_name()
        self.csv = csv_sink or CsvSink(settings.predictions_csv())
        self.stats = WorkerStats()
        self._stopping = asyncio.Event()
        self._last_heartbeat = 0.0
        self._last_claim = 0.0
        self._last_trim = time.monotonic()

    def stop(self) -> None:
        """Ask the loop to finish its current batch and return (signal handlers call this)."""
        self._stopping.set()

    # -- main loop -----------------------------------------------------------------------------

    async def run(self, *, burst: bool = False) -> WorkerStats:
        await self._with_reconnect(self.broker.ensure_group)
        await self._warm_up()
        log.info(
            "worker %s reading %s as group %s",
            self.consumer,
            self.streams.stream,
            self.streams.group,
        )
        # First our own pending entries: a restart under the same name resumes where it stopped.
        await self._with_reconnect(self._drain_own_pending)
        attempt = 0
        while not self._stopping.is_set():
            try:
                await self._beat()
                if time.monotonic() - self._last_claim >= self.config.claim_interval_s:
                    await self._claim_idle()
                if time.monotonic() - self._last_trim >= self.config.trim_interval_s:
                    self._last_trim = time.monotonic()
                    await self.broker.trim_acknowledged()
                raw = await self.broker.read(self.consumer, self.config.batch_entries, self.config.block_ms)
                attempt = 0
                if raw:
                    await self.handle(raw)
                elif burst and not await self._retry_own_failures():
                    break
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                pause = reconnect_pause(attempt)
                attempt += 1
                log.warning("Redis unreachable (%s); retrying in %.1fs", type(exc).__name__, pause)
                await self._sleep(pause)
        await self._shutdown()
        return self.stats

    async def _with_reconnect(self, operation: Any) -> None:
        for attempt in range(10_000):
            try:
                await operation()
                return
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                pause = reconnect_pause(attempt)
                log.warning("Redis unreachable (%s); retrying in %.1fs", type(exc).__name__, pause)
                await self._sleep(pause)
                if self._stopping.is_set():
                    return

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _beat(self) -> None:
        if time.monotonic() - self._last_heartbeat >= self.config.heartbeat_s:
            await self.broker.heartbeat(self.consumer)
            self._last_heartbeat = time.monotonic()

    async def _shutdown(self) -> None:
        try:
            await self.broker.forget_worker(self.consumer)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            log.warning("could not deregister consumer %s: Redis unreachable", self.consumer)
        self.csv.close()
        log.info(
            "worker %s stopped: %d entries, %d records, %d dead-lettered",
            self.consumer,
            self.stats.entries,
            self.stats.records,
            self.stats.dead_lettered,
        )

    # -- recovery ------------------------------------------------------------------------------

    async def _drain_own_pending(self) -> None:
        """Process entries delivered to this consumer name before and never acked."""
        last_seen = "0"
        while not self._stopping.is_set():
            entries = await self.broker.read(self.consumer, self.config.batch_entries, None, after=last_seen)
            if not entries:
                return
            await self.handle(entries, await self._delivery_counts([sid for sid, _ in entries]))
            last_seen = entries[-1][0]

    async def _claim_idle(self) -> int:
        """Take over entries idle past ``claim_idle_ms`` (dead consumers', or failed attempts)."""
        self._last_claim = time.monotonic()
        start, claimed_total = "0-0", 0
        while not self._stopping.is_set():
            reply: Any = await self.redis.xautoclaim(
                self.streams.stream,
                self.streams.group,
                self.consumer,
                min_idle_time=self.config.claim_idle_ms,
                start_id=start,
                count=self.config.batch_entries,
            )
            start, claimed = as_text(reply[0]), [(as_text(sid), f) for sid, f in reply[1]]
            deleted = [as_text(sid) for sid in (reply[2] if len(reply) > 2 else [])]
            if deleted:  # trimmed away while pending: nothing left to process
                log.warning("acked %d pending entries whose data was already trimmed", len(deleted))
            live = [(sid, f) for sid, f in claimed if f]
            if live:
                log.info("claimed %d idle entries", len(live))
                await self.handle(live, await self._delivery_counts([sid for sid, _ in live]))
                claimed_total += len(live)
            if start in ("0-0", "0"):
                return claimed_total
        return claimed_total

    async def _retry_own_failures(self) -> bool:
        """Burst mode: retry entries this consumer failed, without waiting for the idle time.
        Returns False when there is nothing left to retry."""
        pending: Any = await self.redis.xpending_range(
            self.streams.stream,
            self.streams.group,
            "-",
            "+",
            self.config.batch_entries,
            consumername=self.consumer,
        )
        if not pending:
            return False
        ids = [as_text(p["message_id"]) for p in pending]
        claimed: Any = await self.redis.xclaim(
            self.streams.stream,
            self.streams.group,
            self.consumer,
            min_idle_time=0,
            message_ids=list[Any](ids),
        )
        entries = [(as_text(sid), f) for sid, f in claimed if f]
        await asyncio.sleep(0.05)  # a failing dependency gets a moment before the next attempt
        await self.handle(entries, await self._delivery_counts(ids))
        return True

    async def _delivery_counts(self, ids: Sequence[str]) -> dict[str, int]:
        if not ids:
            return {}
        rows: Any = await self.redis.xpending_range(
            self.streams.stream,
            self.streams.group,
            min(ids, key=id_key),
            max(ids, key=id_key),
            len(ids) * 2,
            consumername=self.consumer,
        )
        return {as_text(r["message_id"]): int(r["times_delivered"]) for r in rows}

    # -- one micro-batch -----------------------------------------------------------------------

    async def _warm_up(self) -> None:
        """Load every route's model before reading, so no entry waits on a model load (and is not
        mistaken for a dead consumer's while it does). A model that cannot load now is retried later."""
        for route in self.registry.routes:
            try:
                ref = await self.registry.aresolve(route)
                await asyncio.to_thread(self.registry.load, ref)
            except (ModelUnavailable, ModelLoadError) as exc:
                log.warning("cannot load the model of route %s yet: %s", route, exc)
        # Models and libraries are loaded: keep the collector from walking them on every full pass.
        gc.collect()
        gc.freeze()

    async def handle(
        self,
        raw: Sequence[tuple[str, dict[bytes, bytes]]],
        deliveries: dict[str, int] | None = None,
    ) -> BatchOutcome:
        """Predict, write every sink, then ack; failed entries are dead-lettered or left pending."""
        done = asyncio.Event()
        keep_alive = asyncio.create_task(self._keep_claimed([sid for sid, _ in raw], done))  # noqa: RUF006 - awaited below
        try:
            return await self._handle(raw, deliveries)
        finally:
            # A flag, not cancel(): cancelling a Redis command mid-flight is unsafe, and redis-py can
            # swallow the cancellation; the task ends after at most one more XCLAIM.
            done.set()
            try:
                await asyncio.wait_for(keep_alive, timeout=KEEP_ALIVE_STOP_S)
            except TimeoutError:
                log.warning("in-flight keep-alive did not stop within %.0fs", KEEP_ALIVE_STOP_S)

    async def _keep_claimed(self, ids: list[str], done: asyncio.Event) -> None:
        """While a batch is in hand, reset its entries' idle time now and then (XCLAIM JUSTID, which
        does not count as a delivery), so a slow batch is never claimed by another worker as if this
        one had died."""
        every = self.config.claim_idle_ms / 3000.0
        while ids and not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=every)
                return
            try:
                await self.redis.xclaim(
                    self.streams.stream,
                    self.streams.group,
                    self.consumer,
                    min_idle_time=0,
                    message_ids=list[Any](ids),
                    justid=True,
                )
            except (RedisConnectionError, RedisTimeoutError, OSError):
                return

    async def _handle(
        self,
        raw: Sequence[tuple[str, dict[bytes, bytes]]],
        deliveries: dict[str, int] | None,
    ) -> BatchOutcome:
        outcome = BatchOutcome()
        fields_by_id = dict(raw)
        by_route: dict[str, list[Entry]] = defaultdict(list)
        for stream_id, fields in raw:
            try:
                entry = decode_entry(stream_id, fields)
                self.registry.target(entry.route)
                by_route[entry.route].append(entry)
            except InvalidEntry as exc:
                outcome.failures.append(Failure(stream_id, fields, INVALID_PAYLOAD, exc))
            except UnknownRoute as exc:
                outcome.failures.append(Failure(stream_id, fields, UNKNOWN_MODEL, exc))

        by_model: dict[tuple[str, str], tuple[ModelRef, list[Entry]]] = {}
        for route, entries in by_route.items():
            try:
                ref = await self.registry.aresolve(route)
            except ModelUnavailable as exc:
                outcome.failures += [
                    Failure(e.stream_id, fields_by_id[e.stream_id], MODEL_LOAD_FAILED, exc) for e in entries
                ]
                continue
            by_model.setdefault((ref.name, ref.version), (ref, []))[1].extend(entries)

        results: list[RequestResult] = []
        for ref, entries in by_model.values():
            try:
                model = await asyncio.to_thread(self.registry.load, ref)
            except (ModelUnavailable, ModelLoadError) as exc:
                outcome.failures += [
                    Failure(e.stream_id, fields_by_id[e.stream_id], MODEL_LOAD_FAILED, exc) for e in entries
                ]
                continue
            if sum(len(e.records) for e in entries) <= INLINE_RECORDS:
                done, failed = predict_isolating(model, entries)
            else:
                done, failed = await asyncio.to_thread(predict_isolating, model, entries)
            results += done
            outcome.failures += [
                Failure(e.stream_id, fields_by_id[e.stream_id], PREDICTION_FAILED, err) for e, err in failed
            ]

        if sum(len(r.labels) for r in results) > INLINE_RECORDS:
            await asyncio.to_thread(self.csv.write, results)
        elif results:
            self.csv.write(results)
        await self._write_and_ack(results, outcome, deliveries or {})
        self.stats.batches += 1
        self.stats.entries += outcome.acked
        self.stats.records += outcome.records
        return outcome

    async def _write_and_ack(
        self, results: list[RequestResult], outcome: BatchOutcome, deliveries: dict[str, int]
    ) -> None:
        dead: list[Failure] = []
        for failure in outcome.failures:
            count = deliveries.get(failure.stream_id, 1)
            if failure.reason in PERMANENT or count >= self.config.max_deliveries:
                dead.append(failure)
            else:
                outcome.left_pending += 1
                self.stats.failed_attempts += 1
                log.warning(
                    "entry %s failed (%s, delivery %d of %d): %s; left pending for retry",
                    failure.stream_id,
                    failure.reason,
                    count,
                    self.config.max_deliveries,
                    failure.error,
                )
        async with self.redis.pipeline(transaction=True) as pipe:
            queue_redis_writes(pipe, self.streams, results, now_ms())
            for failure in dead:
                pipe.xadd(
                    keys.dead_letter_stream(self.streams.stream),
                    self._dead_letter(failure, deliveries),
                )
            done_ids = [r.entry.stream_id for r in results] + [f.stream_id for f in dead]
            if done_ids:
                pipe.xack(self.streams.stream, self.streams.group, *done_ids)
            await pipe.execute()
        for failure in dead:
            log.error("entry %s dead-lettered (%s): %s", failure.stream_id, failure.reason, failure.error)
        outcome.acked = len(results)
        outcome.records = sum(len(r.labels) for r in results)
        outcome.dead_lettered = len(dead)
        self.stats.dead_lettered += len(dead)
        by_version: dict[tuple[str, str], list[RequestResult]] = defaultdict(list)
        for result in results:
            by_version[(result.model_name, result.model_version)].append(result)
        for (name, version), group in by_version.items():
            log.info(
                "batch: %d records in %d requests, %s v%s, predict %.1f ms",
                sum(len(r.labels) for r in group),
                len(group),
                name,
                version,
                group[0].predict_ms,
            )

    def _dead_letter(self, failure: Failure, deliveries: dict[str, int]) -> Any:
        fields: dict[Any, Any] = dict(failure.fields)
        fields.update(
            {
                "dlq_original_id": failure.stream_id,
                "dlq_reason": failure.reason,
                "dlq_error_class": type(failure.error).__name__,
                "dlq_error": str(failure.error)[:2000],
                "dlq_deliveries": str(deliveries.get(failure.stream_id, 1)),
                "dlq_worker": self.consumer,
                "dlq_failed_ms": f"{now_ms():.0f}",
            }
        )
        return fields


def predict_isolating(
    model: LoadedModel, entries: Sequence[Entry]
) -> tuple[list[RequestResult], list[tuple[Entry, BaseException]]]:
    """One predict call for all entries; if it fails, split in halves until the bad entries are
    isolated, so one poison record never fails the good ones beside it."""
    records = [record for entry in entries for record in entry.records]
    started = time.perf_counter()
    try:
        labels = model.predict(records)
    except Exception as exc:
        if len(entries) == 1:
            return [], [(entries[0], exc)]
        middle = len(entries) // 2
        left = predict_isolating(model, entries[:middle])
        right = predict_isolating(model, entries[middle:])
        return left[0] + right[0], left[1] + right[1]
    predicted = now_ms()
    elapsed = (time.perf_counter() - started) * 1000.0
    results, offset = [], 0
    for entry in entries:
        count = len(entry.records)
        results.append(
            RequestResult(
                entry,
                model.name,
                model.version,
                labels[offset : offset + count],
                predicted,
                elapsed,
            )
        )
        offset += count
    return results, []
