"""The operators' endpoints: what each route serves (``/models``), challengers and canaries
(``/shadow``), drift (``/drift``), liveness and readiness (``/health``, ``/ready``), Prometheus
(``/metrics``) and the live dashboard (``/dashboard``, its events). Errors in streamml's own shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from streamml.errors import BrokerUnavailable, NotFound
from streamml.gateway.context import AdmittedKey, Context, GatewayContext, error_policy
from streamml.gateway.dashboard import page
from streamml.gateway.http_errors import ErrorResponse, error_responses, native_error, shaped_route
from streamml.monitoring.model_states import RouteLoad, servable
from streamml.monitoring.observer import dumps
from streamml.rollout.drift_monitor import drift_reports

DASHBOARD_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"
)
"""The dashboard's inline script and style, and requests to this gateway only: nothing from elsewhere."""
ERROR_RESPONSES = error_responses(ErrorResponse)
RouteQuery = Annotated[str | None, Query(description="Only this route.")]

router = APIRouter(route_class=shaped_route(native_error, error_policy))


@router.get("/models")
async def models(context: Context, key: AdmittedKey) -> dict[str, Any]:
    """Each route, the model version it resolves to now, and that version's input schema."""
    resolver = context.registry.resolver
    out: dict[str, Any] = {}
    for route in resolver.routes:
        status = await resolver.status(route)
        entry: dict[str, Any] = {"uri": status.uri}
        if status.ref is None:
            entry["error"] = status.error
        else:
            entry |= {"name": status.ref.name, "version": status.ref.version}
            schema = await context.registry.catalog.schema(status.ref)
            entry["inputs"] = schema.as_dict() if schema is not None else None  # None: no signature
        out[route] = entry
    return {"models": out}


@router.get("/shadow", responses=ERROR_RESPONSES)
async def shadow(context: Context, key: AdmittedKey, route: RouteQuery = None) -> dict[str, Any]:
    """Each challenger against the champion it shadowed, per version pair: records compared, sampled
    out and failed, agreement with its 95 % interval, the flip matrix, the class mix and predict time of
    each, and why a challenger cannot shadow when it cannot. Also each route's canary share."""
    if route is not None:
        context.registry.resolver.target(route)  # an unknown route is a 404 naming the known ones
    try:
        reports = await context.shadows.reports(route)
        canary = await context.canaries.shares()
    except (RedisError, OSError) as exc:
        raise BrokerUnavailable(f"cannot read the shadow aggregates: {type(exc).__name__}") from exc
    return {"canary": canary, "pairs": [report.as_dict() for report in reports]}


@router.get("/drift", responses=ERROR_RESPONSES)
async def drift(context: Context, key: AdmittedKey, route: RouteQuery = None) -> dict[str, Any]:
    """Per route, how its recent records (every worker's window) differ from its model version's
    training data: a score and a flag per feature, the share of drifted features, the prediction drift;
    "insufficient data" or "unknown" (no training profile logged) instead of numbers when so."""
    if route is not None:
        context.registry.resolver.target(route)  # an unknown route is a 404 naming the known ones
    redis, topology = context.publisher.slots.redis, context.publisher.topology
    try:
        return {"routes": await drift_reports(redis, context.registry, topology, context.drift, route)}
    except (RedisError, OSError) as exc:
        raise BrokerUnavailable(f"cannot read the drift windows: {type(exc).__name__}") from exc


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive (no dependency is checked)."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "Not ready: the body says which check failed."}})
async def ready(context: Context, key: AdmittedKey) -> JSONResponse:
    """Redis reachable, every route's model resolvable, a worker seen recently."""
    ok, checks = await readiness(context)
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


@router.get("/readyz", responses={503: {"description": 'Cannot accept requests now: {"ready": false}.'}})
async def accepting(context: Context) -> JSONResponse:
    """For an orchestrator's readiness probe (no key asked, no detail given): the gateway can accept
    requests — Redis answers and every route's current version resolves. Unlike ``/ready`` it does
    not ask for a live worker: accepted requests wait in the stream, and workers that scale from zero
    on the stream's backlog start only once the gateway takes requests."""
    try:
        await context.publisher.slots.redis.ping()
    except (RedisError, OSError):
        return JSONResponse({"ready": False}, status_code=503)
    for route in context.registry.resolver.routes:
        if (await context.registry.resolver.status(route)).ref is None:
            return JSONResponse({"ready": False}, status_code=503)
    return JSONResponse({"ready": True})


async def readiness(context: GatewayContext) -> tuple[bool, dict[str, Any]]:
    """Whether the gateway can answer predictions now, and each check's finding: Redis, a live worker,
    and every route's current version resolvable and loadable by some worker."""
    checks: dict[str, Any] = {}
    loads: dict[str, list[RouteLoad]] = {}
    try:
        await context.publisher.slots.redis.ping()
        checks["workers"] = len(await context.publisher.live_workers(context.settings.worker_seen_s))
        loads = await context.model_states.read()
        checks["redis"] = "ok"
    except (RedisError, OSError) as exc:
        checks["redis"] = f"unreachable ({type(exc).__name__})"
        checks["workers"] = 0
    models: dict[str, str] = {}
    ok = checks["redis"] == "ok" and checks["workers"] > 0
    for route in context.registry.resolver.routes:
        servable_now, finding = await route_readiness(context, route, loads.get(route, []))
        models[route] = finding
        ok = ok and servable_now
    checks["models"] = models
    return ok, checks


async def route_readiness(context: GatewayContext, route: str, loads: list[RouteLoad]) -> tuple[bool, str]:
    """Whether a route can be answered (its version resolves, and not every worker failed to load it)."""
    status = await context.registry.resolver.status(route)
    if status.ref is None:
        return False, status.describe()
    servable_now, error = servable(loads, status.ref.version)
    if not servable_now:
        return False, f"{status.describe()}: no worker can load it: {error}"
    return True, status.describe()


@router.get("/metrics", response_class=PlainTextResponse, responses=ERROR_RESPONSES)
async def metrics(context: Context, key: AdmittedKey) -> Response:
    """The gateway's Prometheus metrics (every gateway process's, summed, under ``--processes``), and
    the stream's state (all processes') from the latest snapshot. With API keys configured a
    read-only key is enough."""
    if context.metrics is None:
        raise NotFound("metrics are off (STREAMML_METRICS=false)")
    context.metrics.state.snapshot = await context.snapshots.current()
    return Response(generate_latest(context.metrics.exposition()), media_type=CONTENT_TYPE_LATEST)


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    """The live page. It holds no data: it reads ``/dashboard/events``, with the API key it asks for
    when keys are configured (a browser cannot send one when it opens a page)."""
    return HTMLResponse(page(), headers={"Content-Security-Policy": DASHBOARD_CSP})


@router.get("/dashboard/events", response_class=EventSourceResponse)
async def dashboard_events(context: Context, key: AdmittedKey) -> AsyncIterator[ServerSentEvent]:
    """Snapshots of the pipeline as Server-Sent Events: the recent history, then one a second."""
    async for snap in context.snapshots.stream():
        yield ServerSentEvent(raw_data=dumps(snap).decode())
