"""The HTTP endpoints: short adapters from HTTP to the submission service, the broker and the registry.

Each endpoint reads what HTTP carries (query, headers, body), calls one service, and shapes the
answer. Who is calling and its rate limit are one dependency (``AdmittedKey``) of every endpoint but
``/health``;
errors are domain exceptions, mapped to status codes in :mod:`streamml.gateway.errors`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import RedisError

from streamml.errors import BrokerUnavailable, NotFound
from streamml.gateway.auth import ApiKey, Authenticator, RateLimiter
from streamml.gateway.dashboard import SnapshotHub, page
from streamml.gateway.errors import ErrorResponse, error_responses
from streamml.gateway.intake import check_envelope
from streamml.gateway.metrics import GatewayMetrics
from streamml.gateway.replies import ReplyHub
from streamml.gateway.submission import Accepted, Submission
from streamml.models.registry import ModelRegistry
from streamml.settings import DriftSettings, GatewaySettings
from streamml.stream.broker import Broker
from streamml.stream.drift import drift_reports
from streamml.stream.observe import dumps
from streamml.stream.rollout import RolloutStore

MODEL_QUERY = Query(description="Model route, e.g. svm, knn, lightgbm")
IDEMPOTENCY_HEADER = Header(
    default=None,
    alias="Idempotency-Key",
    description="Repeat a request safely: within the retention window the first response is returned "
    "and nothing is published again.",
    max_length=200,
)
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"
)
"""The dashboard's inline script and style, and requests to this gateway only: nothing from elsewhere."""
BEARER = HTTPBearer(auto_error=False, description="An API key, when keys are configured.")
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="The same key, as a header.")


class PredictRequest(BaseModel):
    """The request body as OpenAPI documents it (read by :mod:`~streamml.gateway.intake`)."""

    model_config = ConfigDict(extra="forbid")

    data: list[dict[str, Any]] = Field(
        min_length=1,
        description="Records of feature name -> value. Which features a record may hold depends on the "
        "route's model (see GET /models); names match its signature ignoring case, spaces, underscores "
        "and hyphens; omitted features are imputed by the model.",
        examples=[[{"Designation": 1.5, "Resource_Allocation": 1.7, "Sleep_Hours": 7}]],
    )


class AcceptedBody(BaseModel):
    request_id: str
    stream_id: str
    model: str
    records: int
    status_url: str
    missing_features: dict[str, int] = Field(
        default_factory=dict, description="Feature -> number of records that omitted it (imputed)."
    )


ERROR_RESPONSES = error_responses(ErrorResponse)
BODY_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    }
}


# -- collaborators, from the app's state (create_app puts them there) ----------------------------


def _submission(request: Request) -> Submission:
    return request.app.state.submission  # type: ignore[no-any-return]


def _broker(request: Request) -> Broker:
    return request.app.state.broker  # type: ignore[no-any-return]


def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry  # type: ignore[no-any-return]


def _settings(request: Request) -> GatewaySettings:
    return request.app.state.gateway_settings  # type: ignore[no-any-return]


def _snapshots(request: Request) -> SnapshotHub:
    return request.app.state.snapshots  # type: ignore[no-any-return]


def _replies(request: Request) -> ReplyHub:
    return request.app.state.replies  # type: ignore[no-any-return]


async def admitted_key(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    api_key: Annotated[str | None, Depends(API_KEY_HEADER)],
) -> ApiKey | None:
    """Authenticate the caller (401 when a key is needed and missing or wrong), then apply its rate
    limit (429; per key, or per client address without keys). Returns its key, None when no keys are
    configured. One dependency for both: every endpoint but ``/health`` needs both, and each FastAPI
    dependency costs a resolution per request."""
    authenticator: Authenticator = request.app.state.authenticator
    key = authenticator.identify(f"Bearer {bearer.credentials}" if bearer else None, api_key)
    limiter: RateLimiter = request.app.state.limiter
    await limiter.check(key.name if key else (request.client.host if request.client else "unknown"))
    return key


AdmittedKey = Annotated[ApiKey | None, Depends(admitted_key)]
"""The calling API key, admitted: authenticated and within its rate limit."""

