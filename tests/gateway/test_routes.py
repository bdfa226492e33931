"""The gateway against a real Redis and a real MLflow registry: validation at the edge, publishing,
results, and the operational endpoints."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from fastapi.routing import APIRoute
from redis.asyncio import Redis

from streamml import keys
from streamml.gateway import mlflow_scoring, native, open_inference, operations
from streamml.models.registry import ModelRegistry
from streamml.settings import DEFAULT_ROUTES, DEFAULT_TRUSTED_TYPES, Settings
from tests.helpers import SEED_EXAMPLE, drain, gateway_client


async def test_seed_example_is_accepted_for_every_route(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    """The README's curl body, with underscores instead of spaces, gets 202 on svm, knn and lightgbm."""
    async with gateway_client(settings, redis, shared_registry) as client:
        for route in ("svm", "knn", "lightgbm"):
            response = await client.post(f"/predict_stream?model={route}", json=SEED_EXAMPLE)
            assert response.status_code == 202, response.text
            body = response.json()
            assert body["model"] == route
            assert body["records"] == 1
            assert body["status_url"] == f"/predictions/{body['request_id']}"
            assert body["stream_id"]
            assert body["missing_features"]["Mental Fatigue Score"] == 1
            assert "Designation" not in body["missing_features"]
    assert await redis.xlen(settings.stream.name) == 3


