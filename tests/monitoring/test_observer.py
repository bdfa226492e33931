"""Snapshots of the pipeline read from a real Redis: totals summed over every partition, rates between two
snapshots, and the last known figures kept (marked stale) while Redis cannot be read."""

from __future__ import annotations

from redis.asyncio import Redis

from streamml.local.services import free_port
from streamml.models.registry import ModelRegistry
from streamml.monitoring.observer import ModelInUse, StreamObserver
from streamml.settings import Settings
from streamml.stream.nodes import SlotClients
from streamml.stream.status import StreamStatus
from streamml.stream.topology import StreamTopology
from tests.helpers import drain, publisher_for

RECORDS = [{"Designation": 2.0}, {"Sleep Hours": 6.0}, {}]


def observer(settings: Settings, redis: Redis) -> StreamObserver:
    return StreamObserver(redis, StreamStatus(SlotClients(redis), StreamTopology.of(settings.stream)))


async def test_a_snapshot_sums_every_partitions_counters_and_classes(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    settings.stream.partitions = 3
    publisher = publisher_for(settings, redis)
    topology = publisher.topology
    requests = [(topology.new_request_id(topology.partition_for(None)), "svm", RECORDS) for _ in range(6)]
    await publisher.publish_many(requests)
    await drain(settings, redis, shared_registry)
    snap = await observer(settings, redis).snapshot([ModelInUse("svm", "SVC", "1", "champion")])
    assert {await redis.hget(part.counters.accepted, "svm") for part in topology.partitions} == {b"6"}
    state = snap.routes["svm"]
    assert (state.accepted, state.predicted) == (18, 18)
    assert sum(state.classes.values()) == 18
    assert snap.length == 6  # acknowledged, not yet trimmed
    assert (snap.pending, snap.lag, snap.redis) == (0, 0, "ok")
    assert snap.latency_requests == 6


async def test_rates_come_from_the_difference_between_two_snapshots(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    watcher = observer(settings, redis)
    first = await watcher.snapshot()
    await publisher_for(settings, redis).publish("r1", "knn", RECORDS)
    second = await watcher.snapshot()
    seconds = second.at - first.at
    assert second.routes["knn"].accepted == 3
    assert second.routes["knn"].accepted_per_s == round(3 / seconds, 1)


async def test_redis_down_keeps_the_last_known_figures_and_says_so(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    await publisher_for(settings, redis).publish("r1", "knn", RECORDS)
    await drain(settings, redis, shared_registry)
    watcher = observer(settings, redis)
    known = await watcher.snapshot()
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    watcher.redis = dead
    watcher.status = StreamStatus(SlotClients(dead), watcher.topology)
    stale = await watcher.snapshot()
    await dead.aclose()
    assert stale.redis.startswith("unreachable")
    assert stale.routes["knn"].predicted == known.routes["knn"].predicted == 3
    assert stale.length == known.length