router = APIRouter()


async def _accept(
    request: Request, response: Response, model: str, key: ApiKey | None, *, reply: bool
) -> Accepted:
    submission = _submission(request)
    submission.require_route(model, key)  # 404/403 before the body is read
    check_envelope(content_type=request.headers.get("content-type", ""), query=request.query_params.keys())
    accepted = await submission.submit_json(
        model,
        await request.body(),
        key,
        limits=_settings(request),
        reply=reply,
        idempotency_key=request.headers.get("idempotency-key"),
    )
    _count(request, response, model, accepted)
    return accepted


def _count(request: Request, response: Response, model: str, accepted: Accepted) -> None:
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    elif (metrics := request.app.state.metrics) is not None:
        metrics.accepted(model, accepted.records)


async def predict_records(
    request: Request, response: Response, route: str, records: list[Any], key: ApiKey | None
) -> dict[str, Any]:
    """What ``POST /predict`` does with records another protocol's endpoint has read: through the
    stream, waiting for the result document (504 after the configured timeout)."""
    accepted = await _submission(request).submit(
        route, records, key, reply=True, idempotency_key=request.headers.get("idempotency-key")
    )
    _count(request, response, route, accepted)
    return await _replies(request).wait(accepted.request_id, _settings(request).predict_timeout_s)


@router.post(
    "/predict_stream",
    status_code=202,
    response_model=AcceptedBody,
    responses=ERROR_RESPONSES,
    openapi_extra=BODY_SCHEMA,
)
async def predict_stream(
    request: Request,
    response: Response,
    key: AdmittedKey,
    model: str = MODEL_QUERY,
    idempotency_key: str | None = IDEMPOTENCY_HEADER,  # read by _accept; declared for OpenAPI and length
) -> dict[str, Any]:
    """Validate the records and queue them for prediction; poll ``status_url`` for the result."""
    return (await _accept(request, response, model, key, reply=False)).as_dict()


@router.post("/predict", responses=ERROR_RESPONSES, openapi_extra=BODY_SCHEMA)
async def predict(
    request: Request,
    response: Response,
    key: AdmittedKey,
    model: str = MODEL_QUERY,
    idempotency_key: str | None = IDEMPOTENCY_HEADER,
) -> dict[str, Any]:
    """Queue the records and wait for their predictions (504 after the configured timeout)."""
    accepted = await _accept(request, response, model, key, reply=True)
    document = await _replies(request).wait(accepted.request_id, _settings(request).predict_timeout_s)
    document["missing_features"] = accepted.missing_features
    return document


@router.get(
    "/predictions/{request_id}",
    responses=ERROR_RESPONSES | {202: {"description": "Still queued: the body is {'status': 'pending'}."}},
)
async def prediction(request: Request, request_id: str, key: AdmittedKey) -> JSONResponse:
    """The predictions once done (200), ``pending`` while queued (202), 404 if unknown or expired."""
    document = await _broker(request).result(request_id)
    owner = document.pop("owner", "") if document else ""
    if document is None or (key is not None and owner != key.name):
        # Another key's request is reported as unknown: its existence is not ours to reveal.
        raise NotFound(f"no request {request_id!r} (never accepted, or its result expired)")
    if document.get("status") != "done":
        return JSONResponse({"status": "pending", "request_id": request_id}, status_code=202)
    return JSONResponse(document)


@router.get("/models")
async def models(request: Request, key: AdmittedKey) -> dict[str, Any]:
    """Each route, the model version it resolves to now, and that version's input schema."""
    registry = _registry(request)
    out: dict[str, Any] = {}
    for route in registry.routes:
        status = await registry.status(route)
        entry: dict[str, Any] = {"uri": status.uri}
        if status.ref is None:
            entry["error"] = status.error
        else:
            entry |= {"name": status.ref.name, "version": status.ref.version}
            entry["inputs"] = (await registry.aschema(status.ref)).as_dict()
        out[route] = entry
    return {"models": out}


