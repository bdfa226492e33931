"""The Open Inference Protocol (KServe's "V2" REST protocol, spoken by KServe, MLServer and Triton): its
inference requests read into columns (never into one dict per record), and its metadata and response
documents.

A tabular model's input is one named tensor per column, as MLServer's pandas codec sends a frame:
numbers as FP64/FP32/INT64/INT32 (…), categories as BYTES, each of shape ``[n]`` or ``[n, 1]`` for n
rows. The tensors' data come as JSON lists or, with the binary tensor extension Triton's client uses by
default, as raw bytes after a JSON header of ``Inference-Header-Content-Length`` bytes. The output is
one BYTES tensor of labels, ``predictions``.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from streamml.errors import NotFound
from streamml.gateway.context import (
    AdmittedKey,
    Context,
    dependencies_read_directly,
    error_policy,
    replay_headers,
)
from streamml.gateway.http_errors import error_responses, shaped_route
from streamml.gateway.intake import check_rows, parse_json_body
from streamml.gateway.openapi import path_parameters, request_body
from streamml.gateway.operations import readiness, route_readiness
from streamml.gateway.tensors import Chunks, encode_response, invalid, read_tensor, tensor
from streamml.models.refs import ModelRef
from streamml.models.schema import InputSchema
from streamml.output_kinds import PREDICT, PROBA
from streamml.rows import Rows
from streamml.settings import GatewaySettings

OUTPUT = "predictions"
PROBABILITIES = "probabilities"
PROTOCOL_VERSION = "2"

SIGNATURE_DATATYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
}
"""An MLflow signature's column type -> the tensor datatype the metadata announces for it."""


def error_body(status: int, code: str, message: str, problems: list[dict[str, Any]]) -> dict[str, Any]:
    """The protocol's error shape, ``{"error": message}`` (what Triton's client reads); the message
    names the record and field."""
    return {"error": message}


class OpenInferenceErrorResponse(BaseModel):
    """An error under ``/v2``, in the Open Inference Protocol's shape."""

    error: str


def model_metadata(route: str, name: str, version: str, schema: InputSchema | None) -> dict[str, Any]:
    """The route's model: one input tensor per signature column (none listed for a model logged
    without a signature: it takes the columns it is sent), and its outputs."""
    columns = schema.columns if schema is not None else []
    return {
        "name": route,
        "versions": [version],
        "platform": "mlflow",
        "inputs": [
            {"name": c.name, "datatype": SIGNATURE_DATATYPES.get(c.type, "BYTES"), "shape": [-1]}
            for c in columns
        ],
        "outputs": [
            {"name": OUTPUT, "datatype": "BYTES", "shape": [-1]},
            {"name": PROBABILITIES, "datatype": "FP64", "shape": [-1, -1]},
        ],
        "parameters": {"registered_model": name, "registered_version": version},
    }


def infer_response(document: dict[str, Any], route: str, request_id: str | None) -> dict[str, Any]:
    """The answer to an inference request from its result document: the ``predictions`` tensor with the
    model's types (one tensor per column when the model answers rows of columns), or the
    ``probabilities`` tensor with the classes in the response's parameters."""
    model, predictions = document["model"], document["predictions"]
    parameters: dict[str, Any] = {"registered_model": model["name"], "request_id": document["request_id"]}
    if "classes" in document:
        outputs = [tensor(PROBABILITIES, predictions)]
        parameters["classes"] = orjson.dumps(document["classes"]).decode()
    elif predictions and all(isinstance(p, dict) for p in predictions):
        columns = document.get("columns") or list(predictions[0])
        outputs = [tensor(column, [p.get(column) for p in predictions]) for column in columns]
    else:
        outputs = [tensor(OUTPUT, predictions)]
    response: dict[str, Any] = {
        "model_name": route,
        "model_version": model["version"],
        "outputs": outputs,
        "parameters": parameters,
    }
    if request_id is not None:
        response["id"] = request_id
    return response


class InferRequest:
    """An inference request read: its records (as the columns its tensors are), the client's ``id`` to
    echo, what it asks of the model, and whether the output is wanted as binary data (Triton's client
    asks so unless told otherwise)."""

    def __init__(
        self,
        rows: Rows,
        request_id: str | None,
        binary_output: bool,
        output: str = PREDICT,
    ) -> None:
        self.rows = rows
        self.request_id = request_id
        self.binary_output = binary_output
        self.output = output


def read_infer(raw: bytes, header_length: str | None, limits: GatewaySettings) -> InferRequest:
    """The request's records, or a 413/422 naming the tensor (and record) that is wrong."""
    json_part, binary = raw, b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(raw):
            raise invalid("Inference-Header-Content-Length must be the JSON header's size in bytes", "header")
        json_part, binary = raw[: int(header_length)], raw[int(header_length) :]
    body = parse_json_body(json_part, limits)
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise invalid("the body must be an object with a non-empty 'inputs' list of tensors", "inputs")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise invalid("'id' must be a string", "id")
    binary_output = _binary_output(body.get("parameters"), body.get("outputs"))
    output = _asked(body.get("outputs"))
    chunks = Chunks(binary)
    columns = [read_tensor(index, tensor, chunks, limits) for index, tensor in enumerate(body["inputs"])]
    if chunks.left:
        raise invalid(f"{chunks.left} bytes of binary data follow the tensors that declared theirs", "body")
    if len({len(values) for _, values in columns}) != 1:
        raise invalid("every input tensor must hold one value per row, and as many rows", "inputs")
    named = dict(columns)
    if len(named) != len(columns):
        twice = next(name for index, (name, _) in enumerate(columns) if name in dict(columns[:index]))
        raise invalid(f"tensor {twice!r} is given twice: send each column once", twice)
    rows = Rows(columns=named)
    check_rows(rows, limits)
    return InferRequest(rows, request_id, binary_output, output)


