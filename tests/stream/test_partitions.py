"""Partitioned request streams on one real Redis (the cluster tests run the same code on a cluster):
keys under each partition's hash tag, requests spread over the partitions, a worker that drains them
all, summed status, the recorded partition count, idempotency and dead letters per partition."""

from __future__ import annotations

from collections import Counter

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from streamml import keys
from streamml.errors import FailureReason, PartitionCountMismatch
from streamml.models.registry import ModelRegistry
from streamml.settings import Settings
from streamml.stream.broker import Broker
from streamml.stream.deadletters import DeadLetters
from tests.helpers import SEED_EXAMPLE, drain, gateway_client

PARTITIONS = 4


@pytest.fixture
def partitioned(settings: Settings) -> Settings:
    settings.streams.stream_partitions = PARTITIONS
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
    broker = Broker(Redis(), settings.streams)
    assert [p.stream for p in broker.partitions] == [settings.streams.stream]
    assert broker.partitions[0].results_stream == settings.streams.results_stream
    assert "-" not in broker.new_request_id(broker.partition_for(None))


async def test_requests_spread_over_every_partition_and_one_worker_drains_them_all(
    redis: Redis, partitioned: Settings, shared_registry: ModelRegistry
) -> None:
    async with gateway_client(partitioned, redis, shared_registry) as client:
        accepted = [
            (await client.post("/predict_stream?model=svm", json=SEED_EXAMPLE)).json() for _ in range(20)
        ]
        broker = Broker(redis, partitioned.streams)
        lengths = [await redis.xlen(part.stream) for part in broker.partitions]
        assert lengths == [5, 5, 5, 5]  # round robin
        stats = await drain(partitioned, redis, shared_registry)
        assert stats.entries == 20
        for body in accepted:
            result = (await client.get(f"/predictions/{body['request_id']}")).json()
            assert result["status"] == "done"
            assert result["model"]["name"] == "SVC"
        status = await broker.status()
        assert [group["pending"] for group in status["groups"]] == [0]
        assert len(status["partitions"]) == PARTITIONS
        results = sum([await redis.xlen(part.results_stream) for part in broker.partitions])
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
    broker = Broker(redis, partitioned.streams)
    partition = broker.partition_of(first.json()["request_id"])
    assert partition == broker.partition_for("order-77")
    assert await redis.exists(keys.idempotency_key(broker.partitions[partition].stream, "order-77")) == 1


async def test_a_process_with_another_partition_count_is_refused_with_the_recorded_one(
    redis: Redis, partitioned: Settings
) -> None:
    await Broker(redis, partitioned.streams).ensure_group()
    other = partitioned.streams.model_copy(update={"stream_partitions": 8})
    with pytest.raises(
        PartitionCountMismatch, match=r"created with 4 partition.*STREAMML_STREAM_PARTITIONS=8"
    ):
        await Broker(redis, other).ensure_group()


async def test_dead_letters_of_every_partition_are_listed_and_replayed_to_their_own_partition(
    redis: Redis, partitioned: Settings, shared_registry: ModelRegistry
) -> None:
    broker = Broker(redis, partitioned.streams)
    ids = [broker.new_request_id(p) for p in range(PARTITIONS)]
    await broker.publish_many([(request_id, "no-such-route", [{"x": 1}]) for request_id in ids])
    stats = await drain(partitioned, redis, shared_registry)
    assert stats.dead_lettered == PARTITIONS
    letters = await DeadLetters.of(redis, partitioned.streams).entries()
    assert sorted(letter.letter_id.rpartition("@")[2] for letter in letters) == ["0", "1", "2", "3"]
    assert {letter.reason for letter in letters} == {FailureReason.UNKNOWN_MODEL.value}
    replayed = await DeadLetters.of(redis, partitioned.streams).replay([letters[0].letter_id])
    assert replayed == 1
    home = broker.partitions[int(letters[0].letter_id.rpartition("@")[2])]
    assert await redis.xlen(home.dead_letters) == 0
    assert await broker.dead_letter_count() == PARTITIONS - 1
