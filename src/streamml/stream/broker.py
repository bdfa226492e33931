"""Every stream and consumer-group command of the pipeline, on one Redis client (or cluster client).

A pipeline has one request stream, or N partitions of it (``STREAMML_STREAM_PARTITIONS``): streams
``mlops_stream:{tag}``, each with its own consumer group, dead letters, results stream, counters and
result keys under the same hash tag (``keys.partition_name``), so everything one MULTI touches is in
one cluster slot. Commands on one stream take ``partition`` (0 with a single stream); the gateway's
and the operators' commands cover all partitions and sum them.

The gateway publishes through it; the worker reads, claims, re-marks, settles (ack and dead-letter in
one MULTI with the sinks' writes) and trims through it; operators read its status. Nothing else in
streamml sends XADD, XREADGROUP, XAUTOCLAIM, XCLAIM, XPENDING, XACK or XTRIM.

Redis errors a caller can act on become domain errors (:class:`~streamml.errors.BrokerUnavailable` for
the gateway, :class:`~streamml.errors.StreamGroupNotFound` for the worker). Connection errors reach the
worker as they are: its reconnect policy decides what to do with them.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, ResponseError

from streamml import keys
from streamml.errors import (
    BrokerUnavailable,
    FailureReason,
    PartitionCountMismatch,
    StreamGroupNotFound,
)
from streamml.settings import StreamSettings
from streamml.stream.durable import DurableWriter
from streamml.stream.entry import encode_entry
from streamml.stream.nodes import NodeClients

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


@dataclass(frozen=True)
class Partition:
    """The keys of one request stream and of what shares its hash tag."""

    index: int
    stream: str
    dead_letters: str
    results_stream: str
    counters: keys.CounterKeys

    @classmethod
    def of(cls, streams: StreamSettings, index: int) -> Partition:
        count = streams.partitions
        stream = keys.partition_name(streams.stream, index, count)
        return cls(
            index,
            stream,
            keys.dead_letter_stream(stream),
            keys.partition_name(streams.results_stream, index, count),
            keys.counter_keys(stream),
        )


class Broker:
    def __init__(self, redis: Redis | RedisCluster, streams: StreamSettings) -> None:
        self.redis: Any = redis  # Redis or RedisCluster: the commands used here are common to both
        self.cluster = isinstance(redis, RedisCluster)
        self.streams = streams
        self.stream = streams.stream
        """The pipeline's name: the request stream itself with one partition, the prefix with more."""
        self.group = streams.group
        self.partitions = [Partition.of(streams, p) for p in range(streams.partitions)]
        self.durable = DurableWriter(streams.durability, streams.durability_timeout_ms)
        """Every publish goes through it, ``memory`` too: MULTI…EXEC written on one pinned connection
        in one round trip costs less CPU than redis-py's transaction pipeline (``bench.publish_cost``)."""
        self.nodes = NodeClients(redis) if isinstance(redis, RedisCluster) else None
        """On a cluster: plain clients on the masters, for one partition's hot path."""
        self._spread = itertools.count()
        self._checked = False

    # -- partitions ----------------------------------------------------------------------------

    def partition_for(self, idempotency_key: str | None) -> int:
        """Where a new request goes: by its ``Idempotency-Key`` when it has one (a repeat lands where
        the first did), else round robin."""
        count = len(self.partitions)
        if count == 1:
            return 0
        if idempotency_key is not None:
            return zlib.crc32(idempotency_key.encode()) % count
        return next(self._spread) % count

    def new_request_id(self, partition: int = 0) -> str:
        """A fresh request id; with partitions it ends in ``-<partition>`` so a lookup knows where."""
        request_id = uuid.uuid4().hex
        return request_id if len(self.partitions) == 1 else f"{request_id}-{partition}"

    def partition_of(self, request_id: str) -> int | None:
        """The partition a request id was published to (None: not an id of this pipeline)."""
        if len(self.partitions) == 1:
            return 0
        _, dash, tail = request_id.rpartition("-")
        if not dash or not tail.isdigit() or int(tail) >= len(self.partitions):
            return None
        return int(tail)

    async def check_partitions(self) -> None:
        """Record the partition count at first use; refuse another one (changing it would strand the
        entries of the partitions that disappear, and move every key a request id points to). On
        ``fsync`` durability, also refuse a server that cannot provide it."""
        if self._checked:
            return
        name = keys.partitions_key(self.stream)
        count = len(self.partitions)
        await self.redis.set(name, count, nx=True)
        recorded: Any = await self.redis.get(name)
        if int(recorded) != count:
            raise PartitionCountMismatch(
                f"stream {self.stream!r} was created with {int(recorded)} partition(s) but this process is "
                f"configured with STREAMML_STREAM_PARTITIONS={count}; set it to {int(recorded)}, or "
                "migrate (docs/scaling.md: changing the partition count)"
            )
        if self.durable.durability != "memory":
            for part in self.partitions:  # every master the partitions live on
                async with self._on(part.stream) as client:
                    await self.durable.check(client, part.stream)
        self._checked = True

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
        """:meth:`publish` for many (request id, route, records) at once, one MULTI per partition
        (bulk loads, benchmarks). Returns the stream ids in order."""
        try:
            await self.check_partitions()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot read the partition count: {type(exc).__name__}") from exc
        pending = orjson.dumps({"status": "pending", "owner": owner}) if owner else PENDING
        by_partition: dict[int, list[int]] = {}
        for position, (request_id, _, _) in enumerate(requests):
            partition = self.partition_of(request_id)
            if partition is None:
                raise ValueError(
                    f"{request_id!r} is not a request id of this pipeline (Broker.new_request_id)"
                )
            by_partition.setdefault(partition, []).append(position)
        stream_ids = [""] * len(requests)
        for partition, positions in by_partition.items():
            part = self.partitions[partition]
            commands: list[tuple[Any, ...]] = []
            for position in positions:
                request_id, route, records = requests[position]
                fields = encode_entry(request_id, route, records, reply=reply, owner=owner)
                commands += [
                    ("HINCRBY", part.counters.accepted, route, len(records)),
                    (
                        "SET",
                        keys.result_key(part.stream, request_id),
                        pending,
                        "EX",
                        self.streams.result_ttl_s,
                        "NX",
                    ),
                    ("XADD", part.stream, "*", *itertools.chain.from_iterable(fields.items())),
                ]
            for position, stream_id in zip(
                positions, (await self._transaction(part.stream, commands))[2::3], strict=True
            ):
                stream_ids[position] = as_text(stream_id)
        return stream_ids

    async def _transaction(self, key: str, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The commands in one MULTI on ``key``'s node, durable as configured."""
        try:
            async with self._on(key) as client:
                return await self.durable.transaction(client, commands)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot publish to Redis: {type(exc).__name__}") from exc

    async def result(self, request_id: str) -> dict[str, Any] | None:
        partition = self.partition_of(request_id)
        if partition is None:
            return None
        try:
            stream = self.partitions[partition].stream
            async with self._on(stream) as client:
                raw: Any = await client.get(keys.result_key(stream, request_id))
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot read from Redis: {type(exc).__name__}") from exc
        return None if raw is None else dict(orjson.loads(raw))

    async def backlog(self) -> int:
        """Entries in the request streams: unread, pending, or acknowledged but not yet trimmed (all
        partitions summed)."""
        try:
            lengths = await self._each(lambda pipe, part: pipe.xlen(part.stream))
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot read the backlog: {type(exc).__name__}") from exc
        return sum(int(length) for length in lengths)

    def _on(self, key: str) -> contextlib.AbstractAsyncContextManager[Any]:
        """The client for commands on ``key``'s slot: the one client on a single Redis, the slot
        master's plain client on a cluster (:mod:`streamml.stream.nodes`)."""
        return self.nodes.on(key) if self.nodes is not None else contextlib.nullcontext(self.redis)

    async def _stream_call(self, stream: str, command: str, *args: Any, **kwargs: Any) -> Any:
        """``command(stream, *args)`` on the client for the stream's slot."""
        async with self._on(stream) as client:
            return await getattr(client, command)(stream, *args, **kwargs)

    async def _each(self, command: Callable[[Any, Partition], Any]) -> list[Any]:
        """One command per partition, pipelined (on a cluster, one round trip per node)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in self.partitions:
                command(pipe, part)
            return list(await pipe.execute())

    async def live_workers(self, within_s: float) -> list[str]:
        members: Any = await self.redis.zrangebyscore(
            keys.workers_heartbeat_key(self.stream), time.time() - within_s, "+inf"
        )
        return [as_text(m) for m in members]

    # -- worker side (one partition at a time) -------------------------------------------------

    async def ensure_group(self) -> None:
        """Create each partition's group from the start of its stream (id 0), so nothing published
        before the first worker is skipped. MKSTREAM creates a stream the gateway has not yet."""
        await self.check_partitions()
        for part in self.partitions:
            try:
                await self.redis.xgroup_create(part.stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read_new(
        self, consumer: str, count: int, block_ms: int | None = None, partition: int = 0
    ) -> list[RawEntry]:
        """Entries never delivered to the group, blocking up to ``block_ms`` when there are none
        (None: answer at once)."""
        return await self._read(consumer, count, block_ms, ">", partition)

    async def read_own_pending(
        self, consumer: str, count: int, after: str = "0", partition: int = 0
    ) -> list[RawEntry]:
        """This consumer's own pending entries after ``after`` (a restart under the same name resumes
        them). Never blocks."""
        return await self._read(consumer, count, None, after, partition)

    async def _read(
        self, consumer: str, count: int, block_ms: int | None, after: str, partition: int
    ) -> list[RawEntry]:
        stream = self.partitions[partition].stream
        try:
            async with self._on(stream) as client:
                reply: Any = await client.xreadgroup(
                    self.group, consumer, {stream: after}, count=count, block=block_ms
                )
        except ResponseError as exc:
            raise self._translate(exc, stream) from exc
        if not reply:
            return []
        entries = reply[0][1]
        return [(as_text(sid), fields) for sid, fields in entries if fields]

    async def claim_idle(
        self, consumer: str, min_idle_ms: int, start: str, count: int, partition: int = 0
    ) -> Claimed:
        """Take over entries pending longer than ``min_idle_ms`` (a dead consumer's, or a failed
        attempt's): one XAUTOCLAIM page from ``start``."""
        stream = self.partitions[partition].stream
        try:
            async with self._on(stream) as client:
                reply: Any = await client.xautoclaim(
                    stream, self.group, consumer, min_idle_time=min_idle_ms, start_id=start, count=count
                )
        except ResponseError as exc:
            raise self._translate(exc, stream) from exc
        entries = [(as_text(sid), fields) for sid, fields in reply[1] if fields]
        deleted = [as_text(sid) for sid in (reply[2] if len(reply) > 2 else [])]
        return Claimed(entries, deleted, as_text(reply[0]))

    async def own_pending_ids(self, consumer: str, count: int, partition: int = 0) -> list[str]:
        rows: Any = await self._stream_call(
            self.partitions[partition].stream,
            "xpending_range",
            self.group,
            "-",
            "+",
            count,
            consumername=consumer,
        )
        return [as_text(row["message_id"]) for row in rows]

    async def claim(self, consumer: str, ids: Sequence[str], partition: int = 0) -> list[RawEntry]:
        """Take the given pending entries now, whatever their idle time (a delivery is counted)."""
        claimed: Any = await self._stream_call(
            self.partitions[partition].stream,
            "xclaim",
            self.group,
            consumer,
            min_idle_time=0,
            message_ids=list[Any](ids),
        )
        return [(as_text(sid), fields) for sid, fields in claimed if fields]

    async def keep_claimed(self, consumer: str, ids: Sequence[str], partition: int = 0) -> None:
        """Reset the idle time of entries in hand (XCLAIM JUSTID: not counted as a delivery), so a
        slow batch is not taken for a dead consumer's."""
        await self._stream_call(
            self.partitions[partition].stream,
            "xclaim",
            self.group,
            consumer,
            min_idle_time=0,
            message_ids=list[Any](ids),
            justid=True,
        )

    async def delivery_counts(self, consumer: str, ids: Sequence[str], partition: int = 0) -> dict[str, int]:
        """How many times each of this consumer's pending entries has been delivered."""
        if not ids:
            return {}
        rows: Any = await self._stream_call(
            self.partitions[partition].stream,
            "xpending_range",
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
        partition: int = 0,
        notices: Sequence[str] = (),
    ) -> None:
        """In one MULTI: the sinks' Redis writes (``stage``), the dead letters (reason, fields) and
        their count by reason, and the XACK of the entries that are finished (``done``, which includes
        the dead-lettered ones). Either all of it happens or none: an entry is never acked without its
        results or its dead letter. Then the reply ``notices`` (request ids a ``POST /predict`` may
        wait on): in the MULTI on one Redis; after it on a cluster, where a transaction may only touch
        one slot and a pub/sub channel has none (a missed notice costs a waiter one poll)."""
        part = self.partitions[partition]
        channel = keys.replies_channel(self.stream)
        async with self._on(part.stream) as client, client.pipeline(transaction=True) as pipe:
            stage(pipe)
            for reason, fields in dead_letters:
                pipe.xadd(part.dead_letters, fields)
                pipe.hincrby(part.counters.dead_letters, reason.value, 1)
            if done:
                pipe.xack(part.stream, self.group, *done)
            if not self.cluster:
                for request_id in notices:
                    pipe.publish(channel, request_id)
            await pipe.execute()
        if self.cluster and notices:
            for request_id in notices:
                await self.redis.publish(channel, request_id)

    async def heartbeat(self, consumer: str) -> None:
        await self.redis.zadd(keys.workers_heartbeat_key(self.stream), {consumer: time.time()})

    async def forget_worker(self, consumer: str) -> None:
        """Remove a stopped consumer from the heartbeat set and, where it holds nothing, the groups."""
        await self.redis.zrem(keys.workers_heartbeat_key(self.stream), consumer)
        for part in self.partitions:
            if not await self.own_pending_ids(consumer, 1, part.index):
                await self._stream_call(part.stream, "xgroup_delconsumer", self.group, consumer)

    async def trim_acknowledged(self, partition: int | None = None) -> int:
        """Remove entries that every group has acknowledged, and nothing else (one partition, or all).

        For each group, everything below its oldest pending entry (or, with nothing pending, up to
        its last delivered id) is acknowledged; entries after the last delivered id are unread. The
        stream is trimmed (XTRIM MINID, Redis >= 6.2) to the smallest such bound over all groups."""
        if partition is None:
            return sum([await self.trim_acknowledged(part.index) for part in self.partitions])
        stream = self.partitions[partition].stream
        groups: Any = await self._stream_call(stream, "xinfo_groups")
        if not groups:
            return 0
        bounds = []
        for group in groups:
            name = as_text(group["name"])
            summary: Any = await self._stream_call(stream, "xpending", name)
            if summary["pending"]:
                bounds.append(as_text(summary["min"]))
            else:
                bounds.append(next_id(as_text(group["last-delivered-id"])))
        minimum = min(bounds, key=id_key)
        removed: Any = await self._stream_call(stream, "xtrim", minid=minimum, approximate=False)
        return int(removed)

    def _translate(self, exc: ResponseError, stream: str) -> Exception:
        if "NOGROUP" in str(exc):
            return StreamGroupNotFound(
                f"consumer group {self.group!r} on stream {stream!r} is gone (the stream was deleted "
                "or the group destroyed); the worker recreates it from the start of the stream"
            )
        return exc

    # -- operators (every partition, summed) ---------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Stream length, each group's lag and pending count, consumers and their idle time; with
        partitions, the sums and then each partition's own figures."""
        lengths = await self._each(lambda pipe, part: pipe.xlen(part.stream))
        results = await self._each(lambda pipe, part: pipe.xlen(part.results_stream))
        letters = await self._each(lambda pipe, part: pipe.xlen(part.dead_letters))
        out: dict[str, Any] = {
            "stream": self.stream,
            "length": sum(lengths),
            "results_stream": self.streams.results_stream,
            "results_length": sum(results),
            "dead_letters": sum(letters),
            "groups": await self.groups(),
        }
        if len(self.partitions) > 1:
            out["partitions"] = [
                {
                    "partition": part.index,
                    "stream": part.stream,
                    "length": int(length),
                    "dead_letters": int(letter),
                    "groups": await self.groups(part.index),
                }
                for part, length, letter in zip(self.partitions, lengths, letters, strict=True)
            ]
        return out

    async def dead_letter_count(self) -> int:
        return sum(int(n) for n in await self._each(lambda pipe, part: pipe.xlen(part.dead_letters)))

    async def groups(self, partition: int | None = None) -> list[dict[str, Any]]:
        """Each consumer group: pending count, lag, last delivered id, and its consumers with their
        pending count and idle time (none before the stream exists). Without ``partition``, summed
        over the partitions (a consumer's idle time is its shortest; the last delivered id is the one
        of a single stream only)."""
        if partition is not None or len(self.partitions) == 1:
            return await self._groups(self.partitions[partition or 0].stream)
        merged: dict[str, dict[str, Any]] = {}
        for part in self.partitions:
            for group in await self._groups(part.stream):
                into = merged.setdefault(
                    group["name"],
                    {
                        "name": group["name"],
                        "pending": 0,
                        "lag": 0,
                        "last_delivered_id": None,
                        "consumers": [],
                    },
                )
                into["pending"] += group["pending"]
                into["lag"] += group["lag"]
                consumers = {c["name"]: c for c in into["consumers"]}
                for consumer in group["consumers"]:
                    known = consumers.get(consumer["name"])
                    if known is None:
                        into["consumers"].append(dict(consumer))
                    else:
                        known["pending"] += consumer["pending"]
                        known["idle_ms"] = min(known["idle_ms"], consumer["idle_ms"])
        return list(merged.values())

    async def _groups(self, stream: str) -> list[dict[str, Any]]:
        try:
            groups: Any = await self._stream_call(stream, "xinfo_groups")
        except ResponseError:  # no stream yet
            return []
        out = []
        for group in groups:
            name = as_text(group["name"])
            consumers: Any = await self.redis.xinfo_consumers(stream, name)
            last_delivered = as_text(group["last-delivered-id"])
            lag = group.get("lag")
            out.append(
                {
                    "name": name,
                    "pending": int(group["pending"]),
                    # Redis < 7 has no "lag" in XINFO GROUPS: count the entries after the last delivered id.
                    "lag": int(lag) if lag is not None else await self.lag(last_delivered, stream),
                    "last_delivered_id": last_delivered,
                    "consumers": [
                        {"name": as_text(c["name"]), "pending": int(c["pending"]), "idle_ms": int(c["idle"])}
                        for c in consumers
                    ],
                }
            )
        return out

    async def lag(self, last_delivered_id: str, stream: str | None = None) -> int:
        """Entries not yet delivered to a group (a paged scan; Redis 7 reports it directly)."""
        stream = stream or self.partitions[0].stream
        lag = 0
        start = f"({last_delivered_id}"
        while True:
            page: Any = await self.redis.xrange(stream, min=start, max="+", count=LAG_SCAN_PAGE)
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
