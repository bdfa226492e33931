"""Partitioned request streams on one real Redis (the cluster tests run the same code on a cluster):
keys under each partition's hash tag, requests spread over the partitions, a worker that drains them
all, summed status, the recorded partition count, idempotency and dead letters per partition."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from streamml import keys
from streamml.errors import FailureReason, PartitionCountMismatch
from streamml.models.registry import ModelRegistry
from streamml.settings import Settings
from streamml.stream.consumer import Consumer
from streamml.stream.deadletters import DeadLetters
from streamml.stream.nodes import SlotClients
from streamml.stream.status import StreamStatus
from streamml.stream.topology import StreamTopology
from tests.helpers import SEED_EXAMPLE, drain, gateway_client, publisher_for

PARTITIONS = 4


@pytest.fixture
def partitioned(settings: Settings) -> Settings:
    settings.stream.partitions = PARTITIONS
    return settings


def test_every_key_of_a_partition_shares_its_slot_and_partitions_spread_over_the_slot_space() -> None:
    count = 12
    streams = [keys.partition_name("mlops_stream", p, count) for p in range(count)]
    for stream in streams:
        slot = key_slot(stream.encode())
        derived = [
            keys.dead_letter_stream(stream),
            keys.result_key(stream, "abc"),
            keys.idempotency_key(stream, "k"),
            *keys.counter_keys(stream),
            keys.shadow_pair_key(stream, "svm", "SVC", "1"),
        ]
        assert {key_slot(k.encode()) for k in derived} == {slot}
    # Three masters with equal contiguous ranges each get four partitions (plain {0}..{11}: 4, 5 and 3).
    masters = Counter(key_slot(s.encode()) * 3 // keys.HASH_SLOTS for s in streams)
    assert sorted(masters.values()) == [4, 4, 4]


def test_one_partition_keeps_the_single_stream_layout(settings: Settings) -> None:
    topology = StreamTopology.of(settings.stream)
    assert [p.stream for p in topology.partitions] == [settings.stream.name]
    assert topology.partitions[0].results == settings.stream.results
    assert "-" not in topology.new_request_id(topology.partition_for(None))


async def test_requests_spread_over_every_partition_and_one_worker_drains_them_all(
    redis: Redis, partitioned: Settings, shared_registry: ModelRegistry
) -> None:
    async with gateway_client(partitioned, redis, shared_registry) as client:
        accepted = [
            (await client.post("/predict_stream?model=svm", json=SEED_EXAMPLE)).json() for _ in range(20)
        ]
        topology = StreamTopology.of(partitioned.stream)
        lengths = [await redis.xlen(part.stream) for part in topology.partitions]
        assert lengths == [5, 5, 5, 5]  # round robin
        stats = await drain(partitioned, redis, shared_registry)
        assert stats.entries == 20
        for body in accepted:
            result = (await client.get(f"/predictions/{body['request_id']}")).json()
            assert result["status"] == "done"
            assert result["model"]["name"] == "SVC"
        status = await StreamStatus(SlotClients(redis), topology).status()
        assert [group["pending"] for group in status["groups"]] == [0]
        assert len(status["partitions"]) == PARTITIONS
        results = sum([await redis.xlen(part.results) for part in topology.partitions])
        assert results == 20


async def test_a_request_id_names_its_partition_and_a_foreign_id_is_unknown(
    redis: Redis, partitioned: Settings, shared_registry: ModelRegistry
) -> None:
    async with gateway_client(partitioned, redis, shared_registry) as client:
        assert (await client.get("/predictions/0123456789abcdef")).status_code == 404
        assert (await client.get("/predictions/0123456789abcdef-9")).status_code == 404


async def test_a_repeated_idempotency_key_lands_in_the_partition_of_the_first(
    redis: Redis, partitioned: Settings, shared_registry: ModelRegistry
) -> None:
    async with gateway_client(partitioned, redis, shared_registry) as client:
        headers = {"Idempotency-Key": "order-77"}
        first = await client.post("/predict_stream?model=svm", json=SEED_EXAMPLE, headers=headers)
        for _ in range(3):  # the round robin moves on between these, the key does not
            await client.post("/predict_stream?model=svm", json=SEED_EXAMPLE)
        again = await client.post("/predict_stream?model=svm", json=SEED_EXAMPLE, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["request_id"] == first.json()["request_id"]
    topology = StreamTopology.of(partitioned.stream)
    partition = topology.partition_of(first.json()["request_id"])
    assert partition == topology.partition_for("order-77")
    assert partition is not None
    assert await redis.exists(partition.idempotency_key("order-77")) == 1


async def test_a_process_with_another_partition_count_is_refused_with_the_recorded_one(
    redis: Redis, partitioned: Settings
) -> None:
    slots = SlotClients(redis)
    await Consumer(slots, StreamTopology.of(partitioned.stream), "w").ensure_groups()
    other = partitioned.stream.model_copy(update={"partitions": 8})
    with pytest.raises(
        PartitionCountMismatch, match=r"created with 4 partition.*STREAMML_STREAM_PARTITIONS=8"
    ):
        await Consumer(slots, StreamTopology.of(other), "w").ensure_groups()
    with pytest.raises(PartitionCountMismatch):  # the gateway's side refuses it the same way
        await publisher_for(partitioned.model_copy(update={"stream": other}), redis).check()


async def test_dead_letters_of_every_partition_are_listed_and_replayed_to_their_own_partition(
    redis: Redis, partitioned: Settings, shared_registry: ModelRegistry
) -> None:
    publisher = publisher_for(partitioned, redis)
    topology = publisher.topology
    ids = [topology.new_request_id(part) for part in topology.partitions]
    await publisher.publish_many([(request_id, "no-such-route", [{"x": 1}]) for request_id in ids])
    stats = await drain(partitioned, redis, shared_registry)
    assert stats.dead_lettered == PARTITIONS
    letters = await DeadLetters(redis, topology, publisher).entries()
    assert sorted(letter.letter_id.rpartition("-")[2] for letter in letters) == ["0", "1", "2", "3"]
    assert {letter.reason for letter in letters} == {FailureReason.UNKNOWN_MODEL.value}
    replayed = await DeadLetters(redis, topology, publisher).replay([letters[0].letter_id])
    assert replayed == 1
    home = topology.partitions[int(letters[0].letter_id.rpartition("-")[2])]
    assert await redis.xlen(home.dead_letters) == 0
    entries: Any = await redis.xrange(home.stream)
    replayed_ids = [fields[b"request_id"].decode() for _, fields in entries]
    assert letters[0].fields["request_id"] in replayed_ids  # back in the partition it came from
    assert await StreamStatus(SlotClients(redis), topology).dead_letter_count() == PARTITIONS - 1
