"""Hostile and malformed input, authentication, limits: every case against the real app and a real
Redis, checking the status, that the error names the problem, and that nothing was published."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from streamml.gateway.intake import DuplicateKey, parse_json
from streamml.local.processes import check_exposure
from streamml.models.registry import ModelRegistry
from streamml.settings import Settings
from tests.helpers import SEED_EXAMPLE, drain, gateway_client

GOOD = json.dumps(SEED_EXAMPLE)
JSON = {"Content-Type": "application/json"}

KEYS = json.dumps(
    [
        {"name": "team-a", "key": "sk-team-a"},
        {"name": "svm-only", "key": "sk-svm-only", "routes": ["svm"]},
        {"name": "dashboard", "key": "sk-dashboard", "read_only": True},
    ]
)


@pytest.fixture
async def client(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> AsyncIterator[httpx.AsyncClient]:
    settings.gateway.max_body_bytes = 64 * 1024
    settings.gateway.max_records = 50
    async with gateway_client(settings, redis, shared_registry) as c:
        yield c


HOSTILE: list[Any] = [
    # (id, content, headers, query, status, words the error must contain)
    ("not-json", b"{data: [1,", JSON, "model=svm", 422, ["not valid JSON"]),
    (
        "wrong-content-type",
        GOOD.encode(),
        {"Content-Type": "text/plain"},
        "model=svm",
        415,
        ["application/json"],
    ),
    ("no-content-type", GOOD.encode(), {}, "model=svm", 415, ["application/json"]),
    ("empty-body", b"", JSON, "model=svm", 422, ["empty"]),
    ("json-array", b"[1, 2]", JSON, "model=svm", 422, ["object"]),
    ("json-string", b'"data"', JSON, "model=svm", 422, ["object"]),
    ("data-not-list", b'{"data": {"Designation": 1}}', JSON, "model=svm", 422, ["'data'", "list"]),
    ("data-null", b'{"data": null}', JSON, "model=svm", 422, ["'data'"]),
    ("record-not-object", b'{"data": [[1, 2]]}', JSON, "model=svm", 422, ["record 0"]),
    ("extra-body-field", b'{"data": [], "debug": true}', JSON, "model=svm", 422, ["debug"]),
    (
        "nan-string",
        b'{"data": [{"Designation": "NaN"}]}',
        JSON,
        "model=svm",
        422,
        ["record 0", "Designation"],
    ),
    (
        "inf-string",
        b'{"data": [{"Team Size": "Infinity"}]}',
        JSON,
        "model=svm",
        422,
        ["record 0", "Team Size"],
    ),
    ("nan-token", b'{"data": [{"Designation": NaN}]}', JSON, "model=svm", 422, ["record 0", "finite"]),
    ("minus-inf", b'{"data": [{"Designation": -Infinity}]}', JSON, "model=svm", 422, ["finite"]),
    ("out-of-float-range", b'{"data": [{"Designation": 1e400}]}', JSON, "model=svm", 422, ["finite"]),
    (
        "integer-beyond-double",
        b'{"data": [{"Designation": 1' + b"0" * 400 + b"}]}",
        JSON,
        "model=svm",
        422,
        ["record 0", "Designation", "double"],
    ),
    ("bool-for-number", b'{"data": [{"Team Size": true}]}', JSON, "model=svm", 422, ["Team Size", "bool"]),
    ("object-for-number", b'{"data": [{"Team Size": {"a": 1}}]}', JSON, "model=svm", 422, ["Team Size"]),
    (
        "duplicate-keys",
        b'{"data": [{"Designation": 1, "Designation": 2}]}',
        JSON,
        "model=svm",
        422,
        ["Designation", "twice"],
    ),
    (
        "huge-string",
        json.dumps({"data": [{"Gender": "x" * 5000}]}).encode(),
        JSON,
        "model=svm",
        422,
        ["Gender", "longer"],
    ),
    (
        "huge-name",
        json.dumps({"data": [{"y" * 5000: 1}]}).encode(),
        JSON,
        "model=svm",
        422,
        ["name", "longer"],
    ),
    (
        "deep-nesting",
        b'{"data": [{"Designation": ' + b"[" * 50 + b"]" * 50 + b"}]}",
        JSON,
        "model=svm",
        422,
        ["nests deeper"],
    ),
    ("very-deep-nesting", b"[" * 100_000 + b"]" * 100_000, JSON, "model=svm", 413, ["larger"]),
    (
        "too-many-fields",
        json.dumps({"data": [{f"f{i}": 1 for i in range(100)}]}).encode(),
        JSON,
        "model=svm",
        422,
        ["fields"],
    ),
    (
        "too-many-records",
        json.dumps({"data": [{"Designation": 1}] * 51}).encode(),
        JSON,
        "model=svm",
        413,
        ["51 records"],
    ),
    (
        "look-alike-name",
        '{"data": [{"Dеsignation": 1}]}'.encode(),
        JSON,
        "model=svm",
        422,
        ["unknown feature"],
    ),
    ("unknown-model", GOOD.encode(), JSON, "model=xgboost", 404, ["xgboost", "svm"]),
    ("path-like-model", GOOD.encode(), JSON, "model=../x", 404, ["'../x'", "svm"]),
    ("uri-model", GOOD.encode(), JSON, "model=models:/Other@champion", 404, ["models:/Other"]),
    ("no-model", GOOD.encode(), JSON, "", 422, ["model"]),
    ("extra-query", GOOD.encode(), JSON, "model=svm&debug=1", 422, ["debug"]),
]


@pytest.mark.parametrize(
    ("content", "headers", "query", "status", "words"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
async def test_hostile_input_is_refused_clearly_and_publishes_nothing(
    client: httpx.AsyncClient,
    redis: Redis,
    settings: Settings,
    content: bytes,
    headers: dict[str, str],
    query: str,
    status: int,
    words: list[str],
) -> None:
    response = await client.post(f"/predict_stream?{query}", content=content, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    text = error["message"] + " " + " ".join(p["message"] for p in error["problems"])
    for word in words:
        assert word in text, text
    assert "Traceback" not in response.text
    assert await redis.xlen(settings.stream.name) == 0


async def test_oversized_body_is_413_before_it_is_read(
    client: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    big = json.dumps({"data": [{"Gender": "Male"}] * 10_000}).encode()
    declared = await client.post("/predict_stream?model=svm", content=big, headers=JSON)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: a chunked body
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    chunked = await client.post("/predict_stream?model=svm", content=chunks(), headers=JSON)
    assert declared.status_code == chunked.status_code == 413
    assert "larger than" in chunked.json()["error"]["message"]
    assert await redis.xlen(settings.stream.name) == 0


async def test_every_response_carries_a_request_id_for_the_logs(client: httpx.AsyncClient) -> None:
    given = await client.get("/health", headers={"X-Request-ID": "client-123"})
    assert given.headers["x-request-id"] == "client-123"
    made = await client.get("/health", headers={"X-Request-ID": "bad id with spaces"})
    assert len(made.headers["x-request-id"]) == 32


async def test_security_headers_and_no_cors_by_default(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"Origin": "https://evil.example"})
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "access-control-allow-origin" not in response.headers


@pytest.fixture
async def keyed(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> AsyncIterator[httpx.AsyncClient]:
    settings.gateway.api_keys = KEYS
    async with gateway_client(settings, redis, shared_registry) as c:
        yield c


async def test_keys_are_required_everywhere_but_the_probes(
    keyed: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    assert (await keyed.get("/health")).status_code == 200
    assert (await keyed.get("/readyz")).json() == {"ready": True}  # a probe sends no key; told no detail
    for method, path in [
        ("POST", "/predict_stream?model=svm"),
        ("GET", "/models"),
        ("GET", "/ready"),
        ("GET", "/predictions/x"),
        ("POST", "/predict?model=svm"),
    ]:
        response = await keyed.request(method, path, content=GOOD, headers=JSON)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer")
    wrong = await keyed.post(
        "/predict_stream?model=svm", content=GOOD, headers=JSON | {"X-API-Key": "sk-nope"}
    )
    assert wrong.status_code == 401
    assert "not valid" in wrong.json()["error"]["message"]
    assert await redis.xlen(settings.stream.name) == 0


async def test_keys_are_limited_to_routes_and_read_only_use(
    keyed: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    svm_only = {"Authorization": "Bearer sk-svm-only"}
    assert (
        await keyed.post("/predict_stream?model=svm", content=GOOD, headers=JSON | svm_only)
    ).status_code == 202
    knn = await keyed.post("/predict_stream?model=knn", content=GOOD, headers=JSON | svm_only)
    assert knn.status_code == 403
    assert "knn" in knn.json()["error"]["message"]
    read_only = {"X-API-Key": "sk-dashboard"}
    assert (
        await keyed.post("/predict_stream?model=svm", content=GOOD, headers=JSON | read_only)
    ).status_code == 403
    assert (await keyed.get("/models", headers=read_only)).status_code == 200
    assert await redis.xlen(settings.stream.name) == 1


async def test_a_client_reads_only_its_own_results(
    keyed: httpx.AsyncClient, redis: Redis, settings: Settings, shared_registry: ModelRegistry
) -> None:
    mine = {"Authorization": "Bearer sk-team-a"}
    accepted = (await keyed.post("/predict_stream?model=svm", content=GOOD, headers=JSON | mine)).json()
    assert (await keyed.get(accepted["status_url"], headers=mine)).status_code == 202
    assert (await keyed.get(accepted["status_url"], headers={"X-API-Key": "sk-svm-only"})).status_code == 404
    await drain(settings, redis, shared_registry)
    done = await keyed.get(accepted["status_url"], headers=mine)
    assert done.status_code == 200
    assert "owner" not in done.json()
    assert (await keyed.get(accepted["status_url"], headers={"X-API-Key": "sk-dashboard"})).status_code == 404


async def test_rate_limit_is_429_with_retry_after(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    settings.gateway.rate_limit_per_s = 5
    async with gateway_client(settings, redis, shared_registry) as client:
        responses = [await client.get("/models") for _ in range(12)]
    statuses = [r.status_code for r in responses]
    assert statuses[:5] == [200] * 5
    limited = next(r for r in responses if r.status_code == 429)  # StopIteration: never limited
    assert limited.headers["Retry-After"] == "1"
    assert limited.json()["error"]["code"] == "rate_limited"


def test_an_open_gateway_on_a_network_interface_refuses_to_start(settings: Settings) -> None:
    settings.gateway.host = "0.0.0.0"  # noqa: S104 - the case under test
    with pytest.raises(SystemExit, match="API keys"):
        check_exposure(settings)
    settings.gateway.insecure = True
    assert check_exposure(settings) is not None  # allowed, with a warning
    settings.gateway.api_keys = "sk-1"
    assert check_exposure(settings) is None
    settings.gateway.host = "127.0.0.1"
    settings.gateway.api_keys = None
    assert "no API keys" in (check_exposure(settings) or "")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"data": [{"a": "x\\": y"}]}', {"data": [{"a": 'x": y'}]}),  # a key ending inside a value
        (b'{"a" :1, "b":\n2}', {"a": 1, "b": 2}),
        (b"[1, 2]", [1, 2]),
    ],
)
def test_fast_json_parse_gives_the_strict_parsers_value(body: bytes, expected: object) -> None:
    assert parse_json(body, 8)[0] == expected


@pytest.mark.parametrize(
    "body",
    [b'{"a": 1, "a": 2}', b'{"data": [{"x": 1}, {"x": 2, "x" : 3}]}', b'{"o": {"k": {}, "k": []}}'],
)
def test_duplicate_keys_are_found_at_any_depth(body: bytes) -> None:
    with pytest.raises(DuplicateKey):
        parse_json(body, 8)
