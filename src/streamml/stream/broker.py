"""Every stream and consumer-group command of the pipeline, on one Redis client.

The gateway publishes through it; the worker reads, claims, re-marks, settles (ack and dead-letter in
one MULTI with the sinks' writes) and trims through it; operators read its status. Nothing else in
streamml sends XADD, XREADGROUP, XAUTOCLAIM, XCLAIM, XPENDING, XACK or XTRIM.

Redis errors a caller can act on become domain errors (:class:`~streamml.errors.BrokerUnavailable` for
the gateway, :class:`~streamml.errors.StreamGroupNotFound` for the worker). Connection errors reach the
worker as they are: its reconnect policy decides what to do with them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, ResponseError

from streamml import keys
from streamml.errors import BrokerUnavailable, FailureReason, StreamGroupNotFound
from streamml.settings import StreamSettings
from streamml.stream.entry import encode_entry

PENDING = b'{"status":"pending"}'
LAG_SCAN_PAGE = 10_000

RawEntry = tuple[str, dict[bytes, bytes]]
"""A stream entry as read: (id, fields)."""


@dataclass(frozen=True)
class Claimed:
    """One page of XAUTOCLAIM: the entries taken over, the ids whose data was trimmed away while
    pending (Redis removes those from the pending list), and where the next page starts ("0-0": done)."""

    entries: list[RawEntry]
    deleted: list[str]
    next_start: str


class Broker:
    def __init__(self, redis: Redis, streams: StreamSettings) -> None:
        self.redis = redis
        self.streams = streams
        self.stream = streams.stream
        self.group = streams.group
        self.dead_letters = keys.dead_letter_stream(streams.stream)
        self.counters = keys.counter_keys(streams.stream)

    # -- gateway side --------------------------------------------------------------------------

    async def publish(
        self,
        request_id: str,
        route: str,
        records: Sequence[dict[str, Any]],
        *,
        reply: bool = False,
        owner: str = "",
    ) -> str:
        """Record the request as pending and append its entry to the stream, atomically (MULTI), so
        a request id is never visible without its entry. Returns the entry's stream id."""
        [stream_id] = await self.publish_many([(request_id, route, records)], reply=reply, owner=owner)
        return stream_id

    async def publish_many(
        self,
        requests: Sequence[tuple[str, str, Sequence[dict[str, Any]]]],
        *,
        reply: bool = False,
        owner: str = "",
    ) -> list[str]:
        """:meth:`publish` for many (request id, route, records) at once, in one MULTI (bulk loads,
        benchmarks). Returns the stream ids in order."""
        pending = orjson.dumps({"status": "pending", "owner": owner}) if owner else PENDING
        accepted = self.counters.accepted
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for request_id, route, records in requests:
                    pipe.hincrby(accepted, route, len(records))
                    fields: Any = encode_entry(request_id, route, records, reply=reply, owner=owner)
                    pipe.set(
                        keys.result_key(self.stream, request_id),
                        pending,
                        ex=self.streams.result_ttl_s,
                        nx=True,
                    )
                    pipe.xadd(self.stream, fields)
                replies: Any = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot publish to Redis: {type(exc).__name__}") from exc
        return [as_text(stream_id) for stream_id in replies[2::3]]

    async def result(self, request_id: str) -> dict[str, Any] | None:
        try:
            raw: Any = await self.redis.get(keys.result_key(self.stream, request_id))
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot read from Redis: {type(exc).__name__}") from exc
        return None if raw is None else dict(orjson.loads(raw))

    async def backlog(self) -> int:
        """Entries in the request stream: unread, pending, or acknowledged but not yet trimmed."""
        try:
            length: Any = await self.redis.xlen(self.stream)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot read the backlog: {type(exc).__name__}") from exc
        return int(length)

    async def live_workers(self, within_s: float) -> list[str]:
        members: Any = await self.redis.zrangebyscore(
            keys.workers_heartbeat_key(self.stream), time.time() - within_s, "+inf"
        )
        return [as_text(m) for m in members]

    # -- worker side ---------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the group from the start of the stream (id 0), so nothing published before the
        first worker is skipped. MKSTREAM creates the stream if the gateway has not yet."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_new(self, consumer: str, count: int, block_ms: int | None = None) -> list[RawEntry]:
        """Entries never delivered to the group, blocking up to ``block_ms`` when there are none
        (None: answer at once)."""
        return await self._read(consumer, count, block_ms, ">")

    async def read_own_pending(self, consumer: str, count: int, after: str = "0") -> list[RawEntry]:
        """This consumer's own pending entries after ``after`` (a restart under the same name resumes
        them). Never blocks."""
        return await self._read(consumer, count, None, after)

    async def _read(self, consumer: str, count: int, block_ms: int | None, after: str) -> list[RawEntry]:
        try:
            reply: Any = await self.redis.xreadgroup(
                self.group, consumer, {self.stream: after}, count=count, block=block_ms
            )
        except ResponseError as exc:
            raise self._translate(exc) from exc
        if not reply:
            return []
        return [(as_text(sid), fields) for sid, fields in reply[0][1] if fields]

    async def claim_idle(self, consumer: str, min_idle_ms: int, start: str, count: int) -> Claimed:
        """Take over entries pending longer than ``min_idle_ms`` (a dead consumer's, or a failed
        attempt's): one XAUTOCLAIM page from ``start``."""
        try:
            reply: Any = await self.redis.xautoclaim(
                self.stream, self.group, consumer, min_idle_time=min_idle_ms, start_id=start, count=count
            )
        except ResponseError as exc:
            raise self._translate(exc) from exc
        entries = [(as_text(sid), fields) for sid, fields in reply[1] if fields]
        deleted = [as_text(sid) for sid in (reply[2] if len(reply) > 2 else [])]
        return Claimed(entries, deleted, as_text(reply[0]))

    async def own_pending_ids(self, consumer: str, count: int) -> list[str]:
        rows: Any = await self.redis.xpending_range(
            self.stream, self.group, "-", "+", count, consumername=consumer
        )
        return [as_text(row["message_id"]) for row in rows]

    async def claim(self, consumer: str, ids: Sequence[str]) -> list[RawEntry]:
        """Take the given pending entries now, whatever their idle time (a delivery is counted)."""
        claimed: Any = await self.redis.xclaim(
            self.stream, self.group, consumer, min_idle_time=0, message_ids=list[Any](ids)
        )
        return [(as_text(sid), fields) for sid, fields in claimed if fields]

    async def keep_claimed(self, consumer: str, ids: Sequence[str]) -> None:
        """Reset the idle time of entries in hand (XCLAIM JUSTID: not counted as a delivery), so a
        slow batch is not taken for a dead consumer's."""
        await self.redis.xclaim(
            self.stream, self.group, consumer, min_idle_time=0, message_ids=list[Any](ids), justid=True
        )

    async def delivery_counts(self, consumer: str, ids: Sequence[str]) -> dict[str, int]:
        """How many times each of this consumer's pending entries has been delivered."""
        if not ids:
            return {}
        rows: Any = await self.redis.xpending_range(
            self.stream,
            self.group,
            min(ids, key=id_key),
            max(ids, key=id_key),
            len(ids) * 2,
            consumername=consumer,
        )
        return {as_text(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def settle(
        self,
        done: Sequence[str],
        dead_letters: Sequence[tuple[FailureReason, Any]],
        stage: Callable[[Pipeline], None],
    ) -> None:
        """In one MULTI: the sinks' Redis writes (``stage``), the dead letters (reason, fields) and
        their count by reason, and the XACK of the entries that are finished (``done``, which includes
        the dead-lettered ones). Either all of it happens or none: an entry is never acked without its
        results or its dead letter."""
        async with self.redis.pipeline(transaction=True) as pipe:
            stage(pipe)
            for reason, fields in dead_letters:
                pipe.xadd(self.dead_letters, fields)
                pipe.hincrby(self.counters.dead_letters, reason.value, 1)
            if done:
                pipe.xack(self.stream, self.group, *done)
            await pipe.execute()

    async def heartbeat(self, consumer: str) -> None:
        await self.redis.zadd(keys.workers_heartbeat_key(self.stream), {consumer: time.time()})

    async def forget_worker(self, consumer: str) -> None:
        """Remove a stopped consumer from the heartbeat set and, when it holds nothing, the group."""
        await self.redis.zrem(keys.workers_heartbeat_key(self.stream), consumer)
        if not await self.own_pending_ids(consumer, 1):
            await self.redis.xgroup_delconsumer(self.stream, self.group, consumer)

    async def trim_acknowledged(self) -> int:
        """Remove entries that every group has acknowledged, and nothing else.

        For each group, everything below its oldest pending entry (or, with nothing pending, up to
        its last delivered id) is acknowledged; entries after the last delivered id are unread. The
        stream is trimmed (XTRIM MINID, Redis >= 6.2) to the smallest such bound over all groups."""
        groups: Any = await self.redis.xinfo_groups(self.stream)
        if not groups:
            return 0
        bounds = []
        for group in groups:
            name = as_text(group["name"])
            summary: Any = await self.redis.xpending(self.stream, name)
            if summary["pending"]:
                bounds.append(as_text(summary["min"]))
            else:
                bounds.append(next_id(as_text(group["last-delivered-id"])))
        minimum = min(bounds, key=id_key)
        removed: Any = await self.redis.xtrim(self.stream, minid=minimum, approximate=False)
        return int(removed)

    def _translate(self, exc: ResponseError) -> Exception:
        if "NOGROUP" in str(exc):
            return StreamGroupNotFound(
                f"consumer group {self.group!r} on stream {self.stream!r} is gone (the stream was deleted "
                "or the group destroyed); the worker recreates it from the start of the stream"
            )
        return exc

    # -- operators -----------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Stream length, each group's lag and pending count, consumers and their idle time."""
        out: dict[str, Any] = {
            "stream": self.stream,
            "length": await self.redis.xlen(self.stream),
            "results_stream": self.streams.results_stream,
            "results_length": await self.redis.xlen(self.streams.results_stream),
            "dead_letters": await self.redis.xlen(self.dead_letters),
            "groups": await self.groups(),
        }
        return out

    async def groups(self) -> list[dict[str, Any]]:
        """Each consumer group of the stream: pending count, lag, last delivered id, and its consumers
        with their pending count and idle time (none before the stream exists)."""
        try:
            groups: Any = await self.redis.xinfo_groups(self.stream)
        except ResponseError:  # no stream yet
            return []
        out = []
        for group in groups:
            name = as_text(group["name"])
            consumers: Any = await self.redis.xinfo_consumers(self.stream, name)
            last_delivered = as_text(group["last-delivered-id"])
            lag = group.get("lag")
            out.append(
                {
                    "name": name,
                    "pending": int(group["pending"]),
                    # Redis < 7 has no "lag" in XINFO GROUPS: count the entries after the last delivered id.
                    "lag": int(lag) if lag is not None else await self.lag(last_delivered),
                    "last_delivered_id": last_delivered,
                    "consumers": [
                        {"name": as_text(c["name"]), "pending": int(c["pending"]), "idle_ms": int(c["idle"])}
                        for c in consumers
                    ],
                }
            )
        return out

    async def lag(self, last_delivered_id: str) -> int:
        """Entries not yet delivered to a group (a paged scan; Redis 7 reports it directly)."""
        lag = 0
        start = f"({last_delivered_id}"
        while True:
            page: Any = await self.redis.xrange(self.stream, min=start, max="+", count=LAG_SCAN_PAGE)
            lag += len(page)
            if len(page) < LAG_SCAN_PAGE:
                return lag
            start = f"({as_text(page[-1][0])}"


def as_text(value: bytes | str) -> str:
    """Redis replies arrive as bytes; ids and names are wanted as text."""
    return value.decode() if isinstance(value, bytes) else value


def next_id(stream_id: str) -> str:
    """The smallest stream id after ``stream_id``."""
    ms, _, seq = stream_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def id_key(stream_id: str) -> tuple[int, int]:
    """Sort key of a stream id (ids compare numerically, not as text)."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
