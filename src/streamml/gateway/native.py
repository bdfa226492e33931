"""streamml's own protocol: ``POST /predict_stream`` (queue, answer 202 with where to poll),
``POST /predict`` (wait for the prediction), ``GET /predictions/{id}``; the ``{"data": [records]}``
body and its reader; errors as ``{"error": {"code", "message", "problems"}}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamml.errors import NotFound, UnsupportedMediaType
from streamml.gateway.auth import ApiKey
from streamml.gateway.context import (
    AdmittedKey,
    Context,
    GatewayContext,
    admit,
    error_policy,
    replay_headers,
    stored_context,
)
from streamml.gateway.http_errors import ErrorResponse, error_responses, native_error, shaped_route
from streamml.gateway.intake import check_records, invalid, key_endings, kind_of, parse_json_body
from streamml.gateway.lean import Handler, served_lean_by
from streamml.gateway.submission import Accepted
from streamml.models.schema import InputSchema, ValidatedBatch, as_given
from streamml.output_kinds import PREDICT, PROBA
from streamml.settings import GatewaySettings

ALLOWED_QUERY = frozenset({"model", "output"})
OUTPUTS = frozenset({PREDICT, PROBA})
IDEMPOTENCY_KEY_MAX = 200
MODEL_QUERY = Query(description="Model route, e.g. svm, knn, lightgbm")
OUTPUT_QUERY = Query(
    default=PREDICT,
    description="What to answer: the model's predictions (default), or a classifier's class "
    "probabilities ('proba'), with the classes they stand for.",
    pattern=f"^({PREDICT}|{PROBA})$",
)
IDEMPOTENCY_HEADER = Header(
    default=None,
    alias="Idempotency-Key",
    description="Repeat a request safely: within the retention window the first response is returned "
    "and nothing is published again.",
    max_length=IDEMPOTENCY_KEY_MAX,
)


class PredictRequest(BaseModel):
    """The request body as OpenAPI documents it (read by :func:`read_batch`)."""

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

router = APIRouter(route_class=shaped_route(native_error, error_policy))


# -- the body --------------------------------------------------------------------------------------


def check_envelope(*, content_type: str, query: Iterable[str]) -> None:
    """Refuse what is wrong around the body (415, 422), before it is read. ``query`` holds the names
    of the request's query parameters."""
    unknown = sorted(set(query) - ALLOWED_QUERY)
    if unknown:
        raise invalid(
            f"unknown query parameter {unknown[0]!r}; only 'model' and 'output' are accepted",
            field=unknown[0],
        )
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(
            f"send the body as application/json (got {media_type or 'no content type'!r})"
        )


def read_batch(raw: bytes, schema: InputSchema | None, limits: GatewaySettings) -> ValidatedBatch:
    """The records of a ``{"data": [...]}`` body validated against ``schema``, or a 413/422 naming
    what is wrong. The common case takes the compiled validator; the rest the careful path. A model
    without a signature takes its records as they come (JSON shape and limits checked)."""
    if schema is None:
        return as_given(read_records(raw, limits))
    return quick_batch(raw, schema, limits) or schema.validate_carefully(read_records(raw, limits))


def quick_batch(raw: bytes, schema: InputSchema, limits: GatewaySettings) -> ValidatedBatch | None:
    """The batch when the compiled validator (:meth:`InputSchema.compiled`) takes the body whole,
    else None. It keeps the last of duplicate keys, so, as in :func:`~streamml.gateway.intake.parse_json`,
    its result counts only when the body has exactly as many key endings as the result has keys."""
    validator = schema.compiled(limits.max_records, limits.max_string_length)
    if validator is None:
        return None
    try:
        records: list[dict[str, Any]] = validator.validate_json(raw)["data"]
    except ValidationError:
        return None
    values = sum(map(len, records))
    if key_endings(raw) != 1 + values:
        return None
    return schema.accept_valid(records, values)


def read_records(raw: bytes, limits: GatewaySettings) -> list[Any]:
    """The ``data`` list of a ``{"data": [...]}`` body, or a 413/422 saying what is wrong."""
    parsed = parse_json_body(raw, limits)
    if not isinstance(parsed, dict):
        raise invalid(
            f'the body must be a JSON object {{"data": [...]}}, not {kind_of(parsed)}', field="body"
        )
    extra = sorted(set(parsed) - {"data"})
    if extra:
        raise invalid(f"unknown field {extra[0]!r} in the body; only 'data' is accepted", field=extra[0])
    if "data" not in parsed:
        raise invalid("the body must be an object with a 'data' list of records", field="data")
    data = parsed["data"]
    if not isinstance(data, list):
        raise invalid(f"'data' must be a list of records, not {kind_of(data)}", field="data")
    check_records(data, limits)
    return data


