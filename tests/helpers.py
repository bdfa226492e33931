"""Helpers shared by tests: an in-process gateway client, a burst worker, and real worker processes on
the test's stream."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from streamml.gateway.app import create_app
from streamml.local.demo import training_frame
from streamml.local.services import ManagedProcess
from streamml.models.inference import LoadedModel
from streamml.models.registry import ModelRegistry
from streamml.models.training import features_and_labels, pinned_requirements
from streamml.settings import DEFAULT_TRUSTED_TYPES, Settings
from streamml.stream.consumer import Consumer, RawEntry
from streamml.stream.nodes import SlotClients
from streamml.stream.publisher import Publisher
from streamml.stream.topology import StreamTopology
from streamml.worker.batch import WorkerStats
from streamml.worker.loop import Worker

SEED_EXAMPLE = {"data": [{"Designation": 1.5, "Resource_Allocation": 1.7, "Sleep_Hours": 7}]}
"""The example from the original project's README, exactly as a user types it."""


@asynccontextmanager
async def gateway_client(
    settings: Settings, redis: Redis, registry: ModelRegistry
) -> AsyncIterator[httpx.AsyncClient]:
    """The real FastAPI app (lifespan included) over ASGI, publishing to the test's stream."""
    app = create_app(settings, publisher_for(settings, redis), registry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


async def load_route(registry: ModelRegistry, route: str) -> LoadedModel:
    """The model a route resolves to now, loaded (as a worker holds it)."""
    return await registry.loader.load(await registry.resolver.resolve(route))


def publisher_for(settings: Settings, redis: Redis) -> Publisher:
    """A publisher on the test's stream."""
    return Publisher.of(redis, settings.stream, cluster=settings.redis.cluster)


def consumer_for(settings: Settings, redis: Redis, name: str = "test-consumer") -> Consumer:
    """A consumer of the test's stream, as a worker named ``name`` would hold it."""
    return Consumer(SlotClients(redis), StreamTopology.of(settings.stream), name)


async def read_new(settings: Settings, redis: Redis, consumer: str, count: int) -> list[RawEntry]:
    """Deliver up to ``count`` new entries of the test's (single) stream to ``consumer``, as a worker
    that then dies would have them: pending, never acknowledged."""
    reader = consumer_for(settings, redis, consumer)
    return await reader.read_new(reader.topology.partitions[0], count)


async def drain(
    settings: Settings, redis: Redis, registry: ModelRegistry, consumer: str = "test-worker"
) -> WorkerStats:
    """Run a worker in burst mode until the stream is drained."""
    return await Worker(redis, registry, settings, consumer=consumer).run(burst=True)


def process_env(settings: Settings, tracking_uri: str, **extra: str) -> dict[str, str]:
    """The environment of a gateway or worker process on the test's stream (no STREAMML_* leaking in
    from the developer's shell)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    return env | {
        "REDIS_URL": settings.redis_url(),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "STREAMML_STATE_DIR": str(settings.state_dir),
        "STREAMML_STREAM_NAME": settings.stream.name,
        "STREAMML_STREAM_RESULTS": settings.stream.results,
        **extra,
    }


def start_worker(
    settings: Settings, tracking_uri: str, log: Path, *args: str, env: dict[str, str] | None = None
) -> ManagedProcess:
    """`streamml worker` as a real process on the test's stream (``env``: more variables)."""
    argv = [sys.executable, "-m", "streamml", "worker", "--log-level", "warning", *args]
    return ManagedProcess("worker", argv, log, process_env(settings, tracking_uri, **(env or {}))).start()


def register(
    tracking_uri: str,
    name: str,
    pipeline: Any,
    signature: Any,
    *,
    merge: bool = False,
    complete_rows: bool = False,
) -> str:
    """Fit ``pipeline`` on generated rows (``complete_rows``: only those without a missing value) and
    register it as a new version of ``name``."""
    features, labels = features_and_labels(training_frame(None, 800, len(name))[0])
    if complete_rows:
        keep = features.notna().all(axis=1)
        features, labels = features[keep], labels[keep]
    if merge:  # two classes only: Medium counted as Low
        labels = labels.replace({"Medium": "Low"})
    pipeline.fit(features, labels)
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment("tests")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=signature,
            registered_model_name=name,
            serialization_format="skops",
            skops_trusted_types=list(DEFAULT_TRUSTED_TYPES),
            pip_requirements=pinned_requirements("LightGBM_Classifier"),  # any demo pipeline's, stated
        )
    return str(info.registered_model_version)


def register_challenged(tracking_uri: str, prefix: str) -> str:
    """A model of its own name: LightGBM v1 as ``champion`` and a KNN trained on other rows as v2
    ``challenger`` (same inputs and classes, different answers often enough to fill a flip matrix)."""
    import uuid

    from mlflow import MlflowClient

    from streamml.models.training import build_pipelines, model_signature

    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    register(tracking_uri, name, build_pipelines(1)["LightGBM_Classifier"], model_signature())
    register(tracking_uri, name, build_pipelines(2)["Knn_Classifier"], model_signature())
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    return name
