"""The operators' read side of the stream: lengths, each group's lag and pending count, consumers and
their idle time, dead letters; every partition summed, then each partition's own figures. Read-only.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ResponseError

from streamml.settings import StreamSettings
from streamml.stream.ids import as_text
from streamml.stream.nodes import SlotClients
from streamml.stream.topology import StreamTopology

LAG_SCAN_PAGE = 10_000


class StreamStatus:
    def __init__(self, slots: SlotClients, topology: StreamTopology) -> None:
        self.slots = slots
        self.topology = topology

    @classmethod
    def of(
        cls, redis: Redis | RedisCluster, settings: StreamSettings, *, cluster: bool = False
    ) -> StreamStatus:
        """The status reader of the pipeline ``settings`` describe, on its own :class:`SlotClients`."""
        return cls(SlotClients(redis), StreamTopology.of(settings, cluster=cluster))

    async def status(self) -> dict[str, Any]:
        """Stream length, each group's lag and pending count, consumers and their idle time; with
        partitions, the sums and then each partition's own figures."""
        parts = self.topology.partitions
        lengths = await self.slots.each(parts, lambda pipe, p: pipe.xlen(p.stream))
        results = await self.slots.each(parts, lambda pipe, p: pipe.xlen(p.results))
        letters = await self.slots.each(parts, lambda pipe, p: pipe.xlen(p.dead_letters))
        out: dict[str, Any] = {
            "stream": self.topology.name,
            "length": sum(lengths),
            "results_stream": self.topology.results,
            "results_length": sum(results),
            "dead_letters": sum(letters),
            "groups": await self.groups(),
        }
        if len(parts) > 1:
            out["partitions"] = [
                {
                    "partition": part.index,
                    "stream": part.stream,
                    "length": int(length),
                    "dead_letters": int(letter),
                    "groups": await self.groups(part.index),
                }
                for part, length, letter in zip(parts, lengths, letters, strict=True)
            ]
        return out

    async def dead_letter_count(self) -> int:
        counts = await self.slots.each(self.topology.partitions, lambda pipe, p: pipe.xlen(p.dead_letters))
        return sum(int(n) for n in counts)

    async def groups(self, partition: int | None = None) -> list[dict[str, Any]]:
        """Each consumer group: pending count, lag, last delivered id, and its consumers with their
        pending count and idle time (none before the stream exists). Without ``partition``, summed
        over the partitions (a consumer's idle time is its shortest; the last delivered id is the one
        of a single stream only)."""
        parts = self.topology.partitions
        if partition is not None or len(parts) == 1:
            return await self._groups(parts[partition or 0].stream)
        merged: dict[str, dict[str, Any]] = {}
        for part in parts:
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
            groups: Any = await self.slots.call(stream, "xinfo_groups")
        except ResponseError:  # no stream yet
            return []
        out = []
        for group in groups:
            name = as_text(group["name"])
            consumers: Any = await self.slots.redis.xinfo_consumers(stream, name)
            last_delivered = as_text(group["last-delivered-id"])
            lag = group.get("lag")
            out.append(
                {
                    "name": name,
                    "pending": int(group["pending"]),
                    # Redis < 7 has no "lag" in XINFO GROUPS: count the entries after the last delivered id.
                    "lag": int(lag) if lag is not None else await self.lag(stream, last_delivered),
                    "last_delivered_id": last_delivered,
                    "consumers": [
                        {"name": as_text(c["name"]), "pending": int(c["pending"]), "idle_ms": int(c["idle"])}
                        for c in consumers
                    ],
                }
            )
        return out

    async def lag(self, stream: str, last_delivered_id: str) -> int:
        """Entries of ``stream`` not yet delivered to a group (a paged scan; Redis 7 reports it directly)."""
        lag = 0
        start = f"({last_delivered_id}"
        while True:
            page: Any = await self.slots.redis.xrange(stream, min=start, max="+", count=LAG_SCAN_PAGE)
            lag += len(page)
            if len(page) < LAG_SCAN_PAGE:
                return lag
            start = f"({as_text(page[-1][0])}"
