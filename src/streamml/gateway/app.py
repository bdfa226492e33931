"""The gateway's app factory: wiring only. Collaborators come in, endpoints come from
:mod:`streamml.gateway.routes`, errors are mapped in :mod:`streamml.gateway.errors`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.exceptions import RedisError

from streamml import keys
from streamml.gateway.auth import Authenticator, RateLimiter, load_api_keys
from streamml.gateway.dashboard import SnapshotHub
from streamml.gateway.errors import install_error_handlers
from streamml.gateway.metrics import GatewayMetrics
from streamml.gateway.middleware import BodyLimitMiddleware, MetricsMiddleware, ResponseHeadersMiddleware
from streamml.gateway.protocol_routes import router as protocol_router
from streamml.gateway.replies import ReplyHub
from streamml.gateway.routes import router
from streamml.gateway.submission import BacklogGate, IdempotencyStore, Submission
from streamml.models.registry import ModelRegistry
from streamml.settings import Settings
from streamml.stream.broker import Broker
from streamml.stream.observe import StreamObserver

log = logging.getLogger(__name__)


def create_app(settings: Settings, broker: Broker, registry: ModelRegistry) -> FastAPI:
    """The gateway, with its collaborators handed in (tests pass a broker on their own stream)."""
    gateway = settings.gateway
    replies = ReplyHub(broker)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:  # a partition count other than the recorded one stops the gateway here, with the reason
            await broker.check_partitions()
        except (RedisError, OSError) as exc:
            log.warning("cannot check the partition count yet (%s); it is checked at the first publish", exc)
        replies.start()
        yield
        await replies.stop()

    app = FastAPI(
        title="streamml gateway",
        version="1",
        description="Validated requests in, micro-batched predictions out, through Redis Streams.",
        lifespan=lifespan,
        # FastAPI's built-in OpenTelemetry asks the global providers on every request whether to
        # record (about 6% of a one-record request); it is off unless asked for.
        telemetry=dict.fromkeys(("tracing", "metrics", "logs"), gateway.opentelemetry),  # type: ignore[arg-type]
    )
    app.state.broker = broker
    app.state.registry = registry
    app.state.gateway_settings = gateway
    app.state.replies = replies
    app.state.submission = Submission(
        broker,
        registry,
        BacklogGate(broker, gateway.max_backlog, gateway.backlog_check_s),
        IdempotencyStore(broker.redis, broker.stream, gateway.idempotency_ttl_s, broker),
    )
    app.state.snapshots = SnapshotHub(
        StreamObserver(broker.redis, broker), registry, settings.drift if settings.drift.enabled else None
    )
    app.state.drift_settings = settings.drift
    metrics = GatewayMetrics(registry.routes) if settings.metrics else None
    app.state.metrics = metrics
    app.state.authenticator = Authenticator(load_api_keys(gateway.api_keys, gateway.api_keys_file))
    app.state.limiter = RateLimiter(
        broker.redis, keys.rate_limit_prefix(broker.stream), gateway.rate_limit_per_s
    )
    app.include_router(router)
    app.include_router(protocol_router)
    install_error_handlers(
        app, retry_after_s=gateway.retry_after_s, observe=metrics.refused_for if metrics else None
    )
    app.add_middleware(BodyLimitMiddleware, limit=gateway.max_body_bytes)
    app.add_middleware(ResponseHeadersMiddleware)
    if metrics is not None:
        app.add_middleware(MetricsMiddleware, metrics=metrics)
    if gateway.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=gateway.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key"],
        )
    return app
