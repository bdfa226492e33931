"""Ground truth in, accuracy out: ``POST /feedback`` and ``GET /accuracy`` (the arithmetic and the
stores are :mod:`streamml.rollout.ground_truth`'s). Errors in streamml's own shape."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from redis.exceptions import RedisError

from streamml.errors import BrokerUnavailable
from streamml.gateway.context import AdmittedKey, Context, error_policy
from streamml.gateway.http_errors import ErrorResponse, error_responses, native_error, shaped_route
from streamml.gateway.intake import parse_json_body
from streamml.gateway.openapi import request_body
from streamml.rollout.ground_truth import parse_feedback

ERROR_RESPONSES = error_responses(ErrorResponse)
RouteQuery = Annotated[str | None, Query(description="Only this route.")]
FEEDBACK_BODY = request_body(
    {
        "type": "object",
        "required": ["feedback"],
        "properties": {
            "feedback": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["request_id", "label"],
                    "properties": {
                        "request_id": {"type": "string"},
                        "record_index": {"type": "integer", "minimum": 0, "default": 0},
                        "label": {"type": ["string", "number", "integer", "boolean"]},
                    },
                },
            }
        },
    }
)

router = APIRouter(route_class=shaped_route(native_error, error_policy), tags=["feedback"])


@router.post("/feedback", responses=ERROR_RESPONSES, openapi_extra=FEEDBACK_BODY)
async def feedback(request: Request, context: Context, key: AdmittedKey) -> dict[str, Any]:
    """The true labels (or values) of predicted records, by request id and record index. Each is
    joined with what the model versions answered and counted once, however often it is sent; a label of
    another type than the predictions is refused naming it; request ids no answer is kept for (unknown,
    or older than ``STREAMML_FEEDBACK_TTL_S``) are counted and listed, not refused."""
    items = parse_feedback(
        parse_json_body(await request.body(), context.settings), context.feedback_settings.max_records
    )
    try:
        outcome = await context.feedback.record(items, lambda route: key is None or key.may_predict(route))
    except (RedisError, OSError) as exc:
        raise BrokerUnavailable(f"cannot record the feedback: {type(exc).__name__}") from exc
    if context.metrics is not None:
        context.metrics.feedback(outcome.recorded, outcome.repeated, len(outcome.unmatched))
    return outcome.as_dict()


@router.get("/accuracy", responses=ERROR_RESPONSES)
async def accuracy(
    context: Context,
    key: AdmittedKey,
    route: Annotated[str | None, Query(description="Only this route.")] = None,
) -> dict[str, Any]:
    """Per route and version, against the feedback received: accuracy with per-class precision and
    recall (classifiers) or MAE and RMSE (regressors), in total and over the recent window; per shadow
    pair, both versions on the same labelled records with McNemar's exact test."""
    if route is not None:
        context.registry.resolver.target(route)  # an unknown route is a 404 naming the known ones
    try:
        reports = await context.feedback.reports(route)
    except (RedisError, OSError) as exc:
        raise BrokerUnavailable(f"cannot read the accuracy totals: {type(exc).__name__}") from exc
    return {
        "versions": [r for r in reports if "version" in r],
        "pairs": [r for r in reports if "challenger" in r],
    }
