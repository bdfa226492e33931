"""Waking the requests that wait on ``POST /predict``: one pub/sub subscription per gateway process.

Workers publish a finished request's id on the replies channel; the hub resolves that request's
waiter. A notice can be missed (the subscription was re-established, or another gateway process's
request), so a waiter also re-reads the result now and then: the result key, not the notice, is the
truth. Every gateway process has its own hub; nothing is shared between processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.exceptions import RedisError

from streamml.errors import PredictionTimeout
from streamml.stream.publisher import Publisher

log = logging.getLogger(__name__)

FINISHED = frozenset({"done", "failed"})
"""Result states a waiter stops at: written, or given up on (dead-lettered)."""
REPLY_POLL_S = 0.5
"""While waiting, re-check the result this often in case a notice was missed."""
LISTEN_POLL_S = 0.5
"""The listener checks for a stop request this often."""


class ReplyHub:
    """One pub/sub subscription per gateway process, waking the requests waiting on ``/predict``."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.channel = publisher.topology.replies
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        # Cancelled, so a shutdown does not wait out the listener's poll; and a flag as well, because
        # redis-py's pubsub read can swallow a cancellation (the flag then ends it at the next poll).
        self._stopping.set()
        if self._task:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=2 * LISTEN_POLL_S)
            if not done:
                log.warning("reply listener did not stop in time")

    async def _listen(self) -> None:
        while not self._stopping.is_set():
            try:
                async with self.publisher.slots.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    while not self._stopping.is_set():
                        message = await pubsub.get_message(timeout=LISTEN_POLL_S)
                        if message is None:
                            continue
                        waiter = self._waiters.get(message["data"].decode())
                        if waiter and not waiter.done():
                            waiter.set_result(None)
            except (RedisError, OSError) as exc:
                log.warning("reply channel lost (%s); resubscribing", type(exc).__name__)
                await asyncio.sleep(1.0)  # waiters fall back to polling meanwhile

    async def wait(self, request_id: str, timeout_s: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        waiter = self._waiters[request_id] = loop.create_future()
        deadline = loop.time() + timeout_s
        try:
            while True:
                document = await self.publisher.result(request_id)
                if document and document.get("status") in FINISHED:
                    return document
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise PredictionTimeout(
                        f"no prediction within {timeout_s:g}s; it is still queued: "
                        f"GET /predictions/{request_id}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), min(remaining, REPLY_POLL_S))
        finally:
            self._waiters.pop(request_id, None)
