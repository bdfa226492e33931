"""The load generator of the end-to-end benchmarks: asyncio + aiohttp over keep-alive connections,
bodies encoded before the clock starts, so the client spends its CPU on sending and little else.

The same generator drives the streamml gateway and `mlflow models serve`; only the URL, the bodies
and the status that counts as success differ.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from streamml.pacing import paced

HEADERS = {"Content-Type": "application/json"}


@dataclass
class LoadResult:
    """What one load run sent and got back. ``cpu_s`` is this process's CPU time during the run."""

    sent: int = 0
    ok: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    response_ms: list[float] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)
    first_sent_ms: float = 0.0
    seconds: float = 0.0
    cpu_s: float = 0.0

    @property
    def failed(self) -> int:
        return self.sent - self.ok


class _Client:
    def __init__(self, url: str, expect: int, collect_ids: bool, connections: int) -> None:
        self.url = url
        self.expect = expect
        self.collect_ids = collect_ids
        self.connections = connections
        self.result = LoadResult()
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> _Client:
        connector = aiohttp.TCPConnector(limit=self.connections, force_close=False)
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=60), headers=HEADERS
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def send(self, body: bytes) -> None:
        assert self.session is not None
        result = self.result
        result.sent += 1
        started = time.perf_counter()
        try:
            async with self.session.post(self.url, data=body) as response:
                payload = await response.read()
                result.statuses[response.status] += 1
                if response.status != self.expect:
                    return
                result.ok += 1
                result.response_ms.append((time.perf_counter() - started) * 1000.0)
                if self.collect_ids:
                    result.request_ids.append(orjson.loads(payload)["request_id"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.errors[type(exc).__name__] += 1


async def closed_loop(
    url: str,
    bodies: list[bytes],
    *,
    concurrency: int,
    duration_s: float,
    expect: int,
    collect_ids: bool = False,
) -> LoadResult:
    """``concurrency`` clients, each sending its next request as soon as the last one is answered."""
    async with _Client(url, expect, collect_ids, concurrency) as client:
        deadline = time.perf_counter() + duration_s
        counter = iter(range(1 << 62))

        async def one_client() -> None:
            while time.perf_counter() < deadline:
                await client.send(bodies[next(counter) % len(bodies)])

        return await _timed(client, [one_client() for _ in range(concurrency)])


async def open_loop(
    url: str,
    bodies: list[bytes],
    *,
    rate: float,
    duration_s: float,
    expect: int,
    collect_ids: bool = False,
    connections: int = 64,
) -> LoadResult:
    """Requests started on a fixed schedule (``rate`` per second), whether or not earlier ones have
    been answered, so a slow server shows as latency instead of lowering the offered load."""
    async with _Client(url, expect, collect_ids, connections) as client:

        async def schedule() -> None:
            tasks: set[asyncio.Task[None]] = set()
            async for i in paced(1.0 / rate, count=int(rate * duration_s)):
                task = asyncio.create_task(client.send(bodies[i % len(bodies)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)

        return await _timed(client, [schedule()])


async def _timed(client: _Client, coroutines: list[Coroutine[Any, Any, None]]) -> LoadResult:
    result = client.result
    cpu_before = time.process_time()
    result.first_sent_ms = time.time() * 1000.0
    started = time.perf_counter()
    await asyncio.gather(*coroutines)
    result.seconds = time.perf_counter() - started
    result.cpu_s = time.process_time() - cpu_before
    return result
