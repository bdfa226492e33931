"""Endpoints in the protocols clients already speak: MLflow's scoring protocol (``/invocations``,
``/ping``, ``/version``) and the Open Inference Protocol (``/v2/...``). Each reads its protocol's body
into records and then does what ``POST /predict`` does — validation, the stream, micro-batching, the
version-stamped result — and answers in its protocol's shape (errors too: see
:mod:`streamml.gateway.errors`). Auth and rate limits are the native endpoints'; only the liveness
probes (``/ping``, ``/v2/health/live``) and ``/version`` answer without a key, as ``/health`` does.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from streamml.errors import NotFound
from streamml.gateway.errors import MlflowErrorResponse, OpenInferenceErrorResponse, error_responses
from streamml.gateway.mlflow_scoring import FORMATS, read_invocation
from streamml.gateway.open_inference import (
    PROTOCOL_VERSION,
    encode_response,
    infer_response,
    model_metadata,
    read_infer,
)
from streamml.gateway.routes import AdmittedKey, predict_records, readiness
from streamml.models.registry import ModelRef, ModelRegistry
from streamml.settings import GatewaySettings

router = APIRouter()


def _request_body(json_schema: dict[str, Any], **other: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI ``requestBody`` (as ``openapi_extra``): JSON with ``json_schema``, and ``other``
    media types (the endpoints read their bodies themselves)."""
    content = {"application/json": {"schema": json_schema}} | other
    return {"requestBody": {"required": True, "content": content}}


RECORD_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": True}
INVOCATION_BODY = _request_body(
    {
        "type": "object",
        "description": f"Exactly one of {', '.join(FORMATS)}, as to `mlflow models serve`.",
        "properties": {
            "dataframe_split": {
                "type": "object",
                "required": ["columns", "data"],
                "properties": {
                    "columns": {"type": "array", "items": {"type": "string"}},
                    "data": {"type": "array", "items": {"type": "array"}},
                    "index": {"type": "array"},
                },
            },
            "dataframe_records": {"type": "array", "items": RECORD_SCHEMA},
            "instances": {"type": "array", "items": RECORD_SCHEMA},
            "inputs": {
                "oneOf": [
                    {"type": "array", "items": RECORD_SCHEMA},
                    {"type": "object", "additionalProperties": {"type": "array"}},
                ]
            },
            "params": {"type": "object"},
        },
    },
    **{"text/csv": {"schema": {"type": "string", "description": "A header row, then one record per row."}}},
)
TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "examples": ["FP64", "INT64", "BYTES"]},
        "data": {"type": "array"},
        "parameters": {"type": "object"},
    },
}
INFER_BODY = _request_body(
    {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "inputs": {"type": "array", "minItems": 1, "items": TENSOR_SCHEMA},
            "outputs": {"type": "array", "items": {"type": "object"}},
            "parameters": {"type": "object"},
        },
    }
)
VERSIONED = "/versions/{version}"
MLFLOW_ERRORS = error_responses(MlflowErrorResponse)
V2: dict[str, Any] = {
    "responses": error_responses(OpenInferenceErrorResponse),
    "tags": ["open inference protocol"],
}


def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry  # type: ignore[no-any-return]


def _settings(request: Request) -> GatewaySettings:
    return request.app.state.gateway_settings  # type: ignore[no-any-return]


# -- MLflow's scoring protocol ---------------------------------------------------------------------


@router.get("/ping", response_class=PlainTextResponse, tags=["mlflow"])
async def ping() -> PlainTextResponse:
    """Liveness, as ``mlflow models serve`` answers it: 200, an empty line. (MLflow labels that line
    ``application/json``, which it is not; here it is ``text/plain``. Its clients read the status.)"""
    return PlainTextResponse("\n")


@router.get("/version", response_class=PlainTextResponse, tags=["mlflow"])
async def version() -> PlainTextResponse:
    """The MLflow version this gateway speaks the scoring protocol of (MLflow's server answers its own)."""
    return PlainTextResponse(metadata.version("mlflow"))


@router.post("/invocations", responses=MLFLOW_ERRORS, openapi_extra=INVOCATION_BODY, tags=["mlflow"])
async def invocations(request: Request, response: Response, key: AdmittedKey) -> JSONResponse:
    """MLflow's scoring protocol on the default route (``STREAMML_GATEWAY_DEFAULT_ROUTE``):
    ``{"predictions": [...]}``, through the stream."""
    route = _settings(request).default_route
    if route is None:
        raise NotFound(
            "POST /invocations serves the route STREAMML_GATEWAY_DEFAULT_ROUTE names, and none is set; "
            "set it, or post to /models/{route}/invocations"
        )
    return await _invoke(request, response, route, key)


