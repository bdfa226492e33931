"""The gateway's app factory: wiring only. Collaborators come in, one :class:`GatewayContext` holds
them, each protocol's router brings its endpoints (and its error shape)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from redis.exceptions import RedisError

from streamml.gateway import feedback, mlflow_scoring, native, open_inference, operations
from streamml.gateway.auth import Authenticator, RateLimiter, load_api_keys
from streamml.gateway.context import GatewayContext
from streamml.gateway.dashboard import SnapshotHub
from streamml.gateway.gateway_metrics import GatewayMetrics
from streamml.gateway.http_errors import ErrorPolicy, install_fallback_handlers
from streamml.gateway.middleware import GatewayMiddleware
from streamml.gateway.replies import ReplyHub
from streamml.gateway.submission import BacklogGate, IdempotencyStore, Submission
from streamml.models.registry import ModelRegistry
from streamml.monitoring.model_states import ModelStates
from streamml.monitoring.observer import StreamObserver
from streamml.rollout.canary import CanaryStore
from streamml.rollout.ground_truth import FeedbackStore
from streamml.rollout.shadow_store import ShadowStore
from streamml.settings import Settings
from streamml.stream.publisher import Publisher
from streamml.stream.status import StreamStatus

log = logging.getLogger(__name__)

PREPARE_TIMEOUT_S = 5.0
"""How long the gateway waits at start for its routes' versions and schemas before it serves anyway."""


def create_app(settings: Settings, publisher: Publisher, registry: ModelRegistry) -> FastAPI:
    """The gateway, with its collaborators handed in (tests pass a publisher on their own stream)."""
    context = build_context(settings, publisher, registry)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:  # a partition count other than the recorded one stops the gateway here, with the reason
            await publisher.check()
        except (RedisError, OSError) as exc:
            log.warning("cannot check the partition count yet (%s); it is checked at the first publish", exc)
        try:  # bounded: a registry that does not answer must not keep the gateway from starting
            await asyncio.wait_for(context.submission.prepare(), PREPARE_TIMEOUT_S)
        except TimeoutError:
            log.warning("no answer from the registry in %ss: routes resolve at first use", PREPARE_TIMEOUT_S)
        context.replies.start()
        yield
        await context.replies.stop()

    gateway = settings.gateway
    app = FastAPI(
        title="streamml gateway",
        version="1",
        description="Validated requests in, micro-batched predictions out, through Redis Streams.",
        lifespan=lifespan,
        # FastAPI's built-in OpenTelemetry asks the global providers on every request whether to
        # record (about 6% of a one-record request); it is off unless asked for.
        telemetry=dict.fromkeys(("tracing", "metrics", "logs"), gateway.opentelemetry),  # type: ignore[arg-type]
    )
    app.state.context = context
    for module in (native, mlflow_scoring, open_inference, operations, feedback):
        app.include_router(module.router)
    install_fallback_handlers(app, retry_after_s=gateway.retry_after_s)
    app.add_middleware(GatewayMiddleware, limit=gateway.max_body_bytes, metrics=context.metrics)
    if gateway.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=gateway.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key"],
        )
    return app


def build_context(settings: Settings, publisher: Publisher, registry: ModelRegistry) -> GatewayContext:
    gateway = settings.gateway
    redis, topology = publisher.slots.redis, publisher.topology
    metrics = GatewayMetrics(registry.routes) if settings.metrics else None
    observer = StreamObserver(redis, StreamStatus(publisher.slots, topology))
    states = ModelStates(redis, topology)
    feedback = FeedbackStore(redis, topology, settings.feedback)
    return GatewayContext(
        settings=gateway,
        publisher=publisher,
        registry=registry,
        submission=Submission(
            publisher,
            registry,
            BacklogGate(publisher, gateway.max_backlog, gateway.backlog_check_s),
            IdempotencyStore(redis, topology, gateway.idempotency_ttl_s),
            states,
        ),
        replies=ReplyHub(publisher),
        snapshots=SnapshotHub(
            observer, registry, settings.drift if settings.drift.enabled else None, states, feedback
        ),
        canaries=CanaryStore(redis, topology),
        shadows=ShadowStore(redis, topology),
        drift=settings.drift,
        authenticator=Authenticator(load_api_keys(gateway.api_keys, gateway.api_keys_file)),
        limiter=RateLimiter(redis, topology.rate_limit_prefix, gateway.rate_limit_per_s),
        metrics=metrics,
        errors=ErrorPolicy(gateway.retry_after_s, metrics.refused_for if metrics else None),
        model_states=states,
        feedback=feedback,
        feedback_settings=settings.feedback,
    )
