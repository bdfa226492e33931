"""One micro-batch: decode the entries, predict them, write the sinks, then settle (ack, dead-letter, or
leave pending for a retry), while keeping the batch's entries marked as in hand.

A batch's settle — the one MULTI that writes its Redis sinks and acknowledges it — runs in the
background while the worker reads and predicts the next batch, which settles only after it: Redis
executes one batch's writes while the worker computes the next, instead of each waiting for the other
(on one-record entries the two took about equal shares of a drain). Nothing is acknowledged before its
sinks are written, as before; :meth:`BatchHandler.flush` waits for the settle in flight.

The retry policy lives here: a failure no retry can mend (``FailureReason.permanent``) is dead-lettered at
once, any other after ``max_deliveries`` deliveries; until then the entry stays pending and is claimed
again once idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio.client import Pipeline

from streamml.errors import FailureReason, InvalidEntry
from streamml.models.dispatch import INLINE_RECORDS, predict_batch
from streamml.models.registry import ModelRegistry
from streamml.models.traffic import Rollout
from streamml.rollout.drift_monitor import DriftMonitor
from streamml.settings import WorkerSettings
from streamml.stream.consumer import Consumer, RawEntry
from streamml.stream.deadletters import letter_fields
from streamml.stream.entry import Entry, decode_entry, now_ms
from streamml.stream.topology import Partition
from streamml.worker.reconnect import REDIS_DOWN
from streamml.worker.sinks import FailedRequest, Result, Sink, WrittenBatch
from streamml.worker.worker_metrics import WorkerMetrics

log = logging.getLogger(__name__)
KEEP_ALIVE_STOP_S = 10.0
"""Longest wait for the in-flight keep-alive to finish its last XCLAIM (bounded by the socket timeout)."""


@dataclass(frozen=True)
class Failure:
    stream_id: str
    fields: dict[bytes, bytes]
    reason: FailureReason
    error: BaseException
    entry: Entry | None = None
    """The request, when the entry could be read (a failure to predict it)."""

    def told(self) -> FailedRequest | None:
        """What its client is told (and the prediction log keeps) once it is dead-lettered; None when the
        entry has no readable id."""
        try:
            request_id = self.fields[b"request_id"].decode()
            route = self.fields.get(b"route", b"").decode()
            owner = self.fields.get(b"owner", b"").decode()
            accepted_ms = float(self.fields.get(b"accepted_ms", b"0"))
        except (KeyError, UnicodeDecodeError, ValueError):
            return None
        reply = self.fields.get(b"reply") == b"1"
        message = f"{type(self.error).__name__}: {self.error}"
        unreadable = None if self.entry else self.fields.get(b"records", self.fields.get(b"columns"))
        return FailedRequest(
            request_id,
            self.stream_id,
            route,
            owner,
            reply,
            self.reason.value,
            message,
            accepted_ms=accepted_ms,
            inputs=self.entry.rows if self.entry else None,
            payload=unreadable.decode(errors="replace") if unreadable is not None else None,
        )


@dataclass
class WorkerStats:
    batches: int = 0
    entries: int = 0
    records: int = 0
    dead_lettered: int = 0
    failed_attempts: int = 0


class BatchHandler:
    """The batches of one partition."""

    def __init__(
        self,
        consumer: Consumer,
        partition: Partition,
        registry: ModelRegistry,
        sinks: Sequence[Sink],
        config: WorkerSettings,
        stats: WorkerStats,
        metrics: WorkerMetrics,
        drift: DriftMonitor | None = None,
    ) -> None:
        self.consumer = consumer
        self.partition = partition
        """The request stream partition this handler's batches come from."""
        self.registry = registry
        self.sinks = sinks
        self.config = config
        self.stats = stats
        self.metrics = metrics
        self.drift = drift
        """Windows of recent records for drift (None when drift is off)."""
        self.rollout = Rollout()
        """Canary shares and shadow sampling; the worker replaces it as the canary setting changes."""
        self._settling: asyncio.Task[None] | None = None
        """The previous batch's settle, while it runs."""

    async def handle(self, raw: Sequence[RawEntry], deliveries: dict[str, int] | None = None) -> None:
        """Predict and write every sink, then settle in the background (ack; failed entries are
        dead-lettered or left pending) once the previous batch's settle is done. While the batch is in
        hand its entries are re-marked now and then, so a slow batch is never claimed by another worker
        as if this one had died. A failed settle is raised by the next call or by :meth:`flush`."""
        done = asyncio.Event()
        keep_alive = asyncio.create_task(self._keep_claimed([sid for sid, _ in raw], done))  # noqa: RUF006 - awaited in _release
        try:
            prepared = await self._prepare(raw, deliveries or {})
            await self.flush()
        except BaseException:
            await _release(done, keep_alive)
            raise
        self._settling = asyncio.create_task(self._finish(prepared, done, keep_alive))

    async def flush(self) -> None:
        """Wait for the settle in flight, if any; raises its error."""
        settling, self._settling = self._settling, None
        if settling is not None:
            await settling

    async def _keep_claimed(self, ids: list[str], done: asyncio.Event) -> None:
        every = self.config.claim_idle_ms / 3000.0
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=every)
                return
            try:
                await self.consumer.keep_claimed(self.partition, ids)
            except REDIS_DOWN:
                return

    async def _prepare(self, raw: Sequence[RawEntry], deliveries: dict[str, int]) -> _Prepared:
        """Decode, predict, write the sinks outside Redis, and sort out the failures."""
        entries, failures = _decode(raw)
        dispatched = await predict_batch(entries, self.registry, self.rollout)
        results = dispatched.scored
        fields = dict(raw)
        failures += [
            Failure(u.request.stream_id, fields[u.request.stream_id], u.reason, u.error, u.request)
            for u in dispatched.unscored
        ]
        dead, retried = self._triage(failures, deliveries)
        told = [told for failure in dead if (told := failure.told()) is not None]
        await self._write(results, told)
        batch = WrittenBatch(results, now_ms(), dispatched.shadows, self.partition, told)
        return _Prepared(batch, dead, retried, deliveries)

    async def _finish(self, prepared: _Prepared, done: asyncio.Event, keep_alive: asyncio.Task[None]) -> None:
        """Settle; then the drift windows and the counts."""
        batch, dead = prepared.batch, prepared.dead
        try:
            await self._settle(batch, dead, prepared.deliveries)
        finally:
            await _release(done, keep_alive)
        if self.drift is not None:
            await self.drift.observe(batch.results)
        for failure in dead:
            log.error("entry %s dead-lettered (%s): %s", failure.stream_id, failure.reason, failure.error)
        self._count(batch, [f.reason for f in dead], [f.reason for f in prepared.retried])

    def _triage(
        self, failures: Sequence[Failure], deliveries: dict[str, int]
    ) -> tuple[list[Failure], list[Failure]]:
        """The retry policy: (dead-lettered now, left pending for another delivery)."""
        dead, retried = [], []
        for failure in failures:
            count = deliveries.get(failure.stream_id, 1)
            if failure.reason.permanent or count >= self.config.max_deliveries:
                dead.append(failure)
                continue
            retried.append(failure)
            log.warning(
                "entry %s failed (%s, delivery %d of %d): %s; left pending for retry",
                failure.stream_id,
                failure.reason,
                count,
                self.config.max_deliveries,
                failure.error,
            )
        return dead, retried

    async def _settle(self, batch: WrittenBatch, dead: Sequence[Failure], deliveries: dict[str, int]) -> None:
        """One MULTI: every sink's Redis writes, the dead letters, the XACK of what is finished."""
        letters = [
            (
                f.reason,
                letter_fields(
                    f.fields,
                    stream_id=f.stream_id,
                    reason=f.reason,
                    error=f.error,
                    deliveries=deliveries.get(f.stream_id, 1),
                    worker=self.consumer.name,
                ),
            )
            for f in dead
        ]

        def stage(tx: Pipeline) -> None:
            for sink in self.sinks:
                sink.stage(tx, batch)

        await self.consumer.settle(
            self.partition,
            [r.request.stream_id for r in batch.results] + [f.stream_id for f in dead],
            letters,
            stage,
            notices=[r.request.request_id for r in batch.results if r.request.reply]
            + [f.request_id for f in batch.failed if f.reply],
        )

    async def _write(self, results: list[Result], failed: list[FailedRequest]) -> None:
        if sum(len(r.labels) for r in results) > INLINE_RECORDS:
            for sink in self.sinks:
                await asyncio.to_thread(sink.write, results, failed)
        elif results or failed:
            for sink in self.sinks:
                sink.write(results, failed)

    def _count(self, batch: WrittenBatch, dead: list[FailureReason], retried: list[FailureReason]) -> None:
        stats = self.stats
        stats.batches += 1
        stats.entries += len(batch.results)
        stats.records += batch.records
        stats.dead_lettered += len(dead)
        stats.failed_attempts += len(retried)
        self.metrics.batch(batch, dead, retried)
        for (_, name, version), tally in batch.by_version.items():
            log.info(
                "batch: %d records in %d requests, %s v%s, predict %.1f ms",
                tally.records,
                tally.requests,
                name,
                version,
                tally.predict_ms,
            )


@dataclass(frozen=True)
class _Prepared:
    """A batch predicted and written outside Redis, waiting for its settle."""

    batch: WrittenBatch
    dead: list[Failure]
    retried: list[Failure]
    deliveries: dict[str, int]


async def _release(done: asyncio.Event, keep_alive: asyncio.Task[None]) -> None:
    """Stop a batch's keep-alive. A flag, not cancel(): cancelling a Redis command mid-flight is unsafe,
    and redis-py can swallow the cancellation; the task ends after at most one more XCLAIM."""
    done.set()
    try:
        await asyncio.wait_for(keep_alive, timeout=KEEP_ALIVE_STOP_S)
    except TimeoutError:
        log.warning("in-flight keep-alive did not stop within %.0fs", KEEP_ALIVE_STOP_S)


def _decode(raw: Sequence[RawEntry]) -> tuple[list[Entry], list[Failure]]:
    """The entries that read as requests, and a failure for each that does not."""
    entries: list[Entry] = []
    failures: list[Failure] = []
    for stream_id, entry_fields in raw:
        try:
            entries.append(decode_entry(stream_id, entry_fields))
        except InvalidEntry as exc:
            failures.append(Failure(stream_id, entry_fields, exc.reason, exc))
    return entries, failures
