"""What every endpoint works with, in one typed object built once by the app factory
(:class:`GatewayContext`), and the two dependencies endpoints declare: the context itself (``Context``)
and the caller's admitted API key (``AdmittedKey``).

The context also holds the two steps every protocol's prediction endpoint shares after reading its body:
queueing the validated records (:meth:`GatewayContext.accept`) and, for the synchronous endpoints,
waiting for their result (:meth:`GatewayContext.predict`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from streamml.errors import PredictionFailed
from streamml.gateway.auth import ApiKey, Authenticator, RateLimiter
from streamml.gateway.dashboard import SnapshotHub
from streamml.gateway.gateway_metrics import GatewayMetrics
from streamml.gateway.http_errors import ErrorPolicy
from streamml.gateway.lean import Endpoint, Handler, served_lean_by
from streamml.gateway.replies import ReplyHub
from streamml.gateway.submission import Accepted, Submission
from streamml.models.refs import ModelRef
from streamml.models.registry import ModelRegistry
from streamml.models.schema import ValidatedBatch
from streamml.monitoring.model_states import ModelStates
from streamml.output_kinds import PREDICT
from streamml.rollout.canary import CanaryStore
from streamml.rollout.ground_truth import FeedbackStore
from streamml.rollout.shadow_store import ShadowStore
from streamml.rows import Rows
from streamml.settings import DriftSettings, FeedbackSettings, GatewaySettings
from streamml.stream.publisher import Publisher

BEARER = HTTPBearer(auto_error=False, description="An API key, when keys are configured.")
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="The same key, as a header.")


@dataclass(frozen=True)
class GatewayContext:
    settings: GatewaySettings
    publisher: Publisher
    registry: ModelRegistry
    submission: Submission
    replies: ReplyHub
    snapshots: SnapshotHub
    canaries: CanaryStore
    shadows: ShadowStore
    drift: DriftSettings
    authenticator: Authenticator
    limiter: RateLimiter
    metrics: GatewayMetrics | None
    """None when metrics are off."""
    errors: ErrorPolicy
    model_states: ModelStates
    """What the workers report of each route's model version (loaded, or why not)."""
    feedback: FeedbackStore
    feedback_settings: FeedbackSettings

    async def accept(
        self,
        model: ModelRef,
        batch: ValidatedBatch,
        key: ApiKey | None,
        *,
        reply: bool = False,
        idempotency_key: str | None = None,
        output: str = PREDICT,
    ) -> Accepted:
        """Publish a batch a protocol's reader validated, and count it."""
        accepted = await self.submission.submit_batch(
            model, batch, key, reply=reply, idempotency_key=idempotency_key, output=output
        )
        self._count(accepted)
        return accepted

    async def predict(
        self,
        model: ModelRef,
        records: list[Any] | Rows,
        key: ApiKey | None,
        *,
        idempotency_key: str | None,
        output: str = PREDICT,
    ) -> tuple[Accepted, dict[str, Any]]:
        """What ``POST /predict`` does with records another protocol's endpoint has read: through the
        stream, waiting for the result document (504 after the configured timeout)."""
        accepted = await self.submission.submit(
            model, records, key, reply=True, idempotency_key=idempotency_key, output=output
        )
        self._count(accepted)
        return accepted, await self.wait(accepted)

    async def wait(self, accepted: Accepted) -> dict[str, Any]:
        """The request's result document once it is written; :class:`PredictionFailed` (with its dead
        letter's reason) as soon as a worker gave up on it."""
        document = await self.replies.wait(accepted.request_id, self.settings.predict_timeout_s)
        if document.get("status") == "failed":
            error = document.get("error") or {}
            raise PredictionFailed(str(error.get("code", "")), str(error.get("message", "")))
        return document

    def _count(self, accepted: Accepted) -> None:
        if not accepted.replayed and self.metrics is not None:
            self.metrics.accepted(accepted.model, accepted.records)


def stored_context(request: Request) -> GatewayContext:
    """The context :func:`~streamml.gateway.app.create_app` stored on the app."""
    context = request.app.state.context
    if not isinstance(context, GatewayContext):
        raise TypeError("the app has no GatewayContext: build it with streamml.gateway.app.create_app")
    return context


def error_policy(request: Request) -> ErrorPolicy:
    """How the app's shaped routes answer errors (:func:`~streamml.gateway.http_errors.shaped_route`)."""
    return stored_context(request).errors


async def gateway_context(request: Request) -> GatewayContext:
    """:func:`stored_context` as a dependency. A coroutine because FastAPI runs a plain function
    dependency in its thread pool: a thread hand-off on every request (about a fifth of the gateway's
    CPU per single-record request)."""
    return stored_context(request)


Context = Annotated[GatewayContext, Depends(gateway_context)]


async def admitted_key(
    request: Request,
    context: Context,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    api_key: Annotated[str | None, Depends(API_KEY_HEADER)],
) -> ApiKey | None:
    """Authenticate the caller (401 when a key is needed and missing or wrong), then apply its rate
    limit (429; per key, or per client address without keys). Returns its key, None when no keys are
    configured. One dependency for both: every endpoint but the liveness probes needs both, and each
    FastAPI dependency costs a resolution per request."""
    key = context.authenticator.identify(f"Bearer {bearer.credentials}" if bearer else None, api_key)
    client = key.name if key else (request.client.host if request.client else "unknown")
    await context.limiter.check(client)
    return key


AdmittedKey = Annotated[ApiKey | None, Depends(admitted_key)]
"""The calling API key, admitted: authenticated and within its rate limit."""


async def admit(request: Request, context: GatewayContext) -> ApiKey | None:
    """What the ``AdmittedKey`` dependency gives, for a lean handler (:mod:`streamml.gateway.lean`):
    the same security schemes read the same headers."""
    return await admitted_key(request, context, await BEARER(request), await API_KEY_HEADER(request))


DEPENDENCIES = frozenset({"request", "context", "key"})


def dependencies_read_directly(endpoint: Endpoint) -> Endpoint:
    """Serve ``endpoint`` through a lean handler (:mod:`streamml.gateway.lean`) that hands it the
    request, the context, the admitted key and its path parameters (which it takes as any text, as
    FastAPI does) without FastAPI's dependency resolution. Only for an endpoint that declares nothing
    else: FastAPI would have nothing more to validate."""
    path_parameters = [name for name in inspect.signature(endpoint).parameters if name not in DEPENDENCIES]

    async def lean(request: Request, full: Handler) -> Response:
        context = stored_context(request)
        key = await admit(request, context)
        path = {name: request.path_params[name] for name in path_parameters}
        response: Response = await endpoint(request=request, context=context, key=key, **path)
        return response

    return served_lean_by(lean)(endpoint)


def replay_headers(accepted: Accepted) -> dict[str, str]:
    """``Idempotent-Replayed: true`` on the answer to a repeated ``Idempotency-Key``."""
    return {"Idempotent-Replayed": "true"} if accepted.replayed else {}