async def test_published_entry_uses_the_signature_names(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    async with gateway_client(settings, redis, shared_registry) as client:
        response = await client.post(
            "/predict_stream?model=knn",
            json={"data": [{"resource-allocation": 3, "WFH setup available": "Yes", "GENDER": "Male"}]},
        )
    assert response.status_code == 202
    entries: Any = await redis.xrange(settings.stream.name)
    [(_, fields)] = entries
    assert fields[b"route"] == b"knn"
    assert fields[b"records"] == b'[{"Resource Allocation":3.0,"WFH Setup Available":"Yes","Gender":"Male"}]'


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        pytest.param(
            {"data": [{"Sleep Hour": 7}]},
            422,
            ["Sleep Hour", "Sleep Hours"],
            id="unknown-feature-with-hint",
        ),
        pytest.param(
            {"data": [{"Designation": 1}, {"Designation": "high"}]},
            422,
            ["record 1", "Designation"],
            id="wrong-type",
        ),
        pytest.param(
            {"data": [{"Gender": 3}]}, 422, ["record 0", "Gender", "string"], id="number-for-string"
        ),
        pytest.param(
            {"data": [{"Designation": True}]},
            422,
            ["record 0", "Designation", "bool"],
            id="bool-for-number",
        ),
        pytest.param({"data": []}, 422, ["empty"], id="empty-data"),
        pytest.param({"rows": []}, 422, ["data"], id="no-data-key"),
        pytest.param({"data": [1, 2]}, 422, ["record 0"], id="record-not-object"),
        pytest.param({"data": "x"}, 422, ["data"], id="data-not-list"),
        pytest.param(
            {"data": [{"Sleep Hours": 7, "sleep_hours": 8}]},
            422,
            ["Sleep Hours", "twice"],
            id="same-feature-twice",
        ),
    ],
)
async def test_invalid_requests_are_rejected_and_publish_nothing(
    settings: Settings,
    redis: Redis,
    shared_registry: ModelRegistry,
    body: object,
    status: int,
    names: list[str],
) -> None:
    async with gateway_client(settings, redis, shared_registry) as client:
        response = await client.post("/predict_stream?model=svm", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    text = error["message"] + " " + " ".join(p["message"] for p in error["problems"])
    for name in names:
        assert name in text, text
    assert "Traceback" not in response.text
    assert await redis.xlen(settings.stream.name) == 0


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
async def test_non_finite_numbers_are_rejected_naming_record_and_field(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry, token: str
) -> None:
    raw = f'{{"data": [{{"Designation": 1}}, {{"Designation": 2, "Team Size": {token}}}]}}'
    async with gateway_client(settings, redis, shared_registry) as client:
        response = await client.post(
            "/predict_stream?model=svm", content=raw, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422
    [problem] = response.json()["error"]["problems"]
    assert problem["record"] == 1
    assert problem["field"] == "Team Size"
    assert "finite" in problem["message"]
    assert await redis.xlen(settings.stream.name) == 0


async def test_unknown_route_is_404_listing_the_routes(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    async with gateway_client(settings, redis, shared_registry) as client:
        response = await client.post("/predict_stream?model=xgboost", json=SEED_EXAMPLE)
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "xgboost" in message
    for route in ("svm", "knn", "lightgbm"):
        assert route in message
    assert await redis.xlen(settings.stream.name) == 0


async def test_missing_model_parameter_is_422(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    async with gateway_client(settings, redis, shared_registry) as client:
        response = await client.post("/predict_stream", json=SEED_EXAMPLE)
    assert response.status_code == 422
    assert "model" in response.json()["error"]["message"]


async def test_prediction_status_goes_from_pending_to_done(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    async with gateway_client(settings, redis, shared_registry) as client:
        accepted = (await client.post("/predict_stream?model=lightgbm", json=SEED_EXAMPLE)).json()
        pending = await client.get(accepted["status_url"])
        assert pending.status_code == 202
        assert pending.json()["status"] == "pending"

        await drain(settings, redis, shared_registry)

        done = await client.get(accepted["status_url"])
        assert done.status_code == 200
        body = done.json()
        assert body["status"] == "done"
        assert body["model"] == {
            "route": "lightgbm",
            "name": "LightGBM_Classifier",
            "version": "1",
            "canary": False,
        }
        assert body["predictions"][0] in {"Low", "Medium", "High"}
        assert body["stream_id"] == accepted["stream_id"]
        timings = body["timings"]
        accepted_at = datetime.fromisoformat(timings["accepted_at"])
        written_at = datetime.fromisoformat(timings["written_at"])
        # latency runs from acceptance to the write (the ISO stamps are cut to the millisecond)
        expected_ms = (written_at - accepted_at).total_seconds() * 1000
        assert timings["latency_ms"] == pytest.approx(expected_ms, abs=1.0)
        assert timings["latency_ms"] > 0


async def test_unknown_request_id_is_404(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    async with gateway_client(settings, redis, shared_registry) as client:
        response = await client.get("/predictions/does-not-exist")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_models_lists_routes_versions_and_schemas(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    async with gateway_client(settings, redis, shared_registry) as client:
        models = (await client.get("/models")).json()["models"]
    assert set(models) == {"svm", "knn", "lightgbm"}
    assert models["svm"]["name"] == "SVC"
    assert models["svm"]["uri"] == "models:/SVC@champion"
    inputs = {c["name"]: c for c in models["knn"]["inputs"]}
    assert inputs["Resource Allocation"] == {
        "name": "Resource Allocation",
        "type": "double",
        "required": False,
    }
    assert inputs["Gender"]["type"] == "string"
    assert len(inputs) == 13


async def test_ready_needs_a_live_worker(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    async with gateway_client(settings, redis, shared_registry) as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        not_ready = await client.get("/ready")
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["workers"] == 0

        await drain(settings, redis, shared_registry)  # a worker's heartbeat lasts after it drains

        await redis.zadd(keys.workers_heartbeat_key(settings.stream.name), {"someone": time.time()})
        ready = await client.get("/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["models"]["svm"] == "SVC v1"


async def test_ready_is_503_while_a_route_cannot_resolve_whatever_its_error_says(
    settings: Settings, redis: Redis, tracking_uri: str
) -> None:
    """Readiness is a typed result, not a search of the status text: an error message that happens to
    contain " v" (here from the model's name) still means not ready."""
    routes = {"svm": "models:/SVC@champion", "ghost": "models:/Ghost v2@champion"}
    registry = ModelRegistry(tracking_uri, routes, trusted_types=DEFAULT_TRUSTED_TYPES)
    await redis.zadd(keys.workers_heartbeat_key(settings.stream.name), {"someone": time.time()})
    async with gateway_client(settings, redis, registry) as client:
        response = await client.get("/ready")
    assert response.status_code == 503, response.text
    models = response.json()["checks"]["models"]
    assert models["svm"] == "SVC v1"
    assert models["ghost"].startswith("unavailable: ")
    assert " v" in models["ghost"]


async def test_readyz_accepts_without_a_worker_but_not_while_a_route_cannot_resolve(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry, tracking_uri: str
) -> None:
    """The orchestrator's probe: no worker is needed to accept (workers may scale from zero on the
    backlog), a route whose version does not resolve is."""
    await redis.delete(keys.workers_heartbeat_key(settings.stream.name))
    async with gateway_client(settings, redis, shared_registry) as client:
        assert (await client.get("/ready")).status_code == 503  # no worker seen
        accepting = await client.get("/readyz")
        assert (accepting.status_code, accepting.json()) == (200, {"ready": True})
    routes = {"svm": "models:/SVC@champion", "ghost": "models:/Ghost@champion"}
    registry = ModelRegistry(tracking_uri, routes, trusted_types=DEFAULT_TRUSTED_TYPES)
    async with gateway_client(settings, redis, registry) as client:
        refused = await client.get("/readyz")
        assert (refused.status_code, refused.json()) == (503, {"ready": False})


async def test_synchronous_predict_waits_for_the_worker(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    import asyncio

    from streamml.worker.loop import Worker

    worker = Worker(redis, shared_registry, settings, consumer="sync-worker")
    running = asyncio.create_task(worker.run())
    try:
        async with gateway_client(settings, redis, shared_registry) as client:
            response = await client.post("/predict?model=svm", json=SEED_EXAMPLE)
    finally:
        worker.stop()
        await running
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "done"
    assert body["model"]["name"] == "SVC"
    assert len(body["predictions"]) == 1


async def test_synchronous_predict_times_out_with_504(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    settings.gateway.predict_timeout_s = 0.3
    async with gateway_client(settings, redis, shared_registry) as client:
        response = await client.post("/predict?model=svm", json=SEED_EXAMPLE)
    assert response.status_code == 504
    assert "/predictions/" in response.json()["error"]["message"]
    assert await redis.xlen(settings.stream.name) == 1  # still queued: it will be predicted


async def test_backlog_over_the_limit_is_429_with_retry_after(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    settings.gateway.max_backlog = 2
    settings.gateway.backlog_check_s = 0
    async with gateway_client(settings, redis, shared_registry) as client:
        statuses = [
            (await client.post("/predict_stream?model=knn", json=SEED_EXAMPLE)).status_code for _ in range(4)
        ]
        refused = await client.post("/predict_stream?model=knn", json=SEED_EXAMPLE)
    assert statuses == [202, 202, 429, 429]
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"]["code"] == "overloaded"
    assert await redis.xlen(settings.stream.name) == 2


async def test_redis_down_is_503_with_retry_after_not_500(
    settings: Settings, shared_registry: ModelRegistry
) -> None:
    from streamml.local.services import free_port

    unreachable = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    async with gateway_client(settings, unreachable, shared_registry) as client:
        response = await client.post("/predict_stream?model=svm", json=SEED_EXAMPLE)
        status = await client.get("/predictions/abc")
        ready = await client.get("/ready")
        shadow = await client.get("/shadow")
        drift = await client.get("/drift")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert (shadow.status_code, drift.status_code) == (503, 503)
    assert "Connection" not in response.text  # Redis' own error stays in our logs
    assert status.status_code == 503
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"].startswith("unreachable")


async def test_idempotency_key_returns_the_first_response_and_publishes_once(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    headers = {"Idempotency-Key": "order-42"}
    async with gateway_client(settings, redis, shared_registry) as client:
        first = await client.post("/predict_stream?model=svm", json=SEED_EXAMPLE, headers=headers)
        again = await client.post("/predict_stream?model=svm", json=SEED_EXAMPLE, headers=headers)
        other_body = await client.post(
            "/predict_stream?model=svm", json={"data": [{"Designation": 3}]}, headers=headers
        )
        fresh_key = await client.post(
            "/predict_stream?model=svm", json=SEED_EXAMPLE, headers={"Idempotency-Key": "order-43"}
        )
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other_body.status_code == 422
    assert "Idempotency-Key" in other_body.text
    assert fresh_key.json()["request_id"] != first.json()["request_id"]
    assert await redis.xlen(settings.stream.name) == 2


async def test_a_refused_request_does_not_burn_its_idempotency_key(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    settings.gateway.max_backlog = 0  # everything is refused with 429
    settings.gateway.backlog_check_s = 0
    headers = {"Idempotency-Key": "retry-me"}
    async with gateway_client(settings, redis, shared_registry) as client:
        refused = await client.post("/predict_stream?model=svm", json=SEED_EXAMPLE, headers=headers)
        settings.gateway.max_backlog = 10
    assert refused.status_code == 429
    async with gateway_client(settings, redis, shared_registry) as client:
        accepted = await client.post("/predict_stream?model=svm", json=SEED_EXAMPLE, headers=headers)
    assert accepted.status_code == 202
    assert "Idempotent-Replayed" not in accepted.headers


async def test_a_started_gateway_has_its_routes_resolved_and_its_first_burst_asks_the_registry_nothing(
    settings: Settings, redis: Redis, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The calls to the real registry are counted (a spy that passes each one on)."""
    from mlflow import MlflowClient

    asked: Counter[str] = Counter()
    for method in ("get_model_version_by_alias", "get_model_version_download_uri"):
        real = getattr(MlflowClient, method)

        def counted(self: Any, *args: Any, _real: Any = real, _name: str = method, **kwargs: Any) -> Any:
            asked[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, method, counted)
    registry = ModelRegistry(tracking_uri, DEFAULT_ROUTES, trusted_types=DEFAULT_TRUSTED_TYPES)
    async with gateway_client(settings, redis, registry) as client:
        at_start = dict(asked)
        burst = [
            client.post(f"/predict_stream?model={route}", json=SEED_EXAMPLE)
            for route in ["svm", "knn", "lightgbm"] * 10
        ]
        assert {response.status_code for response in await asyncio.gather(*burst)} == {202}
    assert at_start == {"get_model_version_by_alias": 3, "get_model_version_download_uri": 3}
    assert dict(asked) == at_start


def _calls(dependant: Any) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


def _runs_on_the_loop(call: Any) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(type(call).__call__)


def test_no_route_dependency_runs_in_the_thread_pool() -> None:
    """FastAPI runs a plain-function dependency in its thread pool: a thread hand-off on every request.
    Every dependency of every route is a coroutine (or an object whose ``__call__`` is one)."""
    routes = [
        route
        for module in (native, mlflow_scoring, open_inference, operations)
        for route in module.router.routes
        if isinstance(route, APIRoute)
    ]
    in_threads = {
        f"{route.path}: {getattr(call, '__qualname__', type(call).__qualname__)}"
        for route in routes
        for call in _calls(route.dependant)
        if not _runs_on_the_loop(call)
    }
    assert len(routes) > 20
    assert not in_threads
