"""Shadow scoring's aggregates in Redis: what a batch's shadow runs add to their version pair's totals
(:func:`stage_shadow`, in the transaction that acknowledges the batch, under the batch's partition's hash
tag), and the reports read back, summed over the partitions (:class:`ShadowStore`). The arithmetic is
:mod:`streamml.models.shadow`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from streamml.models.dispatch import Scored, ShadowRun
from streamml.models.shadow import PairKey, ShadowReport, increments
from streamml.stream.ids import as_text
from streamml.stream.topology import Partition, StreamTopology


class ShadowStore:
    def __init__(self, redis: Redis, topology: StreamTopology) -> None:
        self.redis = redis
        self.partitions = topology.partitions

    async def reports(self, route: str | None = None) -> list[ShadowReport]:
        """Every pair's report (of one route, if given), in route then version order, summed over
        the partitions."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for part in self.partitions:
                pipe.smembers(part.shadow_index)
            indexes = await pipe.execute()
        members = set().union(*indexes)
        pairs = sorted(
            (p for p in (PairKey(*orjson.loads(m)) for m in members) if route is None or p.route == route),
            key=lambda p: (p.route, _number(p.champion), _number(p.challenger)),
        )
        if not pairs:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for pair in pairs:
                for part in self.partitions:
                    pipe.hgetall(part.shadow_pair(pair.route, pair.champion, pair.challenger))
            hashes = await pipe.execute()
        width = len(self.partitions)
        return [
            ShadowReport.from_fields(pair, _summed(hashes[i * width : (i + 1) * width]))
            for i, pair in enumerate(pairs)
        ]


def stage_shadow(
    tx: Pipeline, partition: Partition, runs: Sequence[ShadowRun], results: Sequence[Scored[Any]]
) -> None:
    """Add a batch's shadow runs to their pairs' totals, in the transaction that acknowledges it."""
    for run in runs:
        pair = PairKey(run.route, run.champion.name, run.champion.version, run.challenger.version)
        key = partition.shadow_pair(pair.route, pair.champion, pair.challenger)
        tx.sadd(
            partition.shadow_index, orjson.dumps([pair.route, pair.model, pair.champion, pair.challenger])
        )
        for field, amount in increments(run, results).items():
            if isinstance(amount, int):
                tx.hincrby(key, field, amount)
            else:
                tx.hincrbyfloat(key, field, amount)
        if run.error:
            tx.hset(key, "last_error", run.error[:500])
        if run.incompatible:
            tx.hset(key, "incompatible", run.incompatible)


def _summed(hashes: Sequence[dict[Any, Any]]) -> dict[str, str]:
    """One pair's aggregates from every partition: numbers added, texts (the last error, why
    incompatible) from whichever partition has one."""
    out: dict[str, str] = {}
    for fields in hashes:
        for raw_key, raw_value in fields.items():
            key, value = as_text(raw_key), as_text(raw_value)
            if key not in out:
                out[key] = value
                continue
            try:
                out[key] = str(int(out[key]) + int(value))
            except ValueError:
                try:
                    out[key] = repr(float(out[key]) + float(value))
                except ValueError:
                    out[key] = out[key] or value
    return out


def _number(version: str) -> int:
    return int(version) if version.isdigit() else 0
