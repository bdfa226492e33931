"""Concurrent callers asking for the same thing share one call: the first starts it, the others await
its answer (or its exception). A gateway's first burst of requests for a route would otherwise start one
registry call per request, each in a thread of the same small pool, and wait behind one another."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._calls: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        """``call()``'s answer, shared with every caller that asks for ``key`` while it runs. A caller
        that is cancelled does not cancel the call the others wait on."""
        future = self._calls.get(key)
        if future is None:
            future = self._calls[key] = asyncio.ensure_future(call())
            future.add_done_callback(partial(self._done, key))
        return await asyncio.shield(future)

    def _done(self, key: K, future: asyncio.Future[V]) -> None:
        self._calls.pop(key, None)
        if not future.cancelled():
            future.exception()  # seen here, so an answer nobody awaits any more is not reported as lost
