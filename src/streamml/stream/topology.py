"""The layout of one pipeline in Redis, built once from the stream settings and handed to every store.

A pipeline has one request stream, or N partitions of it (``STREAMML_STREAM_PARTITIONS``; 12 by default
on a cluster): streams ``<name>:{tag}``, each with its own consumer group, and everything a MULTI on it
touches — its dead letters, result documents, counters, idempotency keys, shadow aggregates, results
stream — under the same hash tag (``keys.partition_name``), so it lives in one cluster slot. What is one
per pipeline (heartbeats, canary shares, drift windows, rate-limit counters, the replies channel) hangs
off the pipeline's name.

Ids that must find their way back to a partition carry it: with more than one partition a request id
and a dead letter's id end in ``-<partition>`` (:meth:`StreamTopology.tag_id`,
:meth:`~StreamTopology.locate`).
"""

from __future__ import annotations

import itertools
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any

from streamml import keys
from streamml.errors import PartitionCountMismatch
from streamml.settings import StreamSettings

CLUSTER_PARTITIONS = 12
"""Partitions on a cluster when none are configured: 12 divides evenly over 1, 2, 3, 4 or 6 masters
(``keys.partition_tag`` spreads their slots)."""


@dataclass(frozen=True)
class Partition:
    """One request stream and the keys that share its hash tag."""

    index: int
    stream: str
    dead_letters: str
    results: str
    """Its share of the results stream (``<results>:{tag}``, or the results stream itself)."""
    counters: keys.CounterKeys

    def result_key(self, request_id: str) -> str:
        return keys.result_key(self.stream, request_id)

    def idempotency_key(self, key: str) -> str:
        return keys.idempotency_key(self.stream, key)

    def answer_key(self, request_id: str) -> str:
        return keys.answer_key(self.stream, request_id)

    def feedback_key(self, request_id: str) -> str:
        return keys.feedback_key(self.stream, request_id)

    @property
    def shadow_index(self) -> str:
        return keys.shadow_index_key(self.stream)

    def shadow_pair(self, route: str, champion: str, challenger: str) -> str:
        return keys.shadow_pair_key(self.stream, route, champion, challenger)


@dataclass(frozen=True)
class StreamTopology:
    """The pipeline's name, consumer group and partitions, and the id formats that point into them."""

    name: str
    """The request stream itself with one partition, the prefix of the partitions' streams with more."""
    group: str
    results: str
    """The results stream's name (with partitions, the prefix of each partition's share)."""
    partitions: tuple[Partition, ...]
    _spread: Any = field(default_factory=itertools.count, repr=False, compare=False)
    """Round-robin counter for requests without an ``Idempotency-Key``."""

    @classmethod
    def of(cls, settings: StreamSettings, *, cluster: bool = False) -> StreamTopology:
        """The layout ``settings`` describe; on a cluster an unset partition count is
        :data:`CLUSTER_PARTITIONS` (one stream lives in one slot, on one node)."""
        count = settings.partitions or (CLUSTER_PARTITIONS if cluster else 1)
        partitions = []
        for index in range(count):
            stream = keys.partition_name(settings.name, index, count)
            partitions.append(
                Partition(
                    index,
                    stream,
                    keys.dead_letter_stream(stream),
                    keys.partition_name(settings.results, index, count),
                    keys.counter_keys(stream),
                )
            )
        return cls(settings.name, settings.group, settings.results, tuple(partitions))

    @property
    def count(self) -> int:
        return len(self.partitions)

    # -- where requests go, and finding them again -------------------------------------------

    def partition_for(self, idempotency_key: str | None) -> Partition:
        """Where a new request goes: by its ``Idempotency-Key`` when it has one (a repeat lands where
        the first did, with the key's record), else round robin."""
        if self.count == 1:
            return self.partitions[0]
        if idempotency_key is not None:
            return self.partitions[zlib.crc32(idempotency_key.encode()) % self.count]
        return self.partitions[int(next(self._spread)) % self.count]

    def new_request_id(self, partition: Partition) -> str:
        """A fresh request id that names its partition."""
        return self.tag_id(uuid.uuid4().hex, partition)

    def tag_id(self, raw_id: str, partition: Partition) -> str:
        """An id (a request id, a dead letter's stream id) that says which partition it belongs to:
        ``<id>-<partition>`` with several partitions, the id itself with one."""
        return raw_id if self.count == 1 else f"{raw_id}-{partition.index}"

    def locate(self, tagged_id: str) -> tuple[Partition, str] | None:
        """(partition, the id within it) of an id :meth:`tag_id` made; None when it names none."""
        if self.count == 1:
            return self.partitions[0], tagged_id
        raw, dash, tail = tagged_id.rpartition("-")
        if not dash or not raw or not tail.isdigit() or int(tail) >= self.count:
            return None
        return self.partitions[int(tail)], raw

    def partition_of(self, request_id: str) -> Partition | None:
        """The partition a request id was published to (None: not an id of this pipeline)."""
        located = self.locate(request_id)
        return None if located is None else located[0]

    # -- one key per pipeline ----------------------------------------------------------------

    @property
    def heartbeats(self) -> str:
        return keys.workers_heartbeat_key(self.name)

    @property
    def replies(self) -> str:
        return keys.replies_channel(self.name)

    @property
    def canary(self) -> str:
        return keys.canary_key(self.name)

    def drift(self, route: str) -> str:
        return keys.drift_key(self.name, route)

    @property
    def model_states(self) -> str:
        return keys.model_states_key(self.name)

    @property
    def rate_limit_prefix(self) -> str:
        return keys.rate_limit_prefix(self.name)

    @property
    def recorded_partitions(self) -> str:
        return keys.partitions_key(self.name)


async def claim_partition_count(redis: Any, topology: StreamTopology) -> None:
    """Record the partition count in Redis at first use; refuse another one with
    :class:`~streamml.errors.PartitionCountMismatch` (changing it would strand the entries of the
    partitions that disappear, and move every key a request id points to)."""
    name = topology.recorded_partitions
    await redis.set(name, topology.count, nx=True)
    recorded = int(await redis.get(name))
    if recorded != topology.count:
        raise PartitionCountMismatch(
            f"stream {topology.name!r} was created with {recorded} partition(s) but this process is "
            f"configured with STREAMML_STREAM_PARTITIONS={topology.count}; set it to {recorded}, or "
            "migrate (docs/scaling.md: changing the partition count)"
        )
