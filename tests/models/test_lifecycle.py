"""Promote and rollback against the session's real MLflow registry (sqlite), on models registered here
under names of their own, so the other tests' models never move."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from mlflow import MlflowClient
from redis.asyncio import Redis

from streamml.errors import LifecycleRefused
from streamml.models.lifecycle import Lifecycle
from streamml.models.registry import ModelRegistry
from streamml.models.training import NUMERIC_FEATURES, build_pipelines, model_signature
from streamml.settings import DEFAULT_TRUSTED_TYPES, Settings
from streamml.worker.loop import Worker
from tests.helpers import publisher_for, register


@pytest.fixture
def model(tracking_uri: str) -> tuple[str, ModelRegistry, MlflowClient]:
    """A model with v1 as champion and v2 (trained on other rows) as challenger, and a registry whose
    route 'lc' follows its champion, re-resolved on every request."""
    name = f"LGBM-lifecycle-{uuid.uuid4().hex[:6]}"
    for seed in (1, 2):
        register(tracking_uri, name, build_pipelines(seed)["LightGBM_Classifier"], model_signature())
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    registry = ModelRegistry(
        tracking_uri,
        {"lc": f"models:/{name}@champion", "pinned": f"models:/{name}/1"},
        alias_refresh_s=0.0,
        trusted_types=DEFAULT_TRUSTED_TYPES,
    )
    return name, registry, client


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


async def test_promote_then_rollback_twice(model: tuple[str, ModelRegistry, MlflowClient]) -> None:
    name, registry, client = model
    lifecycle = Lifecycle(registry)

    moves = await lifecycle.promote("lc")
    assert [m.describe() for m in moves] == [
        f"{name}@previous: (none) -> v1",
        f"{name}@champion: v1 -> v2",
        f"{name}@challenger: v2 -> (removed)",
    ]
    assert aliases(client, name) == {"champion": "2", "previous": "1"}
    assert (await registry.resolver.resolve("lc")).version == "2"

    await lifecycle.rollback("lc")
    assert aliases(client, name) == {"champion": "1", "previous": "2"}
    await lifecycle.rollback("lc")  # a second rollback undoes the first
    assert aliases(client, name) == {"champion": "2", "previous": "1"}


async def test_what_makes_no_sense_is_refused_and_changes_nothing(
    model: tuple[str, ModelRegistry, MlflowClient], tracking_uri: str
) -> None:
    name, registry, client = model
    lifecycle = Lifecycle(registry)
    with pytest.raises(LifecycleRefused, match="nothing was promoted"):
        await lifecycle.rollback("lc")
    with pytest.raises(LifecycleRefused, match="pinned to"):
        await lifecycle.promote("pinned")

    # A challenger that reads other inputs: the numeric features only.
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    numeric_only = Pipeline(
        [
            ("preprocess", ColumnTransformer([("n", SimpleImputer(strategy="median"), NUMERIC_FEATURES)])),
            ("scale", StandardScaler()),
            ("model", LogisticRegression(max_iter=1000)),
        ]
    )
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    full = model_signature()
    signature = ModelSignature(
        inputs=Schema([ColSpec("double", n, required=False) for n in NUMERIC_FEATURES]), outputs=full.outputs
    )
    other_inputs = register(tracking_uri, name, numeric_only, signature)
    client.set_registered_model_alias(name, "challenger", other_inputs)
    with pytest.raises(LifecycleRefused, match=r"input signature differs .*removed \['Company Type'"):
        await lifecycle.promote("lc")

    # Same inputs, other classes.
    two_classes = register(
        tracking_uri, name, build_pipelines(3)["LightGBM_Classifier"], model_signature(), merge=True
    )
    client.set_registered_model_alias(name, "challenger", two_classes)
    with pytest.raises(LifecycleRefused, match=r"output classes \['High', 'Low'\] differ"):
        await lifecycle.promote("lc")

    client.delete_registered_model_alias(name, "challenger")
    with pytest.raises(LifecycleRefused, match="no 'challenger' alias"):
        await lifecycle.promote("lc")
    assert aliases(client, name) == {"champion": "1"}


async def test_promote_and_rollback_under_load_lose_nothing(
    model: tuple[str, ModelRegistry, MlflowClient], settings: Settings, redis: Redis
) -> None:
    """A running worker follows promote and rollback; every request is predicted, each by v1 or v2."""
    name, registry, client = model
    settings.mlflow.routes = {"lc": f"models:/{name}@champion"}
    worker = Worker(redis, registry, settings, consumer="follower")
    running = asyncio.create_task(worker.run())
    publisher = publisher_for(settings, redis)
    lifecycle = Lifecycle(registry)
    sent = []
    try:
        for index in range(300):
            sent.append(await publisher.publish(f"r{index}", "lc", [{"Designation": 2.0}]))
            if index == 100:
                await lifecycle.promote("lc")
            if index == 200:
                await lifecycle.rollback("lc")
            await asyncio.sleep(0.005)
        deadline = asyncio.get_running_loop().time() + 60
        versions: dict[str, str] = {}
        while len(versions) < 300 and asyncio.get_running_loop().time() < deadline:
            for index in range(300):
                document = await publisher.result(f"r{index}")
                if document and document.get("status") == "done":
                    versions[f"r{index}"] = document["model"]["version"]
            await asyncio.sleep(0.2)
    finally:
        worker.stop()
        await running
    assert len(versions) == 300  # nothing lost
    assert set(versions.values()) == {"1", "2"}  # both answered, and no other version did
    assert versions["r0"] == "1"
    assert versions["r299"] == "1"  # rolled back
    assert aliases(client, name) == {"champion": "1", "previous": "2"}