def _asked(outputs: Any) -> str:
    """What the request names among the outputs: ``probabilities`` asks for them (alone), anything else
    (or nothing) for the predictions."""
    if outputs is None:
        return PREDICT
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise invalid("'outputs' must be a list of {name} objects", "outputs")
    names = [o.get("name") for o in outputs]
    if PROBABILITIES in names:
        if len(names) > 1:
            raise invalid(f"ask for {PROBABILITIES!r} alone: it is another call of the model", "outputs")
        return PROBA
    return PREDICT


def _binary_output(parameters: Any, outputs: Any) -> bool:
    """Whether the output goes back as binary data: the request's ``binary_data_output``, unless the
    output is asked for by name with its own ``binary_data``."""
    wanted = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    if outputs is None:
        return wanted
    for output in outputs:
        own = output.get("parameters")
        if isinstance(own, dict) and isinstance(own.get("binary_data"), bool):
            wanted = own["binary_data"]
    return wanted


# -- the endpoints ---------------------------------------------------------------------------------

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
INFER_BODY = request_body(
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
V2_ERRORS = error_responses(OpenInferenceErrorResponse)
VERSIONED = "/versions/{version}"
VERSION_PARAMETER = path_parameters("version")
"""The versioned paths' extra parameter (read from ``request.path_params``: one function serves both)."""

router = APIRouter(route_class=shaped_route(error_body, error_policy), tags=["open inference protocol"])


@router.get("/v2")
async def server_metadata() -> dict[str, Any]:
    return {
        "name": "streamml",
        "version": metadata.version("streamml"),
        "extensions": ["binary_tensor_data"],
        "protocol_version": PROTOCOL_VERSION,
    }


@router.get("/v2/health/live")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready", responses=V2_ERRORS | {503: {"description": 'Not ready: {"ready": false}.'}})
async def server_ready(request: Request, context: Context, key: AdmittedKey) -> JSONResponse:
    """Ready as ``GET /ready`` is: Redis reachable, every route resolvable, a worker seen recently."""
    ok, _ = await readiness(context)
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("/v2/models/{route}", responses=V2_ERRORS)
@router.get("/v2/models/{route}" + VERSIONED, responses=V2_ERRORS, openapi_extra=VERSION_PARAMETER)
async def model_metadata_endpoint(
    request: Request, context: Context, route: str, key: AdmittedKey
) -> dict[str, Any]:
    """The route's model: the version it resolves to, one input tensor per signature column."""
    model = await _served(request, context, route, key)
    return model_metadata(route, model.name, model.version, await context.submission.schema(model))


@router.get("/v2/models/{route}/ready", responses=V2_ERRORS)
@router.get("/v2/models/{route}" + VERSIONED + "/ready", responses=V2_ERRORS, openapi_extra=VERSION_PARAMETER)
async def model_ready(request: Request, context: Context, route: str, key: AdmittedKey) -> JSONResponse:
    """Ready when the route resolves to a model version that not every worker failed to load (503 with
    the error otherwise)."""
    model = await _served(request, context, route, key)
    loads = (await context.model_states.read()).get(route, [])
    ok, finding = await route_readiness(context, route, loads)
    body: dict[str, Any] = {"name": route, "version": model.version, "ready": ok}
    if not ok:
        body["error"] = finding
    return JSONResponse(body, status_code=200 if ok else 503)


@router.post("/v2/models/{route}/infer", responses=V2_ERRORS, openapi_extra=INFER_BODY)
@router.post(
    "/v2/models/{route}" + VERSIONED + "/infer",
    responses=V2_ERRORS,
    openapi_extra=INFER_BODY | VERSION_PARAMETER,
)
@dependencies_read_directly
async def infer(request: Request, context: Context, route: str, key: AdmittedKey) -> Response:
    """One inference request: one tensor per feature column in, the ``predictions`` tensor out."""
    model = await _served(request, context, route, key)
    read = read_infer(
        await request.body(), request.headers.get("inference-header-content-length"), context.settings
    )
    accepted, document = await context.predict(
        model, read.rows, key, idempotency_key=request.headers.get("idempotency-key"), output=read.output
    )
    body = infer_response(document, route, read.request_id)
    content, headers = encode_response(body, binary=read.binary_output)
    return Response(content, headers=replay_headers(accepted) | headers)


async def _served(request: Request, context: Context, route: str, key: AdmittedKey) -> ModelRef:
    """The version ``route`` resolves to now; 404 for another version in the path (only the served
    one answers)."""
    model = await context.submission.admit(route, key)
    version = request.path_params.get("version")
    if version is not None and version != model.version:
        raise NotFound(
            f"model {route!r} serves version {model.version} ({model.name}); "
            f"version {version!r} is not served here"
        )
    return model
