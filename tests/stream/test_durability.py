"""Acknowledged means durable: what a 202 promises under each ``STREAMML_STREAM_DURABILITY``, on real servers
(a Valkey master with and without a replica)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from streamml.errors import DurabilityUnsupported
from streamml.local.services import EmbeddedRedis
from streamml.models.registry import ModelRegistry
from streamml.settings import Settings
from streamml.stream.durable import Durability
from tests.helpers import SEED_EXAMPLE, gateway_client, publisher_for

pytestmark = pytest.mark.integration


@pytest.fixture
def master_and_replica(tmp_path: Path) -> Iterator[tuple[EmbeddedRedis, EmbeddedRedis]]:
    master = EmbeddedRedis(tmp_path / "master").start()
    replica = EmbeddedRedis(
        tmp_path / "replica",
        password=master.password,
        extra_config=[
            f"replicaof 127.0.0.1 {master.port}",
            f"masterauth {master.password}",
            "enable-debug-command local",  # DEBUG SLEEP: a replica that cannot acknowledge for a while
        ],
    ).start()
    client = sync_redis.Redis.from_url(replica.url)
    try:
        for _ in range(600):
            if client.info("replication").get("master_link_status") == "up":
                break
            time.sleep(0.05)
        yield master, replica
    finally:
        client.close()
        replica.stop()
        master.stop()


@pytest.mark.parametrize("durability", ["replica", "memory"])
async def test_a_202_waits_for_the_replica_only_under_replica_durability(
    durability: Durability,
    settings: Settings,
    shared_registry: ModelRegistry,
    master_and_replica: tuple[EmbeddedRedis, EmbeddedRedis],
) -> None:
    """While the replica is asleep (DEBUG SLEEP 1) a ``replica`` 202 cannot come; a ``memory`` one does."""
    master, replica = master_and_replica
    settings.stream.durability = durability
    redis, on_replica = Redis.from_url(master.url), Redis.from_url(replica.url)
    async with redis, on_replica, gateway_client(settings, redis, shared_registry) as client:
        await client.post("/predict_stream?model=svm", json=SEED_EXAMPLE)  # warm: first publish checks
        sleep = on_replica.execute_command("DEBUG", "SLEEP", "1")  # type: ignore[no-untyped-call]
        sleeping = asyncio.create_task(sleep)
        await asyncio.sleep(0.1)
        answer = asyncio.create_task(client.post("/predict_stream?model=svm", json=SEED_EXAMPLE))
        await asyncio.sleep(0.4)
        answered_while_replica_slept = answer.done()
        await sleeping
        assert (await answer).status_code == 202
        assert await on_replica.xlen(settings.stream.name) == 2
    assert answered_while_replica_slept is (durability == "memory")


async def test_under_replica_durability_without_a_replica_the_answer_is_503_and_the_request_is_kept(
    redis: Redis, settings: Settings, shared_registry: ModelRegistry
) -> None:
    settings.stream.durability = "replica"
    settings.stream.durability_timeout_ms = 50
    headers = {"Idempotency-Key": "no-replica-1"}
    async with gateway_client(settings, redis, shared_registry) as client:
        refused = await client.post("/predict_stream?model=svm", json=SEED_EXAMPLE, headers=headers)
        again = await client.post("/predict_stream?model=svm", json=SEED_EXAMPLE, headers=headers)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "not_durable"
    assert "Idempotency-Key" in refused.json()["error"]["message"]
    assert await redis.xlen(settings.stream.name) == 1  # published, only not confirmed
    # The retry is the first request's answer, not a second entry.
    assert again.status_code == 202
    assert await redis.xlen(settings.stream.name) == 1
    entries: Any = await redis.xrange(settings.stream.name)
    [(_, fields)] = entries
    assert fields[b"request_id"].decode() == again.json()["request_id"]


async def test_fsync_durability_waits_for_the_append_only_file(
    redis: Redis, settings: Settings, shared_registry: ModelRegistry
) -> None:
    settings.stream.durability = "fsync"
    async with gateway_client(settings, redis, shared_registry) as client:
        answer = await client.post("/predict_stream?model=svm", json=SEED_EXAMPLE)
    assert answer.status_code == 202
    assert await redis.xlen(settings.stream.name) == 1


async def test_fsync_durability_on_a_server_without_an_append_only_file_is_refused_with_the_reason(
    settings: Settings, tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "no-aof").start()
    try:
        async with Redis.from_url(server.url) as redis:
            await redis.config_set("appendonly", "no")
            settings.stream.durability = "fsync"
            with pytest.raises(DurabilityUnsupported, match="appendonly yes"):
                await publisher_for(settings, redis).check()
    finally:
        server.stop()
