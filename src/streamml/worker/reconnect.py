"""The one policy for a Redis outage, shared by every loop of a worker: back off, log every attempt with
how long the outage has lasted, and give up after a configured time (0: never)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import ClusterDownError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamml.errors import RedisUnreachable

log = logging.getLogger(__name__)

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, ClusterDownError, TryAgainError)
"""Errors that pass once Redis is back (on a cluster: once a failover is over): back off, retry."""
RECONNECT_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
"""Pauses between attempts while Redis is unreachable; the last one repeats."""


class Reconnect:
    """The one policy for a Redis outage: back off, log every attempt with how long it has lasted,
    and give up with :class:`RedisUnreachable` after ``give_up_s`` (0: never)."""

    def __init__(
        self,
        give_up_s: float,
        sleep: Callable[[float], Awaitable[None]],
        on_attempt: Callable[[], None] = lambda: None,
    ) -> None:
        self.give_up_s = give_up_s
        self._sleep = sleep
        self._on_attempt = on_attempt
        self._since: float | None = None
        self._attempt = 0

    @property
    def down_since(self) -> float | None:
        """When the outage being waited out began (``time.monotonic``); None while Redis answers."""
        return self._since

    def connected(self) -> None:
        if self._since is not None:
            log.info("Redis reachable again after %.1fs", time.monotonic() - self._since)
        self._since, self._attempt = None, 0

    async def wait(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._since = self._since if self._since is not None else now
        down_s = now - self._since
        if self.give_up_s > 0 and down_s >= self.give_up_s:
            log.error("Redis unreachable for %.0fs (%s); giving up", down_s, type(exc).__name__)
            raise RedisUnreachable(f"Redis unreachable for {down_s:.0f}s: {exc}") from exc
        pause = RECONNECT_BACKOFF_S[min(self._attempt, len(RECONNECT_BACKOFF_S) - 1)]
        self._attempt += 1
        self._on_attempt()
        log.warning(
            "Redis unreachable for %.1fs (%s, attempt %d); retrying in %.1fs",
            down_s,
            type(exc).__name__,
            self._attempt,
            pause,
        )
        await self._sleep(pause)
