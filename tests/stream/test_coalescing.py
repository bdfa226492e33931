"""Publishes of concurrent requests coalesced into one transaction per event-loop turn, on a real Redis:
every caller gets its own entry, written together; a lone caller is published alone; a failure reaches
every caller of the turn."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from streamml.errors import BrokerUnavailable
from streamml.local.services import free_port
from streamml.settings import Settings
from streamml.stream.coalescing import CoalescedPublisher
from streamml.stream.entry import decode_entry
from streamml.stream.publisher import Publisher
from tests.helpers import publisher_for

RECORD = {"Designation": 1.5}


async def transactions(redis: Redis) -> int:
    stats: Any = await redis.info("commandstats")
    return int(stats.get("cmdstat_exec", {}).get("calls", 0))


async def test_concurrent_publishes_are_written_in_one_transaction_each_with_its_own_entry(
    settings: Settings, redis: Redis
) -> None:
    publisher = publisher_for(settings, redis)
    await publisher.check()
    coalesced = CoalescedPublisher(publisher)
    ids = [publisher.topology.new_request_id(publisher.topology.partition_for(None)) for _ in range(20)]
    before = await transactions(redis)
    stream_ids = await asyncio.gather(
        *(
            coalesced.publish(request_id, "svm", [RECORD | {"Sleep_Hours": n}], owner=f"key-{n % 2}")
            for n, request_id in enumerate(ids)
        )
    )
    assert await transactions(redis) - before == 1
    written: Any = await redis.xrange(settings.stream.name)
    entries = {stream_id.decode(): decode_entry(stream_id.decode(), fields) for stream_id, fields in written}
    assert sorted(entries) == sorted(stream_ids)
    for n, (request_id, stream_id) in enumerate(zip(ids, stream_ids, strict=True)):
        entry = entries[stream_id]
        assert (entry.request_id, entry.owner, entry.records) == (
            request_id,
            f"key-{n % 2}",
            [RECORD | {"Sleep_Hours": n}],
        )


async def test_a_lone_publish_is_written_at_the_end_of_its_turn(settings: Settings, redis: Redis) -> None:
    publisher = publisher_for(settings, redis)
    coalesced = CoalescedPublisher(publisher)
    first = await coalesced.publish(
        publisher.topology.new_request_id(publisher.topology.partition_for(None)), "svm", [RECORD]
    )
    second = await coalesced.publish(
        publisher.topology.new_request_id(publisher.topology.partition_for(None)), "svm", [RECORD]
    )
    written: Any = await redis.xrange(settings.stream.name)
    assert [stream_id.decode() for stream_id, _ in written] == [first, second]


async def test_every_caller_of_a_turn_gets_the_error_when_redis_is_unreachable(settings: Settings) -> None:
    unreachable = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    publisher = Publisher.of(unreachable, settings.stream)
    coalesced = CoalescedPublisher(publisher)
    ids = [publisher.topology.new_request_id(publisher.topology.partition_for(None)) for _ in range(3)]
    outcomes = await asyncio.gather(
        *(coalesced.publish(request_id, "svm", [RECORD]) for request_id in ids), return_exceptions=True
    )
    await unreachable.aclose()
    assert [type(outcome) for outcome in outcomes] == [BrokerUnavailable] * 3
    with pytest.raises(BrokerUnavailable):
        await coalesced.publish(ids[0], "svm", [RECORD])
