"""Which model version each worker serves for each route, and whether it could load it. Workers write
their own (after warm-up, then with every heartbeat); readers merge the live workers': ``/ready`` and
``/v2/models/{route}/ready`` are false for a route whose current version no worker can load (with the
error), the gateway refuses a request for probabilities of a version that has none, and ``streamml
status`` and the dashboard show each route's state.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson
from redis.asyncio import Redis

from streamml.stream.topology import StreamTopology

State = Literal["loaded", "failed", "not loaded"]
LOADED: State = "loaded"
FAILED: State = "failed"
NOT_LOADED: State = "not loaded"


@dataclass(frozen=True)
class RouteLoad:
    """One worker's state of one route's current model version."""

    route: str
    name: str
    version: str
    state: State
    error: str | None = None
    kind: str = ""
    """The kind of model it loaded as (``scikit-learn``, ``LightGBM``, ...)."""
    proba: bool = False
    """It has class probabilities (``?output=proba``)."""
    classes: list[Any] | None = field(default=None)

    @classmethod
    def of(cls, document: dict[str, Any]) -> RouteLoad:
        return cls(**{k: v for k, v in document.items() if k in cls.__dataclass_fields__})


def servable(loads: Sequence[RouteLoad], version: str) -> tuple[bool, str | None]:
    """Whether some worker can serve ``version``: not when every worker that tried failed (the first
    error says why); a version no worker has tried yet counts as servable (it loads with its first
    request, as after an alias move)."""
    tried = [load for load in loads if load.version == version and load.state != NOT_LOADED]
    if not tried or any(load.state == LOADED for load in tried):
        return True, None
    return False, tried[0].error


class ModelStates:
    """The states in Redis: a hash of worker -> its routes' states and when it wrote them. A worker that
    stopped writing (it died, or stopped) drops out after ``stale_s``."""

    def __init__(self, redis: Redis, topology: StreamTopology, stale_s: float = 30.0) -> None:
        self.redis = redis
        self.key = topology.model_states
        self.stale_s = stale_s
        self._read: tuple[float, dict[str, list[RouteLoad]]] | None = None

    async def publish(self, consumer: str, loads: Sequence[RouteLoad]) -> None:
        """This worker's states, replacing its previous ones."""
        document = {"at": time.time(), "routes": [asdict(load) for load in loads]}
        await self.redis.hset(self.key, consumer, orjson.dumps(document))

    async def forget(self, consumer: str) -> None:
        await self.redis.hdel(self.key, consumer)

    async def read(self, *, max_age_s: float = 0.0) -> dict[str, list[RouteLoad]]:
        """Route -> the states of the workers that wrote theirs lately, reusing a reading younger than
        ``max_age_s`` (the gateway asks per request: once a second is enough)."""
        now = time.monotonic()
        if self._read is not None and now - self._read[0] < max_age_s:
            return self._read[1]
        raw: Any = await self.redis.hgetall(self.key)
        fresh_after = time.time() - self.stale_s
        out: dict[str, list[RouteLoad]] = {}
        for document in map(orjson.loads, raw.values()):
            if document["at"] < fresh_after:
                continue
            for load in document["routes"]:
                out.setdefault(load["route"], []).append(RouteLoad.of(load))
        self._read = (now, out)
        return out
