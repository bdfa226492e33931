"""The worker's side of the stream: every consumer-group command of one consumer, one partition at a time.

Create the groups, read new entries and this consumer's own pending ones, take over idle entries
(XAUTOCLAIM) and keep the ones in hand marked as alive (XCLAIM JUSTID), settle a batch (the sinks'
writes, dead letters and XACK in one MULTI), heartbeat, deregister, trim what every group acknowledged.

A missing group becomes :class:`~streamml.errors.StreamGroupNotFound` with what the worker does about it.
Connection errors reach the worker as they are: its reconnect policy decides what to do with them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from streamml.errors import FailureReason, StreamGroupNotFound
from streamml.stream.ids import as_text, id_key, next_id
from streamml.stream.nodes import SlotClients
from streamml.stream.topology import Partition, StreamTopology, claim_partition_count

RawEntry = tuple[str, dict[bytes, bytes]]
"""A stream entry as read: (id, fields)."""


@dataclass(frozen=True)
class Claimed:
    """One page of XAUTOCLAIM: the entries taken over, the ids whose data was trimmed away while
    pending (Redis removes those from the pending list), and where the next page starts ("0-0": done)."""

    entries: list[RawEntry]
    deleted: list[str]
    next_start: str


class Consumer:
    """One member (``name``) of the pipeline's consumer group."""

    def __init__(self, slots: SlotClients, topology: StreamTopology, name: str) -> None:
        self.slots = slots
        self.topology = topology
        self.group = topology.group
        self.name = name

    async def ensure_groups(self) -> None:
        """Check the partition count, then create each partition's group from the start of its stream
        (id 0), so nothing published before the first worker is skipped. MKSTREAM creates a stream the
        gateway has not yet."""
        await claim_partition_count(self.slots.redis, self.topology)
        for part in self.topology.partitions:
            try:
                await self.slots.redis.xgroup_create(part.stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read_new(self, part: Partition, count: int, block_ms: int | None = None) -> list[RawEntry]:
        """Entries never delivered to the group, blocking up to ``block_ms`` when there are none
        (None: answer at once)."""
        return await self._read(part, count, block_ms, ">")

    async def read_own_pending(self, part: Partition, count: int, after: str = "0") -> list[RawEntry]:
        """This consumer's own pending entries after ``after`` (a restart under the same name resumes
        them). Never blocks."""
        return await self._read(part, count, None, after)

    async def _read(self, part: Partition, count: int, block_ms: int | None, after: str) -> list[RawEntry]:
        try:
            async with self.slots.on(part.stream) as client:
                reply: Any = await client.xreadgroup(
                    self.group, self.name, {part.stream: after}, count=count, block=block_ms
                )
        except ResponseError as exc:
            raise self._translate(exc, part.stream) from exc
        if not reply:
            return []
        return [(as_text(sid), fields) for sid, fields in reply[0][1] if fields]

    async def claim_idle(self, part: Partition, min_idle_ms: int, start: str, count: int) -> Claimed:
        """Take over entries pending longer than ``min_idle_ms`` (a dead consumer's, or a failed
        attempt's): one XAUTOCLAIM page from ``start``."""
        try:
            async with self.slots.on(part.stream) as client:
                reply: Any = await client.xautoclaim(
                    part.stream, self.group, self.name, min_idle_time=min_idle_ms, start_id=start, count=count
                )
        except ResponseError as exc:
            raise self._translate(exc, part.stream) from exc
        entries = [(as_text(sid), fields) for sid, fields in reply[1] if fields]
        deleted = [as_text(sid) for sid in (reply[2] if len(reply) > 2 else [])]
        return Claimed(entries, deleted, as_text(reply[0]))

    async def own_pending_ids(self, part: Partition, count: int) -> list[str]:
        rows: Any = await self.slots.call(
            part.stream, "xpending_range", self.group, "-", "+", count, consumername=self.name
        )
        return [as_text(row["message_id"]) for row in rows]

    async def claim(self, part: Partition, ids: Sequence[str]) -> list[RawEntry]:
        """Take the given pending entries now, whatever their idle time (a delivery is counted)."""
        claimed: Any = await self.slots.call(
            part.stream, "xclaim", self.group, self.name, min_idle_time=0, message_ids=list[Any](ids)
        )
        return [(as_text(sid), fields) for sid, fields in claimed if fields]

    async def keep_claimed(self, part: Partition, ids: Sequence[str]) -> None:
        """Reset the idle time of entries in hand (XCLAIM JUSTID: not counted as a delivery), so a
        slow batch is not taken for a dead consumer's."""
        await self.slots.call(
            part.stream,
            "xclaim",
            self.group,
            self.name,
            min_idle_time=0,
            message_ids=list[Any](ids),
            justid=True,
        )

    async def delivery_counts(self, part: Partition, ids: Sequence[str]) -> dict[str, int]:
        """How many times each of this consumer's pending entries has been delivered."""
        if not ids:
            return {}
        rows: Any = await self.slots.call(
            part.stream,
            "xpending_range",
            self.group,
            min(ids, key=id_key),
            max(ids, key=id_key),
            len(ids) * 2,
            consumername=self.name,
        )
        return {as_text(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def settle(
        self,
        part: Partition,
        done: Sequence[str],
        dead_letters: Sequence[tuple[FailureReason, Any]],
        stage: Callable[[Pipeline], None],
        notices: Sequence[str] = (),
    ) -> None:
        """In one MULTI: the sinks' Redis writes (``stage``), the dead letters (reason, fields) and
        their count by reason, and the XACK of the entries that are finished (``done``, which includes
        the dead-lettered ones). Either all of it happens or none: an entry is never acked without its
        results or its dead letter. Then the reply ``notices`` (request ids a ``POST /predict`` may
        wait on): in the MULTI on one Redis; after it on a cluster, where a transaction may only touch
        one slot and a pub/sub channel has none (a missed notice costs a waiter one poll)."""
        channel = self.topology.replies
        cluster = self.slots.cluster
        async with self.slots.on(part.stream) as client, client.pipeline(transaction=True) as pipe:
            stage(pipe)
            for reason, fields in dead_letters:
                pipe.xadd(part.dead_letters, fields)
                pipe.hincrby(part.counters.dead_letters, reason.value, 1)
            if done:
                pipe.xack(part.stream, self.group, *done)
            if not cluster:
                for request_id in notices:
                    pipe.publish(channel, request_id)
            await pipe.execute()
        if cluster and notices:
            for request_id in notices:
                await self.slots.redis.publish(channel, request_id)

    async def heartbeat(self) -> None:
        await self.slots.redis.zadd(self.topology.heartbeats, {self.name: time.time()})

    async def forget(self) -> None:
        """Remove this stopped consumer from the heartbeat set and, where it holds nothing, the groups."""
        await self.slots.redis.zrem(self.topology.heartbeats, self.name)
        for part in self.topology.partitions:
            if not await self.own_pending_ids(part, 1):
                await self.slots.call(part.stream, "xgroup_delconsumer", self.group, self.name)

    async def trim_acknowledged(self, part: Partition) -> int:
        """Remove the entries of one partition that every group has acknowledged, and nothing else.

        For each group, everything below its oldest pending entry (or, with nothing pending, up to
        its last delivered id) is acknowledged; entries after the last delivered id are unread. The
        stream is trimmed (XTRIM MINID, Redis >= 6.2) to the smallest such bound over all groups."""
        groups: Any = await self.slots.call(part.stream, "xinfo_groups")
        if not groups:
            return 0
        bounds = []
        for group in groups:
            summary: Any = await self.slots.call(part.stream, "xpending", as_text(group["name"]))
            if summary["pending"]:
                bounds.append(as_text(summary["min"]))
            else:
                bounds.append(next_id(as_text(group["last-delivered-id"])))
        minimum = min(bounds, key=id_key)
        removed: Any = await self.slots.call(part.stream, "xtrim", minid=minimum, approximate=False)
        return int(removed)

    def _translate(self, exc: ResponseError, stream: str) -> Exception:
        if "NOGROUP" in str(exc):
            return StreamGroupNotFound(
                f"consumer group {self.group!r} on stream {stream!r} is gone (the stream was deleted "
                "or the group destroyed); the worker recreates it from the start of the stream"
            )
        return exc