@router.post(
    "/models/{route}/invocations", responses=MLFLOW_ERRORS, openapi_extra=INVOCATION_BODY, tags=["mlflow"]
)
async def route_invocations(
    request: Request, response: Response, route: str, key: AdmittedKey
) -> JSONResponse:
    """MLflow's scoring protocol on ``route``."""
    return await _invoke(request, response, route, key)


async def _invoke(request: Request, response: Response, route: str, key: AdmittedKey) -> JSONResponse:
    request.app.state.submission.require_route(route, key)  # 404/403 before the body is read
    records = read_invocation(
        await request.body(), request.headers.get("content-type", ""), _settings(request)
    )
    document = await predict_records(request, response, route, records, key)
    model = document["model"]
    headers = _carried(response) | {"X-Model-Name": model["name"], "X-Model-Version": model["version"]}
    return JSONResponse({"predictions": document["predictions"]}, headers=headers)


# -- the Open Inference Protocol (V2) --------------------------------------------------------------


@router.get("/v2", tags=["open inference protocol"])
async def server_metadata() -> dict[str, Any]:
    return {
        "name": "streamml",
        "version": metadata.version("streamml"),
        "extensions": ["binary_tensor_data"],
        "protocol_version": PROTOCOL_VERSION,
    }


@router.get("/v2/health/live", tags=["open inference protocol"])
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/v2/health/ready",
    responses=V2["responses"] | {503: {"description": 'Not ready: {"ready": false}.'}},
    tags=V2["tags"],
)
async def server_ready(request: Request, key: AdmittedKey) -> JSONResponse:
    """Ready as ``GET /ready`` is: Redis reachable, every route resolvable, a worker seen recently."""
    ok, _ = await readiness(request)
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("/v2/models/{route}", **V2)
async def model_metadata_endpoint(request: Request, route: str, key: AdmittedKey) -> dict[str, Any]:
    """The route's model: the version it resolves to, one input tensor per signature column."""
    return await _metadata(request, route, key, None)


@router.get("/v2/models/{route}" + VERSIONED, **V2)
async def versioned_model_metadata(
    request: Request, route: str, version: str, key: AdmittedKey
) -> dict[str, Any]:
    """The same, when ``version`` is the one the route resolves to (else 404)."""
    return await _metadata(request, route, key, version)


async def _metadata(request: Request, route: str, key: AdmittedKey, version: str | None) -> dict[str, Any]:
    ref = await _served(request, route, key, version)
    return model_metadata(route, ref.name, ref.version, await _registry(request).aschema(ref))


@router.get("/v2/models/{route}/ready", **V2)
async def model_ready(request: Request, route: str, key: AdmittedKey) -> dict[str, Any]:
    """Ready when the route resolves to a model version."""
    ref = await _served(request, route, key, None)
    return {"name": route, "version": ref.version, "ready": True}


@router.get("/v2/models/{route}" + VERSIONED + "/ready", **V2)
async def versioned_model_ready(
    request: Request, route: str, version: str, key: AdmittedKey
) -> dict[str, Any]:
    ref = await _served(request, route, key, version)
    return {"name": route, "version": ref.version, "ready": True}


@router.post("/v2/models/{route}/infer", openapi_extra=INFER_BODY, **V2)
async def infer(request: Request, response: Response, route: str, key: AdmittedKey) -> Response:
    """One inference request: one tensor per feature column in, the ``predictions`` tensor out."""
    return await _infer(request, response, route, key, None)


@router.post("/v2/models/{route}" + VERSIONED + "/infer", openapi_extra=INFER_BODY, **V2)
async def versioned_infer(
    request: Request, response: Response, route: str, version: str, key: AdmittedKey
) -> Response:
    """The same, when ``version`` is the one the route resolves to (else 404)."""
    return await _infer(request, response, route, key, version)


async def _infer(
    request: Request, response: Response, route: str, key: AdmittedKey, version: str | None
) -> Response:
    await _served(request, route, key, version)
    read = read_infer(
        await request.body(), request.headers.get("inference-header-content-length"), _settings(request)
    )
    document = await predict_records(request, response, route, read.records, key)
    model = document["model"]
    body = infer_response(
        route,
        model["version"],
        model["name"],
        read.request_id,
        document["predictions"],
        document["request_id"],
    )
    content, headers = encode_response(body, binary=read.binary_output)
    return Response(content, headers=_carried(response) | headers)


def _carried(response: Response) -> dict[str, str]:
    """The headers the endpoint set on FastAPI's response (which a returned response does not get)."""
    return {name: value for name, value in response.headers.items() if name == "idempotent-replayed"}


async def _served(request: Request, route: str, key: AdmittedKey, version: str | None) -> ModelRef:
    """The version ``route`` resolves to now; 404 for another version (only the served one answers)."""
    request.app.state.submission.require_route(route, key)
    ref = await _registry(request).aresolve(route)
    if version is not None and version != ref.version:
        raise NotFound(
            f"model {route!r} serves version {ref.version} ({ref.name}); "
            f"version {version!r} is not served here"
        )
    return ref
