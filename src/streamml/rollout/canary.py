"""Each route's canary share: the share of its requests the challenger answers (``streamml canary set``).

Kept in Redis rather than in settings so that ``streamml canary set lightgbm 10%`` reaches every worker
within a second (``STREAMML_ROLLOUT_REFRESH_S``).
"""

from __future__ import annotations

from redis.asyncio import Redis

from streamml.stream.ids import as_text
from streamml.stream.topology import StreamTopology


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


class CanaryStore:
    def __init__(self, redis: Redis, topology: StreamTopology) -> None:
        self.redis = redis
        self.key = topology.canary

    async def shares(self) -> dict[str, float]:
        """Route -> share of its requests the challenger answers (routes without a canary absent)."""
        raw = await self.redis.hgetall(self.key)
        return {as_text(route): float(share) for route, share in raw.items()}

    async def set(self, route: str, share: float) -> None:
        """Set a route's canary share; 0 ends the canary."""
        if share <= 0:
            await self.redis.hdel(self.key, route)
        else:
            await self.redis.hset(self.key, route, repr(share))
