"""The producer against a real gateway process: rate held, routes mixed, back-off on 429, nothing
dropped without being counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from streamml.local.processes import direct_submission
from streamml.settings import Settings
from streamml.stream.entry import decode_entry
from streamml.synthetic.producer import Producer, ProducerConfig, ProducerStats, parse_routes, record_stream
from streamml.synthetic.profile import Profile

StartGateway = Callable[..., tuple[str, Settings]]


def accounted(stats: ProducerStats) -> int:
    return stats.records_accepted + stats.records_rejected + stats.dropped_capacity + stats.dropped_backoff


@pytest.mark.integration
async def test_holds_200_records_per_second_over_mixed_routes(
    start_gateway: StartGateway, redis: Redis
) -> None:
    url, settings = start_gateway()
    config = ProducerConfig(rate=200, duration_s=10, routes=parse_routes("svm=1,knn=1,lightgbm=2"), seed=4)
    stats = await Producer(config, record_stream(Profile.load(), seed=4), url=url).run()
    summary = stats.summary(200)

    assert summary["achieved_rate"] == pytest.approx(200, rel=0.10), str(summary)
    assert stats.records_rejected == 0, summary["rejections"]
    assert stats.dropped_backoff == 0
    assert accounted(stats) == 2000  # anything not sent (slots busy while warming up) is counted
    entries: Any = await redis.xrange(settings.stream.name)
    assert len(entries) == stats.records_accepted
    routes = Counter(fields[b"route"].decode() for _, fields in entries)
    assert routes["lightgbm"] / len(entries) == pytest.approx(0.5, abs=0.06)
    assert routes["svm"] / len(entries) == pytest.approx(0.25, abs=0.06)
    assert routes["knn"] / len(entries) == pytest.approx(0.25, abs=0.06)


@pytest.mark.integration
async def test_sends_its_api_key_and_backs_off_on_429_counting_what_it_could_not_send(
    start_gateway: StartGateway, redis: Redis
) -> None:
    """No worker drains the stream and the gateway, which asks for an API key, allows a backlog of 20
    entries: without the key every request would be a 401 and none accepted."""
    url, settings = start_gateway(
        STREAMML_GATEWAY_MAX_BACKLOG="20",
        STREAMML_GATEWAY_BACKLOG_CHECK_S="0",
        STREAMML_GATEWAY_API_KEYS="sk-producer",
    )
    config = ProducerConfig(rate=100, duration_s=3, routes={"knn": 1.0}, seed=1, api_key="sk-producer")
    stats = await Producer(config, record_stream(Profile.load(), seed=1), url=url).run()

    # The limit is soft: requests already past the check when the backlog filled still publish.
    assert 20 <= stats.records_accepted <= 20 + config.concurrency
    assert await redis.xlen(settings.stream.name) == stats.records_accepted  # a 429 publishes nothing
    assert "401 unauthenticated" not in stats.rejections
    assert stats.rejections.get("429 overloaded", 0) >= 1
    assert stats.backoffs >= 1
    assert stats.dropped_backoff > 0  # sends due while backing off are counted, not silently lost
    assert accounted(stats) == 300


async def test_straight_to_the_stream_goes_through_the_submission_service(
    settings: Settings, redis: Redis
) -> None:
    """``--via redis`` submits with the gateway's service: entries in its format, back-pressure obeyed."""
    settings.gateway.max_backlog = 4
    settings.gateway.backlog_check_s = 0
    config = ProducerConfig(
        rate=2000,
        count=2000,
        records_per_request=100,
        via="redis",
        routes={"svm": 1},
        track_ids=True,
        concurrency=1,
    )
    async with direct_submission(settings) as submit:
        stats = await Producer(config, record_stream(Profile.load(), seed=2), submit=submit).run()

    assert 100 <= stats.records_accepted <= 400  # at most the backlog limit, one request at a time
    assert stats.rejections["429 overloaded"] >= 100  # refused by back-pressure, as over HTTP
    assert accounted(stats) == 2000
    entries: Any = await redis.xrange(settings.stream.name)
    decoded = [decode_entry(sid.decode(), fields) for sid, fields in entries]
    assert [e.request_id for e in decoded] == stats.accepted_ids
    assert all(len(e.records) == 100 and e.route == "svm" for e in decoded)


def test_route_mix_parsing() -> None:
    assert parse_routes("svm") == {"svm": 1.0}
    assert parse_routes("svm=1, knn=3") == {"svm": 1.0, "knn": 3.0}
    with pytest.raises(ValueError, match="route"):
        parse_routes("svm=x")
    with pytest.raises(ValueError, match="routes"):
        parse_routes("svm=0")
