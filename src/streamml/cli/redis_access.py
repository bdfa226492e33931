"""One short-lived Redis client for a command: open it, run the command's coroutine, close it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from streamml.cli.options import load_settings
from streamml.settings import Settings
from streamml.stream.topology import StreamTopology


def on_redis(
    state_dir: Path | None, action: Callable[[Any, StreamTopology, Settings], Awaitable[Any]]
) -> Any:
    """Run ``action(redis, topology, settings)`` on a client of the configured Redis, then close it."""
    from streamml.local.processes import make_redis

    settings = load_settings(state_dir)
    topology = StreamTopology.of(settings.stream, cluster=settings.redis.cluster)

    async def run() -> Any:
        redis = make_redis(settings)
        try:
            return await action(redis, topology, settings)
        finally:
            await redis.aclose()

    return asyncio.run(run())
