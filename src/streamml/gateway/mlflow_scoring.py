"""MLflow's scoring protocol, as ``mlflow models serve`` speaks it: ``POST /invocations`` (the default
route) and ``POST /models/{route}/invocations``, ``GET /ping``, ``GET /version``; its request bodies read
into records, and its error body ``{"error_code", "message"}``.

The four JSON formats MLflow documents for a model with a tabular signature — ``dataframe_split``,
``dataframe_records``, ``instances`` (records), ``inputs`` (records, or columns of values) — with an
optional ``params``, and ``text/csv`` with a header row. Each becomes the same list of records
``POST /predict`` takes, so validation (and its messages, naming record and field) is the native one.
Keys MLflow ignores (anything beside one format key and ``params``) are ignored here too: a body
``mlflow models serve`` accepts must not be refused.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from streamml.errors import InvalidRequest, NotFound, Problem, UnsupportedMediaType
from streamml.gateway.context import (
    AdmittedKey,
    Context,
    dependencies_read_directly,
    error_policy,
    replay_headers,
)
from streamml.gateway.http_errors import error_responses, shaped_route
from streamml.gateway.intake import check_records, check_rows, parse_json_body
from streamml.gateway.openapi import path_parameters, request_body
from streamml.output_kinds import PREDICT, PROBA
from streamml.rows import Rows
from streamml.settings import GatewaySettings

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
JSON, CSV = "application/json", "text/csv"

ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_CONFLICT",
    413: "REQUEST_LIMIT_EXCEEDED",
    415: "BAD_REQUEST",
    422: "INVALID_PARAMETER_VALUE",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
"""HTTP status -> the ``error_code`` MLflow's REST errors use for it (``mlflow.protos.databricks``)."""


def error_body(status: int, code: str, message: str, problems: list[dict[str, Any]]) -> dict[str, Any]:
    """MLflow's error shape, ``{"error_code", "message"}``, with streamml's ``problems`` beside it
    (every record and field that is wrong; MLflow's clients read the first two keys)."""
    return {"error_code": ERROR_CODES.get(status, "INTERNAL_ERROR"), "message": message, "problems": problems}


class MlflowErrorResponse(BaseModel):
    """An error on MLflow's scoring endpoints, in MLflow's shape (with streamml's problems beside)."""

    error_code: str
    message: str
    problems: list[dict[str, Any]] = Field(default_factory=list)


MLFLOW_ERRORS = error_responses(MlflowErrorResponse)
RECORD_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": True}
INVOCATION_BODY = request_body(
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
    **{CSV: {"schema": {"type": "string", "description": "A header row, then one record per row."}}},
)

router = APIRouter(route_class=shaped_route(error_body, error_policy), tags=["mlflow"])


@router.get("/ping", response_class=PlainTextResponse)
async def ping() -> PlainTextResponse:
    """Liveness, as ``mlflow models serve`` answers it: 200, an empty line. (MLflow labels that line
    ``application/json``, which it is not; here it is ``text/plain``. Its clients read the status.)"""
    return PlainTextResponse("\n")


@router.get("/version", response_class=PlainTextResponse)
async def version() -> PlainTextResponse:
    """The MLflow version this gateway speaks the scoring protocol of (MLflow's server answers its own)."""
    return PlainTextResponse(metadata.version("mlflow"))


@router.post("/invocations", responses=MLFLOW_ERRORS, openapi_extra=INVOCATION_BODY)
@router.post(
    "/models/{route}/invocations",
    responses=MLFLOW_ERRORS,
    openapi_extra=INVOCATION_BODY | path_parameters("route"),
)
@dependencies_read_directly
async def invocations(request: Request, context: Context, key: AdmittedKey) -> JSONResponse:
    """MLflow's scoring protocol on the path's ``route``, or on the default route
    (``STREAMML_GATEWAY_DEFAULT_ROUTE``) at ``/invocations``: ``{"predictions": [...]}``, through the
    stream."""
    route = request.path_params.get("route") or context.settings.default_route
    if route is None:
        raise NotFound(
            "POST /invocations serves the route STREAMML_GATEWAY_DEFAULT_ROUTE names, and none is set; "
            "set it, or post to /models/{route}/invocations"
        )
    model = await context.submission.admit(route, key)  # 404/403 before the body is read
    read = read_invocation(await request.body(), request.headers.get("content-type", ""), context.settings)
    accepted, document = await context.predict(
        model, read.records, key, idempotency_key=request.headers.get("idempotency-key"), output=read.output
    )
    served = document["model"]
    headers = replay_headers(accepted) | {
        "X-Model-Name": served["name"],
        "X-Model-Version": served["version"],
    }
    return JSONResponse(answer(document), headers=headers)


def answer(document: dict[str, Any]) -> dict[str, Any]:
    """The body ``mlflow models serve`` would send for these predictions: a model that answered a dict
    of arrays gets one object of lists; probabilities come with the classes they stand for."""
    predictions = document["predictions"]
    columns = document.get("columns")
    if columns is not None:
        predictions = {column: [value[column] for value in predictions] for column in columns}
    body: dict[str, Any] = {"predictions": predictions}
    if "classes" in document:
        body["classes"] = document["classes"]
    return body


PREDICT_METHODS = {"predict": PREDICT, "predict_proba": PROBA}
"""``params.predict_method`` -> what the request asks of its model."""


