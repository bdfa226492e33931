"""Fault tests with real processes and signals: kill -9 of workers, a Redis restart, SIGTERM during
load. Each ends with a reconciliation of what was sent against what came out, printed at the end of
the run. Bounded: a few tens of seconds each."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from streamml.local.services import EmbeddedRedis
from streamml.settings import Settings
from streamml.synthetic.producer import Producer, ProducerConfig, parse_routes, record_stream
from streamml.synthetic.profile import Profile
from streamml.worker.sinks import dedup_csv
from tests.helpers import publisher_for
from tests.stream.faults import RECONCILIATIONS, WorkerPool, reconcile, wait_until_settled, worker_env

pytestmark = pytest.mark.integration

StartGateway = Callable[..., tuple[str, Settings]]
BATCH_ENTRIES = 64


async def _produce(url: str, config: ProducerConfig) -> Any:
    return await Producer(config, record_stream(Profile.load(), seed=config.seed), url=url).run()


async def test_kill_9_workers_repeatedly_loses_nothing(
    start_gateway: StartGateway, redis_url: str, tracking_uri: str, tmp_path: Path
) -> None:
    url, settings = start_gateway()
    env = worker_env(settings, redis_url, tracking_uri, STREAMML_WORKER_BATCH_ENTRIES=str(BATCH_ENTRIES))
    pool = WorkerPool(env, tmp_path)
    names = ["w0", "w1", "w2"]
    for name in names:
        pool.start(name)
    config = ProducerConfig(
        rate=2000,
        records_per_request=100,
        count=20_000,
        concurrency=32,
        seed=5,
        routes=parse_routes("lightgbm=2,knn=1,svm=1"),
    )
    await asyncio.to_thread(_wait_for_workers, redis_url, settings, names)
    producing = asyncio.create_task(_produce(url, config))
    victim = 0
    try:
        while not producing.done() or pool.kills < 4:
            await asyncio.sleep(1.5)
            name = names[victim % len(names)]
            pool.kill9(name)  # mid-batch: read, maybe written to the CSV, never acked
            pool.start(name)  # same consumer name: it resumes its own pending entries first
            victim += 1
        stats = await producing
        client = redis.Redis.from_url(redis_url)
        wait_until_settled(client, settings, stats.records_accepted // 100, timeout_s=180)
    finally:
        pool.stop_all()
    figures = reconcile(client, settings, sent=stats.records_sent, accepted=stats.records_accepted)
    kept, dropped = dedup_csv(settings.predictions_csv(), tmp_path / "dedup.csv")
    RECONCILIATIONS.append(("kill -9 of workers", figures.as_dict() | {"kills": pool.kills}))

    assert stats.records_accepted == 20_000
    assert figures.lost == 0
    assert figures.pending == 0
    # Duplicates come only from batches in flight at a kill: at most one batch per kill.
    assert figures.duplicated <= pool.kills * BATCH_ENTRIES * 100
    assert (kept, dropped) == (figures.predicted, figures.duplicated)


async def test_redis_restart_mid_run_loses_no_accepted_record(
    start_gateway: StartGateway, tracking_uri: str, tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()  # AOF on, appendfsync everysec
    try:
        url, settings = start_gateway(redis_override=server.url)
        pool = WorkerPool(worker_env(settings, server.url, tracking_uri), tmp_path)
        for name in ("w0", "w1"):
            pool.start(name)
        config = ProducerConfig(
            rate=400,
            records_per_request=10,
            duration_s=12,
            concurrency=16,
            seed=8,
            routes=parse_routes("lightgbm=1,knn=1"),
            track_ids=True,
        )
        producing = asyncio.create_task(_produce(url, config))
        await asyncio.sleep(4)
        await asyncio.to_thread(server.stop)  # SIGTERM: Redis flushes its AOF and exits
        await asyncio.sleep(3)
        await asyncio.to_thread(server.start)  # same port, password and data: AOF replayed
        restarted = time.monotonic()
        stats = await producing
        client = redis.Redis.from_url(server.url)
        wait_until_settled(client, settings, stats.records_accepted // 10, timeout_s=120)
        figures = reconcile(
            client,
            settings,
            sent=stats.records_sent,
            accepted=stats.records_accepted,
            request_ids=set(stats.accepted_ids),
        )
        pool.stop_all()
    finally:
        server.stop()
    unavailable = sum(n for reason, n in stats.rejections.items() if reason.startswith(("503", "0 ")))
    RECONCILIATIONS.append(
        ("Redis restart", figures.as_dict() | {"refused_while_down": unavailable, "backoffs": stats.backoffs})
    )
    assert unavailable > 0  # the gateway said 503 (or refused connections) while Redis was down
    assert stats.records_accepted > 0
    assert figures.lost == 0
    assert figures.pending == 0
    assert time.monotonic() - restarted < 150


async def test_sigterm_during_load_leaves_nothing_pending(
    settings: Settings, redis_url: str, tracking_uri: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    from redis.asyncio import Redis as AsyncRedis

    async_client = AsyncRedis.from_url(redis_url)
    publisher = publisher_for(settings, async_client)
    records = list(_take(record_stream(Profile.load(), seed=9), 25 * 400))
    for index in range(400):
        await publisher.publish(f"r{index}", "svm", records[index * 25 : (index + 1) * 25])
    await async_client.aclose()

    env = worker_env(
        settings,
        redis_url,
        tracking_uri,
        STREAMML_WORKER_SHUTDOWN_GRACE_S="15",
        STREAMML_WORKER_BATCH_ENTRIES="16",
    )
    pool = WorkerPool(env, tmp_path)
    stopping, other = pool.start("stopping"), pool.start("other")
    try:
        deadline = time.monotonic() + 60
        while client.xlen(settings.stream.results) < 20:  # both are busy predicting
            assert time.monotonic() < deadline, "workers never started"
            await asyncio.sleep(0.1)
        started = time.monotonic()
        stopping.signal(signal.SIGTERM)
        assert stopping.process is not None
        code = await asyncio.to_thread(stopping.process.wait, 30)
        took = time.monotonic() - started
        consumers: Any = client.xinfo_consumers(settings.stream.name, settings.stream.group)
        wait_until_settled(client, settings, 400, timeout_s=120)
    finally:
        other.stop()
    figures = reconcile(client, settings, sent=10_000, accepted=10_000)
    RECONCILIATIONS.append(("SIGTERM during load", figures.as_dict() | {"exit_s": round(took, 2)}))
    assert code == 0
    assert took < 15
    assert "stopping" not in {c["name"].decode() for c in consumers}  # deregistered: it held nothing
    assert figures.lost == 0
    assert figures.duplicated == 0  # a graceful stop acks what it wrote


def _wait_for_workers(redis_url: str, settings: Settings, names: list[str], timeout_s: float = 90) -> None:
    """Until every worker has loaded its models and sent a heartbeat (start-up is CPU-heavy)."""
    from streamml import keys

    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        members: Any = client.zrange(keys.workers_heartbeat_key(settings.stream.name), 0, -1)
        alive = {m.decode() for m in members}
        if set(names) <= alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"workers {names} not up within {timeout_s}s")


def _take(iterator: Any, n: int) -> Any:
    for _ in range(n):
        yield next(iterator)
