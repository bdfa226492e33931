"""The gateway's side of the stream: publishing requests, reading their results, the backlog, live
workers — and the one other way an entry enters a request stream, a dead letter's replay.

Every request is written in one MULTI with its ``pending`` result document and its count, so a request
id is never visible without its entry; the MULTI is sent on one pinned connection of the partition's
node and answered only once it is as durable as configured (:mod:`streamml.stream.durable`).

Redis errors become :class:`~streamml.errors.BrokerUnavailable`: the gateway answers 503 and nothing is
half-published.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from streamml.errors import BrokerUnavailable
from streamml.output_kinds import PREDICT
from streamml.rows import Rows, RowsLike
from streamml.settings import StreamSettings
from streamml.stream.durable import DurableWriter
from streamml.stream.entry import encode_entry
from streamml.stream.ids import as_text
from streamml.stream.nodes import SlotClients
from streamml.stream.topology import Partition, StreamTopology, claim_partition_count

PENDING = b'{"status":"pending"}'

Request = tuple[str, str, RowsLike]
"""(request id, route, records)."""


@dataclass(frozen=True)
class Publication:
    """One request to publish, with its own options (:meth:`Publisher.publish_each`)."""

    request_id: str
    route: str
    records: RowsLike
    reply: bool = False
    owner: str = ""
    output: str = PREDICT


class Publisher:
    def __init__(self, slots: SlotClients, topology: StreamTopology, settings: StreamSettings) -> None:
        self.slots = slots
        self.topology = topology
        self.result_ttl_s = settings.result_ttl_s
        self.durable = DurableWriter(settings.durability, settings.durability_timeout_ms)
        """Every publish goes through it, ``memory`` too: MULTI…EXEC written on one pinned connection
        in one round trip costs less CPU than redis-py's transaction pipeline (``bench.publish_cost``)."""
        self._checked = False

    @classmethod
    def of(cls, redis: Redis | RedisCluster, settings: StreamSettings, *, cluster: bool = False) -> Publisher:
        """A publisher on its own :class:`SlotClients` for the pipeline ``settings`` describe."""
        return cls(SlotClients(redis), StreamTopology.of(settings, cluster=cluster), settings)

    async def check(self) -> None:
        """Once per process: the partition count is the recorded one, and the server can give the
        configured durability (``fsync`` needs an append-only file). Raises the domain error saying so."""
        if self._checked:
            return
        await claim_partition_count(self.slots.redis, self.topology)
        if self.durable.durability != "memory":
            for part in self.topology.partitions:  # every master the partitions live on
                async with self.slots.on(part.stream) as client:
                    await self.durable.check(client, part.stream)
        self._checked = True

    async def publish(
        self,
        request_id: str,
        route: str,
        records: RowsLike,
        *,
        reply: bool = False,
        owner: str = "",
        output: str = PREDICT,
    ) -> str:
        """Record the request as pending and append its entry to its partition's stream, atomically.
        Returns the entry's stream id."""
        [stream_id] = await self.publish_many(
            [(request_id, route, records)], reply=reply, owner=owner, output=output
        )
        return stream_id

    async def publish_many(
        self, requests: Sequence[Request], *, reply: bool = False, owner: str = "", output: str = PREDICT
    ) -> list[str]:
        """:meth:`publish` for many requests at once, one MULTI per partition (bulk loads, benchmarks).
        Returns the stream ids in order."""
        return await self.publish_each(
            [Publication(r, route, records, reply, owner, output) for r, route, records in requests]
        )

    async def publish_each(self, publications: Sequence[Publication]) -> list[str]:
        """Requests with options of their own, one MULTI per partition; the stream ids in order."""
        try:
            await self.check()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot read the partition count: {type(exc).__name__}") from exc
        by_partition: dict[Partition, list[int]] = {}
        for position, publication in enumerate(publications):
            partition = self.topology.partition_of(publication.request_id)
            if partition is None:
                raise ValueError(
                    f"{publication.request_id!r} is not a request id of this pipeline "
                    "(StreamTopology.new_request_id)"
                )
            by_partition.setdefault(partition, []).append(position)
        stream_ids = [""] * len(publications)
        for part, positions in by_partition.items():
            commands: list[tuple[Any, ...]] = []
            for position in positions:
                p = publications[position]
                pending = orjson.dumps({"status": "pending", "owner": p.owner}) if p.owner else PENDING
                rows = Rows.of(p.records)
                fields = encode_entry(
                    p.request_id, p.route, rows, reply=p.reply, owner=p.owner, output=p.output
                )
                commands += [
                    ("HINCRBY", part.counters.accepted, p.route, len(rows)),
                    ("SET", part.result_key(p.request_id), pending, "EX", self.result_ttl_s, "NX"),
                    ("XADD", part.stream, "*", *itertools.chain.from_iterable(fields.items())),
                ]
            replies = await self._transaction(part.stream, commands)
            for position, stream_id in zip(positions, replies[2::3], strict=True):
                stream_ids[position] = as_text(stream_id)
        return stream_ids

    async def replay(self, partition: Partition, fields: Mapping[str, str], letter_id: str) -> None:
        """Put a dead letter's original fields back on its partition's stream and delete the letter,
        in one MULTI: a letter is never both replayed and kept, nor lost."""
        commands = [
            ("XADD", partition.stream, "*", *itertools.chain.from_iterable(fields.items())),
            ("XDEL", partition.dead_letters, letter_id),
        ]
        await self._transaction(partition.stream, commands)

    async def _transaction(self, key: str, commands: list[tuple[Any, ...]]) -> list[Any]:
        """The commands in one MULTI on ``key``'s node, durable as configured."""
        try:
            async with self.slots.on(key) as client:
                return await self.durable.transaction(client, commands)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot publish to Redis: {type(exc).__name__}") from exc

    async def result(self, request_id: str) -> dict[str, Any] | None:
        """The request's result document (``pending`` until a worker writes it); None when the id is
        not one of this pipeline's, or its result expired."""
        partition = self.topology.partition_of(request_id)
        if partition is None:
            return None
        try:
            async with self.slots.on(partition.stream) as client:
                raw: Any = await client.get(partition.result_key(request_id))
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot read from Redis: {type(exc).__name__}") from exc
        return None if raw is None else dict(orjson.loads(raw))

    async def backlog(self) -> int:
        """Entries in the request streams: unread, pending, or acknowledged but not yet trimmed (all
        partitions summed)."""
        try:
            lengths = await self.slots.each(self.topology.partitions, lambda pipe, p: pipe.xlen(p.stream))
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot read the backlog: {type(exc).__name__}") from exc
        return sum(int(length) for length in lengths)

    async def live_workers(self, within_s: float) -> list[str]:
        """Consumers whose last heartbeat is at most ``within_s`` old."""
        members: Any = await self.slots.redis.zrangebyscore(
            self.topology.heartbeats, time.time() - within_s, "+inf"
        )
        return [as_text(m) for m in members]