# -- the endpoints ---------------------------------------------------------------------------------


async def _accept(
    request: Request, context: GatewayContext, route: str, key: ApiKey | None, output: str, *, reply: bool
) -> Accepted:
    model = await context.submission.admit(route, key)  # 404/403 before the body is read
    check_envelope(content_type=request.headers.get("content-type", ""), query=request.query_params.keys())
    await context.submission.require_output(model, output)  # 422 before the body is read
    batch = read_batch(await request.body(), await context.submission.schema(model), context.settings)
    return await context.accept(
        model, batch, key, reply=reply, idempotency_key=request.headers.get("idempotency-key"), output=output
    )


async def _queued(
    request: Request, context: GatewayContext, key: ApiKey | None, model: str, output: str
) -> JSONResponse:
    accepted = await _accept(request, context, model, key, output, reply=False)
    return JSONResponse(accepted.as_dict(), status_code=202, headers=replay_headers(accepted))


async def _answered(
    request: Request, context: GatewayContext, key: ApiKey | None, model: str, output: str
) -> JSONResponse:
    accepted = await _accept(request, context, model, key, output, reply=True)
    document = await context.wait(accepted)
    document["missing_features"] = accepted.missing_features
    return JSONResponse(document, headers=replay_headers(accepted))


def _lean(
    respond: Callable[[Request, GatewayContext, ApiKey | None, str, str], Awaitable[JSONResponse]],
) -> Callable[[Request, Handler], Awaitable[Response]]:
    """``respond`` for a request whose query and headers are as the endpoint declares them, without
    FastAPI's dependency resolution (:mod:`streamml.gateway.lean`); FastAPI's handler for any other."""

    async def lean(request: Request, full: Handler) -> Response:
        params, idempotency_key = request.query_params, request.headers.get("idempotency-key")
        model, output = params.get("model"), params.get("output", PREDICT)
        if (
            model is None
            or output not in OUTPUTS
            or (idempotency_key is not None and len(idempotency_key) > IDEMPOTENCY_KEY_MAX)
        ):
            return await full(request)  # FastAPI's validation names what is wrong
        context = stored_context(request)
        return await respond(request, context, await admit(request, context), model, output)

    return lean


@router.post(
    "/predict_stream",
    status_code=202,
    response_model=AcceptedBody,
    responses=ERROR_RESPONSES,
    openapi_extra=BODY_SCHEMA,
)
@served_lean_by(_lean(_queued))
async def predict_stream(
    request: Request,
    context: Context,
    key: AdmittedKey,
    model: str = MODEL_QUERY,
    output: str = OUTPUT_QUERY,
    idempotency_key: str | None = IDEMPOTENCY_HEADER,  # read by _accept; declared for OpenAPI and length
) -> JSONResponse:
    """Validate the records and queue them for prediction; poll ``status_url`` for the result."""
    return await _queued(request, context, key, model, output)


@router.post("/predict", responses=ERROR_RESPONSES, openapi_extra=BODY_SCHEMA)
@served_lean_by(_lean(_answered))
async def predict(
    request: Request,
    context: Context,
    key: AdmittedKey,
    model: str = MODEL_QUERY,
    output: str = OUTPUT_QUERY,
    idempotency_key: str | None = IDEMPOTENCY_HEADER,
) -> JSONResponse:
    """Queue the records and wait for their predictions (504 after the configured timeout; the error of
    a request a worker gave up on as soon as it did)."""
    return await _answered(request, context, key, model, output)


@router.get(
    "/predictions/{request_id}",
    responses=ERROR_RESPONSES | {202: {"description": "Still queued: the body is {'status': 'pending'}."}},
)
async def prediction(context: Context, request_id: str, key: AdmittedKey) -> JSONResponse:
    """The predictions once done (200), ``pending`` while queued (202), ``failed`` with the reason and
    a message once a worker gave up on it (200), 404 if unknown or expired."""
    document = await context.publisher.result(request_id)
    owner = document.pop("owner", "") if document else ""
    if document is None or (key is not None and owner != key.name):
        # Another key's request is reported as unknown: its existence is not ours to reveal.
        raise NotFound(f"no request {request_id!r} (never accepted, or its result expired)")
    if document.get("status") not in ("done", "failed"):
        return JSONResponse({"status": "pending", "request_id": request_id}, status_code=202)
    return JSONResponse(document)
