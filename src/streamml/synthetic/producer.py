"""The producer: realistic synthetic records sent to the gateway (or straight to the stream) at a rate.

Open-loop (:mod:`streamml.pacing`): request k is due at ``start + k * records_per_request / rate``
whatever the responses do, so a slow gateway shows up as latency and as sends that could not go out,
not as a quietly lower rate. At most ``concurrency`` requests are in flight; a send that finds every
slot busy is counted as ``dropped_capacity``. A 429 or 503 makes the producer pause for
``Retry-After`` seconds; the sends due meanwhile are counted as ``dropped_backoff``. Nothing is
dropped without being counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import orjson
from rich.console import Console
from rich.table import Table

from streamml.errors import StreammlError
from streamml.models.training import FEATURES
from streamml.pacing import paced, percentiles
from streamml.settings import Settings
from streamml.synthetic.profile import Profile
from streamml.synthetic.synth import Drift, generate

GENERATE_CHUNK = 2_000
"""Rows generated at a time: small enough that generating never stalls the send schedule."""
DEFAULT_RETRY_AFTER_S = 1.0
Submit = Callable[[str, list[dict[str, Any]]], Awaitable[str]]
"""Submit records to a route without HTTP; returns the request id, raises a StreammlError on refusal."""
LATENCY_SAMPLES = 200_000
"""Response times kept for percentiles (the most recent ones, so memory stays flat)."""


def parse_routes(spec: str) -> dict[str, float]:
    """``"svm"`` or ``"svm=1,knn=1,lightgbm=2"`` -> route weights."""
    weights: dict[str, float] = {}
    for part in spec.split(","):
        name, _, weight = part.strip().partition("=")
        if not name:
            continue
        try:
            weights[name.strip()] = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"route weight in {part!r} is not a number") from None
    if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"cannot read routes {spec!r}; use 'svm' or 'svm=1,knn=2'")
    return weights


def record_stream(profile: Profile, *, seed: int, drift: Sequence[Drift] = ()) -> Iterator[dict[str, Any]]:
    """Endless model-input records (features only; nulls omitted, as a client would send them)."""
    chunk = 0
    while True:
        frame = generate(profile, GENERATE_CHUNK, seed=seed + chunk, drift=drift)[FEATURES]
        columns = [(name, frame[name].tolist()) for name in FEATURES]
        for i in range(len(frame)):
            record = {}
            for name, values in columns:
                value = values[i]
                if value is not None and value == value:  # value != value only for NaN
                    record[name] = value
            yield record
        chunk += 1


@dataclass
class ProducerStats:
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    requests_sent: int = 0
    records_sent: int = 0
    records_accepted: int = 0
    records_rejected: int = 0
    dropped_capacity: int = 0
    dropped_backoff: int = 0
    backoffs: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    by_route: Counter[str] = field(default_factory=Counter)
    accepted_ids: list[str] = field(default_factory=list)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def summary(self, target_rate: float) -> dict[str, Any]:
        elapsed = max(self.elapsed_s, 1e-9)
        latency = percentiles(self.latencies_ms)
        return {
            "target_rate": target_rate,
            "elapsed_s": round(elapsed, 3),
            "requests_sent": self.requests_sent,
            "records_sent": self.records_sent,
            "records_accepted": self.records_accepted,
            "records_rejected": self.records_rejected,
            "dropped_capacity": self.dropped_capacity,
            "dropped_backoff": self.dropped_backoff,
            "backoffs": self.backoffs,
            "achieved_rate": round(self.records_accepted / elapsed, 2),
            "rejections": dict(self.rejections),
            "by_route": dict(self.by_route),
            "latency_ms": {q: latency[q] for q in ("p50", "p95", "p99")},
        }


@dataclass
class ProducerConfig:
    rate: float
    """Target records per second."""
    records_per_request: int = 1
    routes: dict[str, float] = field(default_factory=lambda: {"svm": 1.0})
    duration_s: float | None = 10.0
    count: int | None = None
    """Records to send in all (overrides duration when set)."""
    concurrency: int = 32
    seed: int = 0
    via: Literal["http", "redis"] = "http"
    track_ids: bool = False
    """Keep every accepted request id (for reconciliation in tests; memory grows with the run)."""
    api_key: str | None = None
    """Sent as ``Authorization: Bearer`` to a gateway with API keys."""


class Producer:
    def __init__(
        self,
        config: ProducerConfig,
        records: Iterator[dict[str, Any]],
        *,
        url: str | None = None,
        submit: Submit | None = None,
    ) -> None:
        if config.rate <= 0:
            raise ValueError("rate must be positive")
        if config.via == "http" and not url:
            raise ValueError("an HTTP producer needs the gateway URL")
        if config.via == "redis" and submit is None:
            raise ValueError("a producer that writes to the stream needs a submit function")
        self.config = config
        self.records = records
        self.url = url
        self.submit = submit
        self.stats = ProducerStats()
        self._random = random.Random(config.seed)
        self._backoff_until = 0.0
        self._slots = asyncio.Semaphore(config.concurrency)
        self._headers = {"Content-Type": "application/json"}
        if config.api_key:
            self._headers["Authorization"] = f"Bearer {config.api_key}"

    def _choose_route(self) -> str:
        routes, weights = zip(*self.config.routes.items(), strict=True)
        return str(self._random.choices(routes, weights)[0])

    async def run(self) -> ProducerStats:
        config = self.config
        interval = config.records_per_request / config.rate
        total_requests = None
        if config.count is not None:
            total_requests = -(-config.count // config.records_per_request)
        # aiohttp, not httpx: httpx's connection pool does O(connections) work per request, and at
        # hundreds of requests/s the load generator became the bottleneck (measured with cProfile).
        connector = aiohttp.TCPConnector(limit=config.concurrency)
        timeout = aiohttp.ClientTimeout(total=30.0)
        async with aiohttp.ClientSession(self.url, connector=connector, timeout=timeout) as client:
            tasks: set[asyncio.Task[None]] = set()
            self.stats.started = time.monotonic()
            async for k in paced(interval, count=total_requests, duration_s=config.duration_s):
                size = config.records_per_request
                if total_requests is not None and k == total_requests - 1 and config.count:
                    size = config.count - (total_requests - 1) * config.records_per_request
                if time.monotonic() < self._backoff_until:
                    self.stats.dropped_backoff += size
                    continue
                if self._slots.locked():
                    self.stats.dropped_capacity += size
                    continue
                await self._slots.acquire()
                batch = [next(self.records) for _ in range(size)]
                task = asyncio.create_task(self._send(client, self._choose_route(), batch))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        self.stats.finished = time.monotonic()
        return self.stats

    async def _send(self, client: aiohttp.ClientSession, route: str, batch: list[dict[str, Any]]) -> None:
        stats = self.stats
        stats.requests_sent += 1
        stats.records_sent += len(batch)
        stats.by_route[route] += len(batch)
        started = time.perf_counter()
        body = b""
        try:
            if self.config.via == "redis":
                assert self.submit is not None
                try:
                    request_id = await self.submit(route, batch)
                    status, reason, retry_after = 202, "", None
                    body = orjson.dumps({"request_id": request_id})
                except StreammlError as exc:  # refused: the same reasons the gateway gives over HTTP
                    status, reason, retry_after = (429 if exc.retry_later else 422), exc.code, None
            else:
                async with client.post(
                    "/predict_stream",
                    params={"model": route},
                    data=orjson.dumps({"data": batch}),
                    headers=self._headers,
                ) as response:
                    status, retry_after = response.status, response.headers.get("Retry-After")
                    body = await response.read()
                reason = "" if status == 202 else _reason(body, response.reason)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status, reason, retry_after = 0, f"connection: {type(exc).__name__}", None
        finally:
            self._slots.release()
        stats.latencies_ms.append((time.perf_counter() - started) * 1000.0)
        if status == 202:
            stats.records_accepted += len(batch)
            if self.config.track_ids:
                stats.accepted_ids.append(orjson.loads(body)["request_id"])
            return
        stats.records_rejected += len(batch)
        stats.rejections[f"{status} {reason}".strip()] += len(batch)
        if status in (429, 503) or status == 0:
            stats.backoffs += 1
            pause = _seconds(retry_after)
            self._backoff_until = max(self._backoff_until, time.monotonic() + pause)


def _reason(body: bytes, phrase: str | None) -> str:
    """The error code of a rejection (``overloaded``, ``invalid_request``...), else the HTTP phrase."""
    try:
        return str(orjson.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return phrase or "error"


def _seconds(retry_after: str | None) -> float:
    try:
        return max(float(retry_after), 0.0) if retry_after else DEFAULT_RETRY_AFTER_S
    except ValueError:
        return DEFAULT_RETRY_AFTER_S


def run_producer(
    settings: Settings,
    *,
    rate: float,
    batch: int,
    duration: float | None,
    count: int | None,
    routes: str,
    via: str,
    url: str | None,
    drift: Sequence[str],
    seed: int,
    concurrency: int,
    profile_path: Path | None,
    quiet: bool,
    console: Console,
    open_submit: Callable[[], contextlib.AbstractAsyncContextManager[Submit]] | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """The ``streamml produce`` command: build the producer, show live progress, return the summary.
    ``open_submit`` gives the function that submits straight to the stream (``--via redis``)."""
    from streamml.synthetic.synth import parse_drifts

    if via not in ("http", "redis"):
        raise ValueError("--via must be http or redis")
    config = ProducerConfig(
        rate=rate,
        records_per_request=batch,
        routes=parse_routes(routes),
        duration_s=duration,
        count=count,
        concurrency=concurrency,
        seed=seed,
        via=via,  # type: ignore[arg-type]
        api_key=api_key,
    )
    records = record_stream(Profile.load(profile_path), seed=seed, drift=parse_drifts(drift))
    gateway_url = url or f"http://{settings.gateway.host}:{settings.gateway.port}"

    async def main() -> dict[str, Any]:
        async with contextlib.AsyncExitStack() as stack:
            submit = (
                await stack.enter_async_context(open_submit()) if via == "redis" and open_submit else None
            )
            producer = Producer(config, records, url=gateway_url, submit=submit)
            display = None if quiet else asyncio.create_task(_live(producer, config, console))
            try:
                await producer.run()
            finally:
                if display:
                    display.cancel()
            return producer.stats.summary(rate)

    try:
        summary = asyncio.run(main())
    except KeyboardInterrupt:
        return {}
    if not quiet:
        console.print(_summary_table(summary))
    return summary


async def _live(producer: Producer, config: ProducerConfig, console: Console) -> None:
    from rich.live import Live

    with Live(console=console, refresh_per_second=4, transient=True) as live:
        while True:
            live.update(_summary_table(producer.stats.summary(config.rate)))
            await asyncio.sleep(0.25)


def _summary_table(summary: dict[str, Any]) -> Table:
    table = Table("", "value", title="producer", show_header=False)
    for key in (
        "elapsed_s",
        "target_rate",
        "achieved_rate",
        "records_sent",
        "records_accepted",
        "records_rejected",
        "dropped_capacity",
        "dropped_backoff",
        "backoffs",
    ):
        table.add_row(key.replace("_", " "), str(summary[key]))
    for reason, n in summary["rejections"].items():
        table.add_row(f"rejected: {reason}", str(n))
    table.add_row("by route", ", ".join(f"{k} {v}" for k, v in summary["by_route"].items()))
    latency = summary["latency_ms"]
    table.add_row("response ms p50/p95/p99", f"{latency['p50']} / {latency['p95']} / {latency['p99']}")
    return table
