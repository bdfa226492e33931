"""The HTTP gateway: validate against the model's signature at the edge, then publish to the stream.

A thin adapter: validation lives in :mod:`streamml.schema`, publishing in :mod:`streamml.broker`,
model resolution in :mod:`streamml.registry`. Domain errors are mapped to HTTP status codes in one
table (``ERROR_STATUS``); nothing else reaches a client, and never a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from streamml import keys
from streamml.broker import Broker
from streamml.errors import (
    BrokerUnavailable,
    Forbidden,
    IdempotencyConflict,
    InvalidRequest,
    ModelUnavailable,
    NotFound,
    Overloaded,
    PredictionTimeout,
    Problem,
    StreammlError,
)
from streamml.httperrors import ErrorResponse, install_error_handlers
from streamml.intake import read_records
from streamml.registry import ModelRegistry
from streamml.security import (
    ApiKey,
    Authenticator,
    BodyLimitMiddleware,
    RateLimiter,
    ResponseHeadersMiddleware,
    load_api_keys,
)
from streamml.settings import Settings

log = logging.getLogger(__name__)

REPLY_POLL_S = 0.5
"""While waiting on ``POST /predict``, re-check the result this often in case a notice was missed."""
LISTEN_POLL_S = 0.5
"""The reply listener checks for a stop request this often."""


MODEL_QUERY = Query(description="Model route, e.g. svm, knn, lightgbm")
IDEMPOTENCY_HEADER = Header(
    default=None,
    alias="Idempotency-Key",
    description="Repeat a request safely: within the retention window the first response is returned "
    "and nothing is published again.",
    max_length=200,
)


BEARER = HTTPBearer(auto_error=False, description="An API key, when keys are configured.")
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="The same key, as a header.")


async def caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    api_key: Annotated[str | None, Depends(API_KEY_HEADER)],
) -> ApiKey | None:
    """Who is calling (None when no keys are configured), after the per-client rate limit."""
    authenticator: Authenticator = request.app.state.authenticator
    key = authenticator.identify(f"Bearer {bearer.credentials}" if bearer else None, api_key)
    client = key.name if key else (request.client.host if request.client else "unknown")
    await request.app.state.limiter.check(client)
    return key


Caller = Annotated[ApiKey | None, Depends(caller)]
"""The calling API key, as a FastAPI dependency (module level: FastAPI resolves it by name)."""


class PredictRequest(BaseModel):
    """The request body, as documented in OpenAPI (the gateway reads it with :mod:`streamml.intake`)."""

    model_config = ConfigDict(extra="forbid")

    data: list[dict[str, Any]] = Field(
        min_length=1,
        description="Records of feature name -> value. Which features a record may hold depends on the "
        "route's model (see GET /models); names match its signature ignoring case, spaces, underscores "
        "and hyphens; omitted features are imputed by the model.",
        examples=[[{"Designation": 1.5, "Resource_Allocation": 1.7, "Sleep_Hours": 7}]],
    )


class Accepted(BaseModel):
    request_id: str
    stream_id: str
    model: str
    records: int
    status_url: str
    missing_features: dict[str, int] = Field(
        default_factory=dict, description="Feature -> number of records that omitted it (imputed)."
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 404, 409, 413, 415, 422, 429, 503, 504)
}
BODY_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    }
}


class BacklogGate:
    """Back-pressure: refuse new work while the stream's backlog is over the limit. The reading is
    reused for ``max_age_s`` so a busy gateway asks Redis a few times a second, not per request."""

    def __init__(self, broker: Broker, limit: int, max_age_s: float) -> None:
        self.broker = broker
        self.limit = limit
        self.max_age_s = max_age_s
        self._backlog = 0
        self._read_at = float("-inf")

    async def check(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._read_at >= self.max_age_s:
            try:
                self._backlog = await self.broker.backlog()
            except (RedisError, OSError) as exc:
                raise BrokerUnavailable(f"cannot read the backlog: {type(exc).__name__}") from exc
            self._read_at = loop.time()
        if self._backlog >= self.limit:
            raise Overloaded(
                f"the pipeline is behind ({self._backlog} queued entries, limit {self.limit}); "
                "nothing was published, retry later"
            )


class ReplyHub:
    """One pub/sub subscription per gateway process, waking the requests waiting on ``/predict``."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.channel = keys.replies_channel(broker.stream)
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        # A flag, not only cancel(): redis-py's pubsub read can swallow a cancellation.
        self._stopping.set()
        if self._task:
            try:
                await asyncio.wait_for(self._task, timeout=2 * LISTEN_POLL_S)
            except TimeoutError:
                log.warning("reply listener did not stop in time")

    async def _listen(self) -> None:
        while not self._stopping.is_set():
            try:
                async with self.broker.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    while not self._stopping.is_set():
                        message = await pubsub.get_message(timeout=LISTEN_POLL_S)
                        if message is None:
                            continue
                        waiter = self._waiters.get(message["data"].decode())
                        if waiter and not waiter.done():
                            waiter.set_result(None)
            except (RedisError, OSError) as exc:
                log.warning("reply channel lost (%s); resubscribing", type(exc).__name__)
                await asyncio.sleep(1.0)  # waiters fall back to polling meanwhile

    async def wait(self, request_id: str, timeout_s: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        waiter = self._waiters[request_id] = loop.create_future()
        deadline = loop.time() + timeout_s
        try:
            while True:
                document = await self.broker.result(request_id)
                if document and document.get("status") == "done":
                    return document
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise PredictionTimeout(
                        f"no prediction within {timeout_s:g}s; it is still queued: "
                        f"GET /predictions/{request_id}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(waiter), min(remaining, REPLY_POLL_S))
        finally:
            self._waiters.pop(request_id, None)


def create_app(settings: Settings, broker: Broker, registry: ModelRegistry) -> FastAPI:
    """The gateway, with its collaborators handed in (tests pass a broker on their own stream)."""
    hub = ReplyHub(broker)
    gate = BacklogGate(broker, settings.gateway.max_backlog, settings.gateway.backlog_check_s)
    idempotency_ttl = settings.gateway.idempotency_ttl_s

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        hub.start()
        yield
        await hub.stop()

    app = FastAPI(
        title="streamml gateway",
        version="1",
        description="Validated requests in, micro-batched predictions out, through Redis Streams.",
        lifespan=lifespan,
        # FastAPI's built-in OpenTelemetry asks the global providers on every request whether to
        # record (about 6% of a one-record request); it is off unless asked for.
        telemetry=dict.fromkeys(("tracing", "metrics", "logs"), settings.gateway.opentelemetry),  # type: ignore[arg-type]
    )
    app.state.authenticator = Authenticator(
        load_api_keys(settings.gateway.api_keys, settings.gateway.api_keys_file)
    )
    app.state.limiter = RateLimiter(
        broker.redis, keys.rate_limit_prefix(broker.stream), settings.gateway.rate_limit_per_s
    )
    install_error_handlers(app, retry_after_s=settings.gateway.retry_after_s)
    app.add_middleware(BodyLimitMiddleware, limit=settings.gateway.max_body_bytes)
    app.add_middleware(ResponseHeadersMiddleware)
    if settings.gateway.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.gateway.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key"],
        )

    async def accept(
        route: str,
        request: Request,
        key: ApiKey | None,
        *,
        reply: bool,
        idempotency_key: str | None,
        response: Response,
    ) -> Accepted:
        registry.target(route)  # an unknown route is a 404 before anything else
        if key is not None and not key.may_predict(route):
            raise Forbidden(f"the API key {key.name!r} may not send requests to model {route!r}")
        data = await read_records(request, settings.gateway)
        ref = await registry.aresolve(route)
        schema = await registry.aschema(ref)
        batch = schema.validate(data)
        fingerprint = ""
        if idempotency_key is not None:
            fingerprint = hashlib.sha256(route.encode() + orjson.dumps(batch.records)).hexdigest()
            first = await broker.begin_idempotent(idempotency_key, fingerprint, idempotency_ttl)
            if first is not None:
                response.headers["Idempotent-Replayed"] = "true"
                return _replay(first, fingerprint)
        try:
            await gate.check()
            request_id = uuid.uuid4().hex
            stream_id = await broker.publish(
                request_id, route, batch.records, reply=reply, owner=key.name if key else ""
            )
        except StreammlError:
            if idempotency_key is not None:  # nothing was published: the key may be used again
                await broker.finish_idempotent(idempotency_key, fingerprint, None, idempotency_ttl)
            raise
        accepted = Accepted(
            request_id=request_id,
            stream_id=stream_id,
            model=route,
            records=len(batch.records),
            status_url=f"/predictions/{request_id}",
            missing_features=batch.missing,
        )
        if idempotency_key is not None:
            await broker.finish_idempotent(
                idempotency_key, fingerprint, accepted.model_dump(), idempotency_ttl
            )
        return accepted

    @app.post(
        "/predict_stream",
        status_code=202,
        response_model=Accepted,
        responses=ERROR_RESPONSES,
        openapi_extra=BODY_SCHEMA,
    )
    async def predict_stream(
        request: Request,
        response: Response,
        key: Caller,
        model: str = MODEL_QUERY,
        idempotency_key: str | None = IDEMPOTENCY_HEADER,
    ) -> Accepted:
        """Validate the records and queue them for prediction; poll ``status_url`` for the result."""
        return await accept(
            model, request, key, reply=False, idempotency_key=idempotency_key, response=response
        )

    @app.post("/predict", responses=ERROR_RESPONSES, openapi_extra=BODY_SCHEMA)
    async def predict(
        request: Request,
        response: Response,
        key: Caller,
        model: str = MODEL_QUERY,
        idempotency_key: str | None = IDEMPOTENCY_HEADER,
    ) -> dict[str, Any]:
        """Queue the records and wait for their predictions (504 after the configured timeout)."""
        accepted = await accept(
            model, request, key, reply=True, idempotency_key=idempotency_key, response=response
        )
        document = await hub.wait(accepted.request_id, settings.gateway.predict_timeout_s)
        document["missing_features"] = accepted.missing_features
        return document

    @app.get(
        "/predictions/{request_id}",
        responses=ERROR_RESPONSES
        | {202: {"description": "Still queued: the body is {'status': 'pending'}."}},
    )
    async def prediction(request_id: str, key: Caller) -> JSONResponse:
        """The predictions once done (200), ``pending`` while queued (202), 404 if unknown or expired."""
        document = await broker.result(request_id)
        owner = document.pop("owner", "") if document else ""
        if document is None or (key is not None and owner != key.name):
            # Another key's request is reported as unknown: its existence is not ours to reveal.
            raise NotFound(f"no request {request_id!r} (never accepted, or its result expired)")
        if document.get("status") != "done":
            return JSONResponse({"status": "pending", "request_id": request_id}, status_code=202)
        return JSONResponse(document)

    @app.get("/models")
    async def models(key: Caller) -> dict[str, Any]:
        """Each route, the model version it resolves to now, and that version's input schema."""
        out: dict[str, Any] = {}
        for route in registry.routes:
            entry: dict[str, Any] = {"uri": registry.route_uris[route]}
            try:
                ref = await registry.aresolve(route)
                entry |= {"name": ref.name, "version": ref.version}
                entry["inputs"] = (await registry.aschema(ref)).as_dict()
            except ModelUnavailable as exc:
                entry["error"] = str(exc)
            out[route] = entry
        return {"models": out}

    @app.get("/health")
    async def health() -> dict[str, str]:
        """The process is alive (no dependency is checked)."""
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"description": "Not ready: the body says which check failed."}})
    async def ready(key: Caller) -> JSONResponse:
        """Redis reachable, every route's model resolvable, a worker seen recently."""
        checks: dict[str, Any] = {}
        try:
            await broker.redis.ping()
            workers = await broker.live_workers(settings.gateway.worker_seen_s)
            checks["redis"] = "ok"
            checks["workers"] = len(workers)
        except (RedisError, OSError) as exc:
            checks["redis"] = f"unreachable ({type(exc).__name__})"
            checks["workers"] = 0
        routes: dict[str, str] = {}
        for route in registry.routes:
            try:
                ref = await registry.aresolve(route)
                routes[route] = f"{ref.name} v{ref.version}"
            except ModelUnavailable as exc:
                routes[route] = f"unavailable: {exc}"
        checks["models"] = routes
        ok = checks["redis"] == "ok" and checks["workers"] > 0 and all(" v" in v for v in routes.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    return app


def _replay(first: dict[str, Any], fingerprint: str) -> Accepted:
    """The response to a repeated ``Idempotency-Key``: the first one, or why there is none."""
    if first.get("fingerprint") != fingerprint:
        problem = Problem("this Idempotency-Key was used with a different request", field="Idempotency-Key")
        raise InvalidRequest([problem])
    if first.get("state") != "done":
        raise IdempotencyConflict(
            "a request with this Idempotency-Key is still being accepted; retry shortly"
        )
    return Accepted.model_validate(first["response"])
