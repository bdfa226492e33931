"""A worker's probes on its metrics port, as an orchestrator reads them: not ready while a route's model is
not loaded (naming the route), ready once it is; alive throughout; metrics still served beside them."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from mlflow import MlflowClient
from redis.asyncio import Redis

from streamml.local.services import free_port
from streamml.models.training import build_pipelines, model_signature
from streamml.settings import Settings
from tests.helpers import SEED_EXAMPLE, publisher_for, register, start_worker

pytestmark = pytest.mark.integration


def wait_for_status(url: str, status: int, timeout_s: float = 90.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    last: httpx.Response | None = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=2)
            if last.status_code == status:
                return last
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer {status} in {timeout_s:g}s (last: {last and last.text})")


async def publish_one(settings: Settings, route: str) -> None:
    redis = Redis.from_url(settings.redis_url())
    try:
        await publisher_for(settings, redis).publish(f"wake-{route}", route, SEED_EXAMPLE["data"])
    finally:
        await redis.aclose()


def test_a_worker_is_ready_only_once_every_routes_model_is_loaded(
    settings: Settings, tracking_uri: str, tmp_path: Path
) -> None:
    late = f"Late-{uuid.uuid4().hex[:6]}"  # registered only after the worker started
    routes = {"svm": "models:/SVC@champion", "late": f"models:/{late}@champion"}
    port = free_port()
    worker = start_worker(
        settings,
        tracking_uri,
        tmp_path / "worker.log",
        "--metrics-port",
        str(port),
        env={
            "STREAMML_ROUTES": orjson.dumps(routes).decode(),
            "STREAMML_MLFLOW_ALIAS_REFRESH_S": "0.5",
            "STREAMML_WORKER_HEARTBEAT_S": "0.5",
        },
    )
    base = f"http://127.0.0.1:{port}"
    try:
        not_ready = wait_for_status(f"{base}/ready", 503)
        for _ in range(100):  # the warm-up done: the answer names the route that is missing
            if not_ready.json()["models"] != "loading":
                break
            time.sleep(0.2)
            not_ready = httpx.get(f"{base}/ready", timeout=2)
        assert not_ready.status_code == 503
        assert list(not_ready.json()["models"]["not_loaded"]) == ["late"]
        assert not_ready.json()["redis"] == "reachable"
        assert httpx.get(f"{base}/health", timeout=2).status_code == 200
        assert "streamml_records_predicted_total" in httpx.get(f"{base}/metrics", timeout=2).text

        version = register(tracking_uri, late, build_pipelines(1)["LightGBM_Classifier"], model_signature())
        MlflowClient(tracking_uri=tracking_uri).set_registered_model_alias(late, "champion", version)
        asyncio.run(publish_one(settings, "late"))  # its first batch loads it

        ready = wait_for_status(f"{base}/ready", 200)
        assert ready.json() == {"ready": True, "models": "loaded", "redis": "reachable"}
    finally:
        worker.stop()
