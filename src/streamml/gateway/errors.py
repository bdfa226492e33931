"""HTTP errors: the one table from domain exceptions to status codes, and the handlers that answer
with ``{"error": {"code", "message", "problems"}}`` — never a stack trace, never a backing service's
own message."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from streamml.errors import (
    BrokerUnavailable,
    DurabilityUnsupported,
    Forbidden,
    IdempotencyConflict,
    InvalidRequest,
    ModelUnavailable,
    NotDurable,
    NotFound,
    Overloaded,
    PartitionCountMismatch,
    PayloadTooLarge,
    PredictionTimeout,
    Problem,
    RateLimited,
    StreammlError,
    Unauthenticated,
    UnknownRoute,
    UnsupportedMediaType,
)
from streamml.gateway import mlflow_scoring, open_inference

log = logging.getLogger(__name__)

ERROR_STATUS: dict[type[StreammlError], int] = {
    InvalidRequest: 422,
    UnknownRoute: 404,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    IdempotencyConflict: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    RateLimited: 429,
    Overloaded: 429,
    ModelUnavailable: 503,
    BrokerUnavailable: 503,
    PartitionCountMismatch: 503,
    DurabilityUnsupported: 503,
    PredictionTimeout: 504,
}


class ErrorBody(BaseModel):
    code: str
    message: str
    problems: list[dict[str, Any]] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    error: ErrorBody


class MlflowErrorResponse(BaseModel):
    """An error on MLflow's scoring endpoints, in MLflow's shape (with streamml's problems beside)."""

    error_code: str
    message: str
    problems: list[dict[str, Any]] = Field(default_factory=list)


class OpenInferenceErrorResponse(BaseModel):
    """An error under ``/v2``, in the Open Inference Protocol's shape."""

    error: str


def error_responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of an endpoint whose errors have ``model``'s shape."""
    return {code: {"model": model} for code in (401, 403, 404, 409, 413, 415, 422, 429, 503, 504)}


def _error(
    request: Request,
    status: int,
    code: str,
    message: str,
    problems: list[Problem] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The error in the shape the endpoint's protocol uses: MLflow's ``{"error_code", "message"}`` on
    its scoring endpoints, the Open Inference Protocol's ``{"error": message}`` under ``/v2``, else
    streamml's own. The message names the record and field in every shape."""
    body = error_document(request.url.path, status, code, message, [p.as_dict() for p in problems or []])
    return JSONResponse(body, status_code=status, headers=headers)


def error_document(
    path: str, status: int, code: str, message: str, problems: list[dict[str, Any]]
) -> dict[str, Any]:
    """An error answered on ``path``, in the shape of the protocol served there."""
    if path == "/invocations" or (path.startswith("/models/") and path.endswith("/invocations")):
        return mlflow_scoring.error_body(status, message, problems)
    if path == "/v2" or path.startswith("/v2/"):
        return open_inference.error_body(message)
    return {"error": {"code": code, "message": message, "problems": problems}}


def install_error_handlers(
    app: FastAPI,
    *,
    retry_after_s: int,
    observe: Callable[[StreammlError, str | None], None] | None = None,
) -> None:
    """The handlers; ``observe(error, route)`` sees every domain error answered (for the metrics)."""

    @app.exception_handler(StreammlError)
    async def domain_error(request: Request, exc: StreammlError) -> JSONResponse:
        if observe is not None:
            observe(exc, _route_of(request))
        status = next((s for t, s in ERROR_STATUS.items() if isinstance(exc, t)), 500)
        headers = {"Retry-After": str(retry_after_s)} if exc.retry_later else None
        if isinstance(exc, Unauthenticated):
            headers = {"WWW-Authenticate": 'Bearer realm="streamml"'}
        if status >= 500:
            log.warning(
                "request %s: %s %s -> %d: %s",
                _request_id(request),
                request.method,
                request.url.path,
                status,
                exc,
            )
        problems = exc.problems if isinstance(exc, InvalidRequest) else None
        message = str(exc)
        if isinstance(exc, NotDurable):
            message = (
                "the request reached Redis but its durability was not confirmed in time; it may still be "
                "processed: retry with the same Idempotency-Key to get one answer for both"
            )
        elif isinstance(
            exc, BrokerUnavailable | ModelUnavailable | PartitionCountMismatch | DurabilityUnsupported
        ):
            message = "a backing service is unavailable; retry later"  # internals stay in our logs
        return _error(request, status, exc.code, message, problems, headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_problem_from_pydantic(e) for e in exc.errors()]
        if observe is not None:
            observe(InvalidRequest(problems), _route_of(request))
        return _error(
            request,
            422,
            InvalidRequest.code,
            problems[0].message if problems else "invalid request",
            problems,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception(
            "request %s: unhandled error on %s %s", _request_id(request), request.method, request.url.path
        )
        return _error(request, 500, "internal_error", "internal error; it has been logged")


def _route_of(request: Request) -> str | None:
    """The model route a request named: ``?model=`` natively, a path parameter in the protocols."""
    return request.query_params.get("model") or request.path_params.get("route")


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def _problem_from_pydantic(error: Any) -> Problem:
    """Turn FastAPI's location (``body.data.3``) into the record index and field a client needs."""
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "missing" and location == ["data"]:
        return Problem("the body must be an object with a 'data' list of records", field="data")
    if location[:1] == ["data"] and len(location) >= 2 and location[1].isdigit():
        index = int(location[1])
        return Problem(
            f"record {index}: {message.lower()} (each record is an object of feature: value)", index
        )
    if location[:1] == ["query"]:
        return Problem(f"query parameter {location[-1]!r}: {message.lower()}", field=location[-1])
    where = ".".join(location) or "body"
    return Problem(f"{where}: {message.lower()}", field=where)
