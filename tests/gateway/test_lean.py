"""The lean handlers answer exactly as FastAPI's own handlers do: the same requests, common and not, sent
to the real app and to the same app built with no lean handler, give the same status, headers that
matter and body (ids aside), and publish the same entries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from streamml.gateway import lean
from streamml.models.registry import ModelRegistry
from streamml.settings import Settings
from tests.helpers import SEED_EXAMPLE, gateway_client

GOOD = json.dumps(SEED_EXAMPLE).encode()
KEYS = json.dumps(
    [{"name": "team-a", "key": "sk-team-a"}, {"name": "svm-only", "key": "sk-svm-only", "routes": ["svm"]}]
)
JSON = {"Content-Type": "application/json"}
BEARER = JSON | {"Authorization": "Bearer sk-team-a"}

CASES: list[tuple[str, str, str, dict[str, str], bytes]] = [
    # (id, path, query, headers, body)
    ("queued", "/predict_stream", "model=lightgbm", BEARER, GOOD),
    ("queued-v1", "/v1/predict_stream", "model=lightgbm", BEARER, GOOD),
    ("x-api-key", "/predict_stream", "model=svm", JSON | {"X-API-Key": "sk-svm-only"}, GOOD),
    ("proba", "/predict_stream", "model=lightgbm&output=proba", BEARER, GOOD),
    ("idempotent", "/predict_stream", "model=svm", BEARER | {"Idempotency-Key": "k-1"}, GOOD),
    ("no-key", "/predict_stream", "model=svm", JSON, GOOD),
    ("wrong-key", "/predict_stream", "model=svm", JSON | {"Authorization": "Bearer nope"}, GOOD),
    ("basic-scheme", "/predict_stream", "model=svm", JSON | {"Authorization": "Basic sk-team-a"}, GOOD),
    ("route-not-allowed", "/predict_stream", "model=knn", JSON | {"X-API-Key": "sk-svm-only"}, GOOD),
    ("no-model", "/predict_stream", "", BEARER, GOOD),
    ("unknown-model", "/predict_stream", "model=nope", BEARER, GOOD),
    ("bad-output", "/predict_stream", "model=svm&output=labels", BEARER, GOOD),
    ("svm-has-no-proba", "/predict_stream", "model=svm&output=proba", BEARER, GOOD),
    ("long-idempotency-key", "/predict_stream", "model=svm", BEARER | {"Idempotency-Key": "k" * 201}, GOOD),
    ("unknown-query", "/predict_stream", "model=svm&debug=1", BEARER, GOOD),
    ("text-body", "/predict_stream", "model=svm", BEARER | {"Content-Type": "text/plain"}, GOOD),
    ("bad-record", "/predict_stream", "model=svm", BEARER, b'{"data": [{"Sleep Hours": "late"}]}'),
    ("sync-unknown-model", "/predict", "model=nope", BEARER, GOOD),
    ("sync-no-model", "/predict", "", BEARER, GOOD),
    ("invocations-no-default-route", "/invocations", "", BEARER, GOOD),
    ("invocations-unknown-route", "/models/nope/invocations", "", BEARER, GOOD),
    ("invocations-wrong-key", "/models/svm/invocations", "", JSON | {"X-API-Key": "nope"}, GOOD),
    ("invocations-bad-body", "/models/svm/invocations", "", BEARER, b'{"nope": 1}'),
    ("v2-unknown-route", "/v2/models/nope/infer", "", BEARER, b'{"inputs": []}'),
    ("v2-other-version", "/v2/models/svm/versions/99/infer", "", BEARER, b'{"inputs": []}'),
    ("v2-no-key", "/v2/models/svm/infer", "", JSON, b'{"inputs": []}'),
    ("v2-bad-body", "/v2/models/svm/infer", "", BEARER, b'{"inputs": 1}'),
]

IDS = ("request_id", "stream_id", "status_url")


def comparable(response: httpx.Response) -> tuple[int, dict[str, Any], dict[str, str]]:
    body = response.json()
    for name in IDS:
        body.pop(name, None)
    headers = {
        name: response.headers[name]
        for name in ("content-type", "www-authenticate", "idempotent-replayed", "retry-after")
        if name in response.headers
    }
    return response.status_code, body, headers


@asynccontextmanager
async def fastapi_only(
    settings: Settings, redis: Redis, registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """The same app with no lean handler registered when its routes are built."""
    with monkeypatch.context() as patch:
        patch.setattr(lean, "_LEAN", {})
        async with gateway_client(settings, redis, registry) as client:
            yield client


async def test_lean_handlers_answer_every_request_as_fastapis_handlers_do(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.gateway.api_keys = KEYS
    answers: dict[str, list[tuple[int, dict[str, Any], dict[str, str]]]] = {}
    for build in ("lean", "fastapi"):
        settings.stream.name = f"lean-test-{build}"
        context = (
            gateway_client(settings, redis, shared_registry)
            if build == "lean"
            else fastapi_only(settings, redis, shared_registry, monkeypatch)
        )
        async with context as client:
            answers[build] = [
                comparable(await client.post(f"{path}?{query}", content=body, headers=headers))
                for _, path, query, headers, body in CASES
            ]
    for (case, *_), got, expected in zip(CASES, answers["lean"], answers["fastapi"], strict=True):
        assert got == expected, case
    statuses = {case: status for (case, *_), (status, _, _) in zip(CASES, answers["lean"], strict=True)}
    assert statuses["queued"] == 202
    assert statuses["wrong-key"] == 401
    assert statuses["bad-output"] == 422
    assert statuses["v2-other-version"] == 404
    assert statuses["invocations-wrong-key"] == 401


async def test_a_lean_app_publishes_what_fastapis_would(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = {}
    for build in ("lean", "fastapi"):
        settings.stream.name = f"lean-entries-{build}"
        context = (
            gateway_client(settings, redis, shared_registry)
            if build == "lean"
            else fastapi_only(settings, redis, shared_registry, monkeypatch)
        )
        async with context as client:
            response = await client.post(
                "/predict_stream?model=lightgbm&output=proba", content=GOOD, headers=JSON
            )
            assert response.status_code == 202
        written: Any = await redis.xrange(settings.stream.name)
        [(_, fields)] = written
        entries[build] = {k: v for k, v in fields.items() if k not in (b"request_id", b"accepted_ms")}
    assert entries["lean"] == entries["fastapi"]
