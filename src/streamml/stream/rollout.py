"""What every worker and gateway share about challengers, in Redis: each route's canary share, the shadow
aggregates per version pair, and (for drift) each worker's window of recent records.

Kept in Redis rather than in settings so that ``streamml canary set lightgbm 10%`` reaches every process
at once, and so the reports sum all workers' work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from streamml import keys
from streamml.models.dispatch import Scored, ShadowRun
from streamml.models.shadow import PairKey, ShadowReport, increments
from streamml.settings import StreamSettings


def parse_share(text: str) -> float:
    """``10%``, ``0.1`` or ``10 %`` -> 0.1; refused outside [0, 1] with the reason."""
    cleaned = text.strip().replace(" ", "")
    try:
        value = float(cleaned[:-1]) / 100.0 if cleaned.endswith("%") else float(cleaned)
    except ValueError:
        raise ValueError(f"{text!r} is not a share: write 10% or 0.1") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{text!r} is outside 0%..100%")
    return value


class RolloutStore:
    def __init__(self, redis: Redis, stream: str, partitions: Sequence[str] = ()) -> None:
        """``partitions``: the request streams the shadow aggregates are kept under (each partition's
        workers add to their own, in the MULTI that acknowledges the batch); default ``[stream]``."""
        self.redis = redis
        self.stream = stream
        self.canary_key = keys.canary_key(stream)
        self.partitions = list(partitions) or [stream]

    @classmethod
    def of(cls, redis: Redis, streams: StreamSettings) -> RolloutStore:
        count = streams.partitions
        return cls(
            redis, streams.stream, [keys.partition_name(streams.stream, p, count) for p in range(count)]
        )

    # -- canary --------------------------------------------------------------------------------

    async def canary(self) -> dict[str, float]:
        """Route -> share of its requests the challenger answers (routes without a canary absent)."""
        raw = await self.redis.hgetall(self.canary_key)
        return {_text(route): float(share) for route, share in raw.items()}

    async def set_canary(self, route: str, share: float) -> None:
        """Set a route's canary share; 0 ends the canary."""
        if share <= 0:
            await self.redis.hdel(self.canary_key, route)
        else:
            await self.redis.hset(self.canary_key, route, repr(share))

    # -- shadow aggregates ---------------------------------------------------------------------

    async def shadow_reports(self, route: str | None = None) -> list[ShadowReport]:
        """Every pair's report (of one route, if given), in route then version order, summed over
        the partitions."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream in self.partitions:
                pipe.smembers(keys.shadow_index_key(stream))
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
                for stream in self.partitions:
                    pipe.hgetall(keys.shadow_pair_key(stream, pair.route, pair.champion, pair.challenger))
            hashes = await pipe.execute()
        width = len(self.partitions)
        return [
            ShadowReport.from_fields(pair, _summed(hashes[i * width : (i + 1) * width]))
            for i, pair in enumerate(pairs)
        ]


def stage_shadow(
    tx: Pipeline, stream: str, runs: Sequence[ShadowRun], results: Sequence[Scored[Any]]
) -> None:
    """Add a batch's shadow runs to their pairs' totals, in the transaction that acknowledges it."""
    for run in runs:
        pair = PairKey(run.route, run.champion.name, run.champion.version, run.challenger.version)
        key = keys.shadow_pair_key(stream, pair.route, pair.champion, pair.challenger)
        tx.sadd(
            keys.shadow_index_key(stream),
            orjson.dumps([pair.route, pair.model, pair.champion, pair.challenger]),
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
            key, value = _text(raw_key), _text(raw_value)
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _number(version: str) -> int:
    return int(version) if version.isdigit() else 0
