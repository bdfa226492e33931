"""Worker drain benchmark: how fast one worker process empties a pre-filled stream, next to the
naive worker of the original design and to the model's own batch predict speed on the same rows.

Run it with ``streamml bench`` (``--quick`` for the CI smoke run). It starts a private redis-server
and a sqlite MLflow registry with freshly trained demo models, unless REDIS_URL / MLFLOW_TRACKING_URI
point at running ones. Results: a table on the terminal, JSON and Markdown under benchmarks/results/.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from streamml.broker import Broker
from streamml.producer import record_stream
from streamml.profile import Profile
from streamml.registry import ModelRegistry
from streamml.settings import DEFAULT_ROUTES, DEFAULT_TRUSTED_TYPES, Settings
from streamml.worker import Worker

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class DrainResult:
    route: str
    model: str
    records: int
    records_per_entry: int
    seconds: float
    records_per_s: float
    model_batch_records_per_s: float
    share_of_model_speed: float
    naive_records_per_s: float
    speedup_vs_naive: float
    cpu_s: float
    peak_rss_mb: float


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gb, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


async def _fill(broker: Broker, route: str, records: list[dict[str, Any]], per_entry: int) -> None:
    async with broker.redis.pipeline(transaction=False) as pipe:
        pending = 0
        for start in range(0, len(records), per_entry):
            chunk = records[start : start + per_entry]
            pipe.xadd(
                broker.stream,
                {
                    "v": "1",
                    "request_id": uuid.uuid4().hex,
                    "route": route,
                    "records": json.dumps(chunk),
                    "accepted_ms": f"{time.time() * 1000:.3f}",
                },
            )
            pending += 1
            if pending == 1000:
                await pipe.execute()
                pending = 0
        await pipe.execute()


async def drain_once(
    redis_url: str,
    registry: ModelRegistry,
    route: str,
    records: list[dict[str, Any]],
    per_entry: int,
    state_dir: Path,
) -> tuple[float, float]:
    """Seconds and CPU seconds for one worker (this process) to drain the pre-filled stream."""
    settings = Settings.load(state_dir)
    settings.streams.stream = f"bench-{uuid.uuid4().hex[:8]}"
    settings.streams.results_stream = f"{settings.streams.stream}:predictions"
    settings.worker.batch_entries = max(1, 4096 // per_entry)
    redis = Redis.from_url(redis_url)
    try:
        broker = Broker(redis, settings.streams)
        await broker.ensure_group()
        await _fill(broker, route, records, per_entry)
        worker = Worker(redis, registry, settings, consumer="bench")
        cpu_before = time.process_time()
        started = time.perf_counter()
        stats = await worker.run(burst=True)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        assert stats.records == len(records), (stats.records, len(records))
        await redis.delete(settings.streams.stream, settings.streams.results_stream)
        return seconds, cpu
    finally:
        await redis.aclose()


async def naive_rate(
    redis_url: str, registry: ModelRegistry, route: str, records: list[dict[str, Any]]
) -> float:
    """The original design: one entry at a time, the model loaded from the registry per entry."""
    stream = f"bench-naive-{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(redis_url)
    try:
        for record in records:
            await redis.xadd(stream, {"route": route, "records": json.dumps([record])})
        await redis.xgroup_create(stream, "naive", id="0")
        ref = registry.resolve(route)
        started = time.perf_counter()
        done = 0
        while True:
            reply: Any = await redis.xreadgroup("naive", "c", {stream: ">"}, count=1)
            if not reply:
                break
            entry_id, fields = reply[0][1][0]
            model = await asyncio.to_thread(registry._load_uncached, ref)  # per entry, as it was
            model.predict(json.loads(fields[b"records"]))
            await redis.xack(stream, "naive", entry_id)
            done += 1
        rate = done / (time.perf_counter() - started)
        await redis.delete(stream)
        return rate
    finally:
        await redis.aclose()


def model_speed(registry: ModelRegistry, route: str, records: list[dict[str, Any]]) -> float:
    """The model's own predict on the same rows, in batches of 4,096: the ceiling for a worker."""
    model = registry.load(registry.resolve(route))
    started = time.perf_counter()
    for start in range(0, len(records), 4096):
        model.predict(records[start : start + 4096])
    return len(records) / (time.perf_counter() - started)


def run(*, redis_url: str, tracking_uri: str, quick: bool, routes: list[str]) -> dict[str, Any]:
    total = 10_000 if quick else 100_000
    naive_n = 20 if quick else 100
    records = [r for r, _ in zip(record_stream(Profile.load(), seed=42), range(total), strict=False)]
    registry = ModelRegistry(tracking_uri, DEFAULT_ROUTES, trusted_types=DEFAULT_TRUSTED_TYPES)
    results = []
    with tempfile.TemporaryDirectory() as state:
        for route in routes:
            ref = registry.resolve(route)
            registry.load(ref)  # loading is start-up cost, not drain time
            ceiling = model_speed(registry, route, records)
            naive = asyncio.run(naive_rate(redis_url, registry, route, records[:naive_n]))
            for per_entry in (1, 100):
                seconds, cpu = asyncio.run(
                    drain_once(redis_url, registry, route, records, per_entry, Path(state))
                )
                rate = total / seconds
                results.append(
                    DrainResult(
                        route=route,
                        model=f"{ref.name} v{ref.version}",
                        records=total,
                        records_per_entry=per_entry,
                        seconds=round(seconds, 3),
                        records_per_s=round(rate),
                        model_batch_records_per_s=round(ceiling),
                        share_of_model_speed=round(rate / ceiling, 3),
                        naive_records_per_s=round(naive, 1),
                        speedup_vs_naive=round(rate / naive, 1),
                        cpu_s=round(cpu, 2),
                        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                    )
                )
    return {
        "scenario": "worker drain",
        "quick": quick,
        "machine": machine(),
        "results": [asdict(r) for r in results],
    }


def to_markdown(report: dict[str, Any], command: str) -> str:
    m = report["machine"]
    lines = [
        "# Benchmark: worker drain",
        "",
        f"Command: `{command}`. Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Python {m['python']}.",
        "",
        "One worker process drains a pre-filled stream (one record per entry, then 100 per entry).",
        "The model's own batch predict on the same rows is the ceiling; the naive worker is the original",
        "design (one entry at a time, the model loaded from the registry for each).",
        "",
        "| route | model | records/entry | records/s | model batch records/s | share of model speed | "
        "naive records/s | × naive | CPU s | peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['route']} | {r['model']} | {r['records_per_entry']} | {r['records_per_s']:,} | "
            f"{r['model_batch_records_per_s']:,} | {r['share_of_model_speed']:.0%} | "
            f"{r['naive_records_per_s']} | {r['speedup_vs_naive']:,} | {r['cpu_s']} | {r['peak_rss_mb']} |"
        )
    return "\n".join(lines) + "\n"
