"""Drift through the real pipeline: a running worker's window of the session's LightGBM (trained with its
profile logged), read back by the gateway's GET /drift and by `streamml drift` in its own process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

from redis.asyncio import Redis

from streamml.models.registry import ModelRegistry
from streamml.rollout.drift_monitor import drift_reports
from streamml.settings import DEFAULT_ROUTES, DEFAULT_TRUSTED_TYPES, Settings
from streamml.stream.publisher import Publisher
from streamml.stream.topology import StreamTopology
from streamml.synthetic.producer import record_stream
from streamml.synthetic.profile import Profile
from streamml.synthetic.synth import parse_drifts
from streamml.worker.loop import Worker
from tests.helpers import gateway_client, process_env, publisher_for

FEATURE = "Mental Fatigue Score"


async def send(publisher: Publisher, count: int, seed: int, drift: list[str], prefix: str) -> None:
    records = record_stream(Profile.load(), seed=seed, drift=parse_drifts(drift))
    batch = [(f"{prefix}{i}", "lightgbm", [next(records) for _ in range(10)]) for i in range(count // 10)]
    await publisher.publish_many(batch)


async def predicted(redis: Redis, settings: Settings, records: int) -> None:
    counters = f"{settings.stream.name}:counts:predicted"
    for _ in range(600):
        if int(await redis.hget(counters, "lightgbm") or 0) >= records:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {records} records predicted in 60 s")


async def test_undrifted_records_flag_nothing_then_the_drifted_feature_alone_is_flagged(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry, tracking_uri: str
) -> None:
    settings.drift.window_records = 2000
    settings.drift.publish_s = 0.1
    settings.drift.max_records_per_s = 0  # every record in the window
    settings.mlflow.routes = {"lightgbm": DEFAULT_ROUTES["lightgbm"]}
    publisher = publisher_for(settings, redis)
    worker = Worker(redis, shared_registry, settings, consumer="drift-watcher")
    running = asyncio.create_task(worker.run())
    try:
        await send(publisher, 2000, seed=21, drift=[], prefix="u")
        await predicted(redis, settings, 2000)
        await asyncio.sleep(0.3)  # a publish of the window
        before = (
            await drift_reports(redis, shared_registry, StreamTopology.of(settings.stream), settings.drift)
        )["lightgbm"]

        await send(publisher, 2000, seed=22, drift=[f"{FEATURE}=+1.5sd"], prefix="d")
        await predicted(redis, settings, 4000)
        await asyncio.sleep(0.3)
        async with gateway_client(settings, redis, shared_registry) as client:
            response = await client.get("/drift", params={"route": "lightgbm"})
            unknown_route = await client.get("/drift", params={"route": "xgboost"})
        command = [sys.executable, "-m", "streamml", "drift", "--route", "lightgbm", "--json"]
        env = process_env(settings, tracking_uri, STREAMML_MLFLOW_ROUTES=json.dumps(settings.mlflow.routes))
        cli = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True)
    finally:
        worker.stop()
        await running

    assert before["status"] == "ok", before
    assert before["records"] == 2000
    assert before["drifted_features"] == []
    assert before["version"] == "1"

    assert response.status_code == 200, response.text
    after = response.json()["routes"]["lightgbm"]
    assert after["records"] == 2000  # the window holds the newest 2,000: the drifted ones
    assert after["drifted_features"] == [FEATURE]
    assert after["features"][FEATURE]["score"] > 1.0  # about 1.5 standard deviations, less clipping
    assert all(f["score"] < 0.1 for name, f in after["features"].items() if name != FEATURE)
    assert after["status"] == "ok"  # one feature of thirteen: under the route's share
    assert unknown_route.status_code == 404

    assert cli.returncode == 0, cli.stderr
    shown: dict[str, Any] = json.loads(cli.stdout)["routes"]["lightgbm"]
    assert shown["drifted_features"] == [FEATURE]
    assert shown["features"][FEATURE]["score"] == after["features"][FEATURE]["score"]


async def test_a_window_too_small_says_insufficient_data_and_a_version_without_profile_unknown(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry, tracking_uri: str
) -> None:
    await send(publisher_for(settings, redis), 50, seed=23, drift=[], prefix="s")
    await Worker(redis, shared_registry, settings, consumer="small").run(burst=True)
    reports = await drift_reports(redis, shared_registry, StreamTopology.of(settings.stream), settings.drift)
    assert reports["lightgbm"]["status"] == "insufficient data"
    assert reports["lightgbm"]["records"] == 50
    assert "features" not in reports["lightgbm"]

    # A version logged without a training profile (trained by hand, not by streamml train).
    from mlflow import MlflowClient

    from streamml.models.training import build_pipelines, model_signature
    from tests.helpers import register

    name = "NoProfile-drift"
    register(tracking_uri, name, build_pipelines(1)["LightGBM_Classifier"], model_signature())
    MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).set_registered_model_alias(
        name, "champion", "1"
    )
    registry = ModelRegistry(
        tracking_uri, {"plain": f"models:/{name}@champion"}, trusted_types=DEFAULT_TRUSTED_TYPES
    )
    report = (await drift_reports(redis, registry, StreamTopology.of(settings.stream), settings.drift))[
        "plain"
    ]
    assert report["status"] == "unknown"
    assert "no training profile" in report["reason"]


async def test_the_window_takes_at_most_its_rate_of_records_however_fast_they_come(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    settings.drift.max_records_per_s = 300
    settings.drift.min_records = 1
    await send(publisher_for(settings, redis), 6000, seed=24, drift=[], prefix="r")
    started = time.monotonic()
    stats = await Worker(redis, shared_registry, settings, consumer="capped").run(burst=True)
    elapsed = time.monotonic() - started
    report = (
        await drift_reports(redis, shared_registry, StreamTopology.of(settings.stream), settings.drift)
    )["lightgbm"]
    assert stats.records == 6000
    assert 0 < report["records"] <= 300 * (elapsed + 1)  # one second's allowance to start with
    assert report["records"] < 6000