@dataclass(frozen=True)
class Invocation:
    """An ``/invocations`` request read: its records (as columns when they came as columns), and what
    it asks of the model."""

    records: list[Any] | Rows
    output: str = PREDICT


def read_invocation(raw: bytes, content_type: str, limits: GatewaySettings) -> Invocation:
    """The records of an ``/invocations`` body (and ``params.predict_method``), or a 413/415/422
    naming what is wrong."""
    media_type, _, parameters = content_type.partition(";")
    media_type = media_type.strip().lower()
    charset = parameters.partition("charset=")[2].strip().strip('"').lower()
    if charset not in ("", "utf-8", "utf8"):
        raise UnsupportedMediaType(f"only UTF-8 is accepted (got charset {charset!r})")
    output = PREDICT
    records: list[Any] | Rows
    if media_type == CSV:
        records = _csv_records(raw)
    elif media_type == JSON:
        body = parse_json_body(raw, limits)
        records = _json_records(body)
        output = _predict_method(body.get("params") or {})
    else:
        raise UnsupportedMediaType(
            f"send the body as {JSON} or {CSV}, as to mlflow models serve (got {media_type or 'none'!r})"
        )
    if isinstance(records, Rows):
        check_rows(records, limits)
    else:
        check_records(records, limits)
    return Invocation(records, output)


def _predict_method(params: dict[str, Any]) -> str:
    method = params.get("predict_method", "predict")
    if method not in PREDICT_METHODS:
        raise _invalid(
            f"params.predict_method {method!r} is not one of {', '.join(PREDICT_METHODS)}",
            "params.predict_method",
        )
    return PREDICT_METHODS[method]


def _invalid(message: str, field: str) -> InvalidRequest:
    return InvalidRequest([Problem(message, field=field)])


def _json_records(body: Any) -> list[Any] | Rows:
    if not isinstance(body, dict):
        raise _invalid(f"the body must be a JSON object with one of {', '.join(FORMATS)}", "body")
    present = [name for name in FORMATS if name in body]
    if len(present) != 1:
        found = f"got {', '.join(present)}" if present else f"got keys {sorted(body)[:5]}"
        raise _invalid(f"the body must hold exactly one of {', '.join(FORMATS)} ({found})", "body")
    [name] = present
    if not isinstance(body.get("params", {}), dict):
        raise _invalid("'params' must be an object of parameter: value", "params")
    value = body[name]
    if name == "dataframe_split":
        return _split_columns(value)
    if name == "inputs" and isinstance(value, dict):
        return _columns(value, name)
    if not isinstance(value, list):
        raise _invalid(f"'{name}' must be a list of records (objects of feature: value)", name)
    return value


def _split_columns(split: Any) -> Rows:
    """``{"columns": [...], "data": [[...], ...]}`` (pandas' split orient; ``index`` is ignored), read
    into columns: the rows are transposed, never made one dict each."""
    if not isinstance(split, dict):
        raise _invalid("'dataframe_split' must be an object with 'columns' and 'data'", "dataframe_split")
    columns, rows = split.get("columns"), split.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise _invalid("'dataframe_split.columns' must be a list of feature names", "dataframe_split.columns")
    if not isinstance(rows, list):
        raise _invalid("'dataframe_split.data' must be a list of rows", "dataframe_split.data")
    width = len(columns)
    for index, row in enumerate(rows):
        if type(row) is not list or len(row) != width:
            raise InvalidRequest(
                [
                    Problem(
                        f"record {index}: a row of 'dataframe_split.data' must be a list of "
                        f"{len(columns)} values, one per column",
                        record=index,
                        field="dataframe_split.data",
                    )
                ]
            )
    if not columns or not rows:
        return Rows(records=[{} for _ in rows])  # nothing to transpose: the schema says what is missing
    # a name given twice keeps its last column, as a record built from the row would
    return Rows(columns=dict(zip(columns, map(list, zip(*rows, strict=True)), strict=True)))


def _columns(columns: dict[str, Any], name: str) -> Rows:
    """``{"feature": [values...], ...}``: one list per feature, all as long."""
    lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
    if -1 in lengths or len(lengths) > 1:
        raise _invalid(f"'{name}' as columns must map every feature to a list of values, all as long", name)
    return Rows(columns=columns) if columns else Rows(records=[])


def _csv_records(raw: bytes) -> list[Any]:
    """A header row of feature names, then one record per row. An empty field is a missing value;
    a number is read as one (validation then says which field wants which type)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("the CSV is not UTF-8", "body") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise _invalid("the CSV needs a header row of feature names", "body")
    records = []
    for index, row in enumerate(reader):
        if not row:
            continue
        if len(row) != len(header):
            raise InvalidRequest(
                [Problem(f"record {index}: {len(row)} fields for {len(header)} columns", record=index)]
            )
        records.append(
            {
                name: _csv_value(value)
                for name, value in zip(header, row, strict=True)
                if value not in NA_VALUES
            }
        )
    return records


NA_VALUES = frozenset(
    {
        *("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"),
        *("<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"),
    }
)
"""What pandas' ``read_csv`` (and so ``mlflow models serve``) reads as a missing value."""


def _csv_value(text: str) -> Any:
    """A number where the text is one (finite), else the text."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if number - number == 0 else text  # inf and nan stay text: validation names them
