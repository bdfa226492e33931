"""The worker against a real Redis and a real MLflow registry: round trips, sinks, recovery, alias
switches, poison isolation and dead letters."""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from streamml import keys
from streamml.errors import RedisUnreachable
from streamml.models.registry import ModelRegistry
from streamml.settings import DEFAULT_ROUTES, DEFAULT_TRUSTED_TYPES, Settings
from streamml.stream.publisher import Publisher
from streamml.worker.loop import Worker
from streamml.worker.sinks import CSV_COLUMNS
from tests.helpers import SEED_EXAMPLE, consumer_for, drain, gateway_client, publisher_for, read_new

RECORDS: list[dict[str, Any]] = [
    {
        "Designation": 1.0,
        "Resource Allocation": 2.0,
        "Mental Fatigue Score": 3.1,
        "Gender": "Female",
    },
    {
        "Designation": 4.0,
        "Resource Allocation": 9.0,
        "Mental Fatigue Score": 8.7,
        "Company Type": "Product",
    },
    {"Sleep Hours": 7.0},
]


async def test_full_round_trip_for_every_route_writes_all_sinks(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    async with gateway_client(settings, redis, shared_registry) as client:
        accepted = {}
        for route in ("svm", "knn", "lightgbm"):
            response = await client.post(f"/predict_stream?model={route}", json={"data": RECORDS})
            assert response.status_code == 202
            accepted[route] = response.json()

        stats = await drain(settings, redis, shared_registry)
        assert (stats.entries, stats.records) == (3, 9)

        for route, body in accepted.items():
            result = (await client.get(body["status_url"])).json()
            assert result["status"] == "done"
            assert result["model"]["route"] == route
            assert result["model"]["version"] == "1"
            assert len(result["predictions"]) == 3
            assert set(result["predictions"]) <= {"Low", "Medium", "High"}

    # CSV: one row per record, stamped with model name and version.
    with settings.predictions_csv().open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == CSV_COLUMNS
    assert len(rows) == 9
    by_request = {(r["request_id"], r["record_index"]): r for r in rows}
    svm = accepted["svm"]
    first = by_request[(svm["request_id"], "0")]
    assert first["model_name"] == "SVC"
    assert first["model_version"] == "1"
    assert first["stream_id"] == svm["stream_id"]
    assert json.loads(first["features"]) == RECORDS[0]
    # The CSV's latency runs to the end of the predict call, which comes before the write that ends
    # the result document's latency.
    svm_result = await result_of(redis, settings, svm["request_id"])
    assert 0 < float(first["latency_ms"]) <= svm_result["timings"]["latency_ms"]

    # Results stream: one entry per request.
    entries: Any = await redis.xrange(settings.stream.results)
    assert len(entries) == 3
    assert {e[1][b"model_name"] for e in entries} == {
        b"SVC",
        b"Knn_Classifier",
        b"LightGBM_Classifier",
    }

    # Everything acked.
    groups: Any = await redis.xinfo_groups(settings.stream.name)
    assert groups[0]["pending"] == 0


async def test_group_is_created_from_the_start_of_the_stream(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    """Requests published before any worker existed are not skipped."""
    publisher = publisher_for(settings, redis)
    for _ in range(5):
        await publisher.publish("early", "knn", [{"Designation": 2.0}])
    stats = await drain(settings, redis, shared_registry)
    assert stats.entries == 5


async def test_a_batch_groups_records_by_model_and_predicts_once_per_group(
    settings: Settings,
    redis: Redis,
    shared_registry: ModelRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    publisher = publisher_for(settings, redis)
    for index in range(30):
        await publisher.publish(f"r{index}", ("svm", "lightgbm")[index % 2], RECORDS)
    settings.worker.batch_entries = 100
    with caplog.at_level("INFO", logger="streamml.worker.batch"):
        stats = await drain(settings, redis, shared_registry)
    assert stats.records == 90
    batch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch:")]
    assert len(batch_lines) == 2, batch_lines  # one predict per (model, version) in the one read
    assert {"45 records in 15 requests"} == {
        line.split(", ")[0].removeprefix("batch: ") for line in batch_lines
    }


async def test_restarted_worker_resumes_its_own_pending_entries(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    """A worker that read entries and died before acking gets them back when it restarts."""
    publisher = publisher_for(settings, redis)
    await consumer_for(settings, redis).ensure_groups()
    ids = [await publisher.publish(f"r{i}", "lightgbm", RECORDS) for i in range(4)]
    # The "crashed" worker: it read everything and acked nothing.
    delivered = await read_new(settings, redis, "worker-a", 10)
    assert [sid for sid, _ in delivered] == ids
    assert (await redis.xinfo_groups(settings.stream.name))[0]["pending"] == 4

    stats = await drain(settings, redis, shared_registry, consumer="worker-a")

    assert stats.entries == 4
    assert (await redis.xinfo_groups(settings.stream.name))[0]["pending"] == 0
    for index in range(4):
        assert (await publisher.result(f"r{index}") or {}).get("status") == "done"


async def test_idle_entries_of_a_dead_consumer_are_claimed(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    publisher = publisher_for(settings, redis)
    await consumer_for(settings, redis).ensure_groups()
    await publisher.publish("orphan", "svm", RECORDS)
    await read_new(settings, redis, "dead-worker", 10)
    settings.worker.claim_idle_ms = 50
    await asyncio.sleep(0.1)

    stats = await drain(settings, redis, shared_registry, consumer="live-worker")

    assert stats.entries == 1
    assert (await publisher.result("orphan") or {}).get("status") == "done"
    assert (await redis.xinfo_groups(settings.stream.name))[0]["pending"] == 0


async def test_alias_switch_is_picked_up_by_a_running_worker(
    settings: Settings, redis: Redis, tracking_uri: str, tmp_path: object
) -> None:
    """Moving 'champion' to another version changes the version that predicts, without a restart."""
    from mlflow import MlflowClient

    from streamml.local.demo import training_frame
    from streamml.models.training import train_and_register

    # A model of our own, so the session's shared models stay at version 1.
    frame, source = training_frame(None, 600, 1)
    name = "LightGBM_Classifier"
    settings.mlflow.routes = {"lgbm-switch": f"models:/{name}-switch@champion"}
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    from streamml.models import training

    original = training.build_pipelines

    def only_lightgbm(seed: int = 0) -> dict[str, object]:
        return {f"{name}-switch": original(seed)[name]}

    training.build_pipelines = only_lightgbm
    try:
        for _ in range(2):
            train_and_register(
                frame,
                tracking_uri=tracking_uri,
                experiment="tests",
                source=source,
                trusted_types=DEFAULT_TRUSTED_TYPES,
            )
    finally:
        training.build_pipelines = original
    client.set_registered_model_alias(f"{name}-switch", "champion", "1")

    registry = ModelRegistry(
        tracking_uri,
        settings.mlflow.routes,
        alias_refresh_s=0.2,
        trusted_types=DEFAULT_TRUSTED_TYPES,
    )
    worker = Worker(redis, registry, settings, consumer="switcher")
    running = asyncio.create_task(worker.run())
    publisher = publisher_for(settings, redis)
    try:
        await publisher.publish("before", "lgbm-switch", RECORDS)
        before = await _wait_done(publisher, "before")
        client.set_registered_model_alias(f"{name}-switch", "champion", "2")
        await asyncio.sleep(0.5)  # past alias_refresh_s
        await publisher.publish("after", "lgbm-switch", RECORDS)
        after = await _wait_done(publisher, "after")
    finally:
        worker.stop()
        await running
    assert before["model"]["version"] == "1"
    assert after["model"]["version"] == "2"


async def result_of(redis: Redis, settings: Settings, request_id: str) -> dict[str, Any]:
    document = await publisher_for(settings, redis).result(request_id)
    assert document is not None
    return document


async def _wait_done(publisher: Publisher, request_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        document = await publisher.result(request_id)
        if document and document.get("status") == "done":
            return document
        await asyncio.sleep(0.02)
    raise AssertionError(f"{request_id} not predicted within {timeout_s}s")


async def test_poison_entries_are_dead_lettered_and_good_ones_predicted(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    """Entries written straight to the stream, bypassing the gateway's validation."""
    stream = settings.stream.name
    publisher = publisher_for(settings, redis)
    good = [await publisher.publish(f"good{i}", "knn", RECORDS) for i in range(6)]
    await redis.xadd(stream, {"v": "1", "request_id": "bad-json", "route": "knn", "records": "{not json"})
    await redis.xadd(stream, {"v": "1", "request_id": "no-route", "records": "[]"})
    await redis.xadd(stream, {"request_id": "no-version", "route": "knn", "records": orjson.dumps(RECORDS)})
    await redis.xadd(
        stream, {"v": "99", "request_id": "from-the-future", "route": "knn", "records": orjson.dumps(RECORDS)}
    )
    await redis.xadd(
        stream, {"v": "1", "request_id": "unknown", "route": "xgboost", "records": orjson.dumps(RECORDS)}
    )
    # Passes decoding but fails inside the model: a string where the scaler needs a number.
    await redis.xadd(
        stream,
        {
            "v": "1",
            "request_id": "bad-type",
            "route": "knn",
            "records": orjson.dumps([{"Designation": "very high"}]),
        },
    )
    settings.worker.max_deliveries = 2

    stats = await drain(settings, redis, shared_registry)

    assert stats.entries == len(good)
    for index in range(6):
        assert (await publisher.result(f"good{index}") or {}).get("status") == "done"
    letters: Any = await redis.xrange(keys.dead_letter_stream(stream))
    reasons = {f[b"request_id"].decode(): f[b"dlq_reason"].decode() for _, f in letters}
    assert reasons == {
        "bad-json": "invalid_payload",
        "no-route": "invalid_payload",
        "no-version": "invalid_payload",
        "from-the-future": "unsupported_format",
        "unknown": "unknown_model",
        "bad-type": "prediction_failed",
    }
    bad_type = next(f for _, f in letters if f[b"request_id"] == b"bad-type")
    assert bad_type[b"dlq_deliveries"] == b"2"  # retried up to max_deliveries, then dead-lettered
    assert bad_type[b"dlq_worker"] == b"test-worker"
    assert (await redis.xinfo_groups(stream))[0]["pending"] == 0


async def test_unloadable_model_waits_for_retries_before_the_dlq(
    settings: Settings, redis: Redis, tracking_uri: str
) -> None:
    """A registry without the model: entries are retried, then dead-lettered as model_load_failed."""
    settings.mlflow.routes = {"ghost": "models:/DoesNotExist@champion"}
    registry = ModelRegistry(tracking_uri, settings.mlflow.routes, trusted_types=DEFAULT_TRUSTED_TYPES)
    publisher = publisher_for(settings, redis)
    await publisher.publish("waits", "ghost", RECORDS)
    settings.worker.max_deliveries = 3

    await drain(settings, redis, registry)

    letters: Any = await redis.xrange(keys.dead_letter_stream(settings.stream.name))
    [(_, letter)] = letters
    assert letter[b"dlq_reason"] == b"model_load_failed"
    assert letter[b"dlq_deliveries"] == b"3"
    assert b"DoesNotExist" in letter[b"dlq_error"]


async def test_seed_example_round_trip(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    async with gateway_client(settings, redis, shared_registry) as client:
        accepted = (await client.post("/predict_stream?model=svm", json=SEED_EXAMPLE)).json()
        await drain(settings, redis, shared_registry)
        result = (await client.get(accepted["status_url"])).json()
    assert result["predictions"][0] in {"Low", "Medium", "High"}
    assert result["model"] == {"route": "svm", "name": "SVC", "version": "1", "canary": False}


async def test_trim_removes_only_what_every_group_acknowledged(settings: Settings, redis: Redis) -> None:
    publisher = publisher_for(settings, redis)
    await consumer_for(settings, redis).ensure_groups()
    ids = [await publisher.publish(f"r{i}", "svm", RECORDS) for i in range(10)]
    delivered = await read_new(settings, redis, "c1", 6)
    await redis.xack(settings.stream.name, settings.stream.group, *[sid for sid, _ in delivered[:3]])

    trimmer = consumer_for(settings, redis, "c1")
    partition = trimmer.topology.partitions[0]
    assert await trimmer.trim_acknowledged(partition) == 3  # ids 0-2 acked; 3-5 pending; 6-9 unread
    remaining: Any = await redis.xrange(settings.stream.name)
    assert [sid.decode() for sid, _ in remaining] == ids[3:]

    await redis.xack(settings.stream.name, settings.stream.group, *[sid for sid, _ in delivered[3:]])
    assert await trimmer.trim_acknowledged(partition) == 3  # now up to the last delivered id
    assert await redis.xlen(settings.stream.name) == 4  # the unread ones stay

    await redis.xgroup_create(settings.stream.name, "audit", id="0")
    await read_new(settings, redis, "c1", 10)  # group 1 reads the rest...
    assert await trimmer.trim_acknowledged(partition) == 0  # ...but "audit" has read nothing: keep everything


async def test_a_registry_outage_does_not_stop_cached_models(
    settings: Settings, redis: Redis, tracking_uri: str, tmp_path: Path
) -> None:
    """MLflow unreachable (its database gone): the worker keeps serving the version it has loaded."""
    import shutil

    db = Path(tracking_uri.removeprefix("sqlite:///"))
    copy = tmp_path / "registry-copy.db"
    shutil.copy(db, copy)
    registry = ModelRegistry(
        f"sqlite:///{copy}", DEFAULT_ROUTES, alias_refresh_s=0.0, trusted_types=DEFAULT_TRUSTED_TYPES
    )
    publisher = publisher_for(settings, redis)
    await publisher.publish("before", "knn", RECORDS)
    await drain(settings, redis, registry)

    copy.unlink()  # the registry is gone; every alias lookup now fails
    (tmp_path / "registry-copy.db").mkdir()  # and cannot be silently recreated as an empty db
    await publisher.publish("during", "knn", RECORDS)
    await drain(settings, redis, registry)

    during = await publisher.result("during")
    assert during is not None
    assert during["status"] == "done"
    assert during["model"]["version"] == "1"


async def test_a_deleted_stream_is_recreated_and_reading_goes_on(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """NOGROUP (the stream deleted under a running worker) becomes a clear log line and a new group,
    not a crash or a silent stall."""
    worker = Worker(redis, shared_registry, settings, consumer="survivor")
    running = asyncio.create_task(worker.run())
    publisher = publisher_for(settings, redis)
    try:
        await publisher.publish("first", "knn", RECORDS)
        await _wait_done(publisher, "first")
        await redis.delete(settings.stream.name)  # an operator's mistake
        await asyncio.sleep(0.2)
        await publisher.publish("after", "knn", RECORDS)
        after = await _wait_done(publisher, "after")
    finally:
        worker.stop()
        await running
    assert after["status"] == "done"
    assert any("is gone" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


async def test_a_worker_that_cannot_reach_redis_says_so_and_gives_up_when_told(
    settings: Settings, shared_registry: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis down from the start: each attempt is logged with the outage's length; after
    ``redis_give_up_s`` the worker raises RedisUnreachable (the CLI exits 3) instead of running on as if
    it had connected."""
    from streamml.local.services import free_port

    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    settings.worker.redis_give_up_s = 1.0
    worker = Worker(dead, shared_registry, settings, consumer="lonely")
    with caplog.at_level("WARNING", logger="streamml.worker.reconnect"), pytest.raises(RedisUnreachable):
        await worker.run()
    await dead.aclose()
    attempts = [r.getMessage() for r in caplog.records if "Redis unreachable for" in r.getMessage()]
    assert len(attempts) >= 3, attempts
    assert attempts[-1].endswith("giving up")