@router.get("/shadow", responses=ERROR_RESPONSES)
async def shadow(
    request: Request, key: AdmittedKey, route: Annotated[str | None, Query()] = None
) -> dict[str, Any]:
    """Each challenger against the champion it shadowed, per version pair: records compared, sampled
    out and failed, agreement with its 95 % interval, the flip matrix, the class mix and predict time of
    each, and why a challenger cannot shadow when it cannot. Also each route's canary share."""
    if route is not None:
        _registry(request).target(route)  # an unknown route is a 404 naming the known ones
    store = RolloutStore.of(_broker(request).redis, _broker(request).streams)
    try:
        reports = await store.shadow_reports(route)
        canary = await store.canary()
    except (RedisError, OSError) as exc:
        raise BrokerUnavailable(f"cannot read the shadow aggregates: {type(exc).__name__}") from exc
    return {"canary": canary, "pairs": [report.as_dict() for report in reports]}


@router.get("/drift", responses=ERROR_RESPONSES)
async def drift(
    request: Request, key: AdmittedKey, route: Annotated[str | None, Query()] = None
) -> dict[str, Any]:
    """Per route, how its recent records (every worker's window) differ from its model version's
    training data: a score and a flag per feature, the share of drifted features, the prediction drift;
    "insufficient data" or "unknown" (no training profile logged) instead of numbers when so."""
    registry = _registry(request)
    if route is not None:
        registry.target(route)  # an unknown route is a 404 naming the known ones
    broker = _broker(request)
    settings: DriftSettings = request.app.state.drift_settings
    try:
        return {"routes": await drift_reports(broker.redis, registry, broker.stream, settings, route)}
    except (RedisError, OSError) as exc:
        raise BrokerUnavailable(f"cannot read the drift windows: {type(exc).__name__}") from exc


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive (no dependency is checked)."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "Not ready: the body says which check failed."}})
async def ready(request: Request, key: AdmittedKey) -> JSONResponse:
    """Redis reachable, every route's model resolvable, a worker seen recently."""
    ok, checks = await readiness(request)
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


async def readiness(request: Request) -> tuple[bool, dict[str, Any]]:
    """Whether the gateway can answer predictions now, and each check's finding."""
    broker, registry = _broker(request), _registry(request)
    checks: dict[str, Any] = {}
    try:
        await broker.redis.ping()
        checks["workers"] = len(await broker.live_workers(_settings(request).worker_seen_s))
        checks["redis"] = "ok"
    except (RedisError, OSError) as exc:
        checks["redis"] = f"unreachable ({type(exc).__name__})"
        checks["workers"] = 0
    statuses = [await registry.status(route) for route in registry.routes]
    checks["models"] = {s.route: s.describe() for s in statuses}
    ok = checks["redis"] == "ok" and checks["workers"] > 0 and all(s.resolvable for s in statuses)
    return ok, checks


@router.get("/metrics", response_class=PlainTextResponse, responses=ERROR_RESPONSES)
async def metrics(request: Request, key: AdmittedKey) -> Response:
    """The gateway's Prometheus metrics (every gateway process's, summed, under ``--processes``), and
    the stream's state (all processes') from the latest snapshot. With API keys configured a
    read-only key is enough."""
    gateway_metrics: GatewayMetrics | None = request.app.state.metrics
    if gateway_metrics is None:
        raise NotFound("metrics are off (STREAMML_METRICS=false)")
    gateway_metrics.state.snapshot = await _snapshots(request).current()
    return Response(generate_latest(gateway_metrics.exposition()), media_type=CONTENT_TYPE_LATEST)


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    """The live page. It holds no data: it reads ``/dashboard/events``, with the API key it asks for
    when keys are configured (a browser cannot send one when it opens a page)."""
    return HTMLResponse(page(), headers={"Content-Security-Policy": DASHBOARD_CSP})


@router.get("/dashboard/events", response_class=EventSourceResponse)
async def dashboard_events(request: Request, key: AdmittedKey) -> AsyncIterator[ServerSentEvent]:
    """Snapshots of the pipeline as Server-Sent Events: the recent history, then one a second."""
    async for snap in _snapshots(request).stream():
        yield ServerSentEvent(raw_data=dumps(snap).decode())
