"""HTTP errors: the one table from domain exceptions to status codes, and the route class that answers
every error of a route in its protocol's shape — never a stack trace, never a backing service's own
message.

Each protocol's router is built with :func:`shaped_route` and its error shape (streamml's
``{"error": {"code", "message", "problems"}}``, MLflow's ``{"error_code", "message"}``, the Open
Inference Protocol's ``{"error": message}``), so where an error is answered decides its shape, not
the URL it was asked at.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
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
    PredictionFailed,
    PredictionTimeout,
    Problem,
    RateLimited,
    StreammlError,
    Unauthenticated,
    UnknownRoute,
    UnsupportedMediaType,
    UnsupportedOutput,
)
from streamml.gateway.lean import lean_handler

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
    UnsupportedOutput: 422,
}
FAILED_STATUS = {
    "prediction_failed": 500,
    "model_load_failed": 503,
    "model_not_servable": 503,
    "unknown_model": 503,
    "unsupported_output": 422,
}
"""A request dead-lettered after it was accepted (:class:`PredictionFailed`), by its reason: the model
failed on it, the worker cannot load or reach its model, or it asked for an output the model lacks."""


class ErrorShape(Protocol):
    """A protocol's error body for (status, code, message, problems)."""

    def __call__(
        self, status: int, code: str, message: str, problems: list[dict[str, Any]]
    ) -> dict[str, Any]: ...


def native_error(status: int, code: str, message: str, problems: list[dict[str, Any]]) -> dict[str, Any]:
    """streamml's own shape."""
    return {"error": {"code": code, "message": message, "problems": problems}}


class ErrorBody(BaseModel):
    code: str
    message: str
    problems: list[dict[str, Any]] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_responses(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of an endpoint whose errors have ``model``'s shape."""
    return {code: {"model": model} for code in (401, 403, 404, 409, 413, 415, 422, 429, 503, 504)}


@dataclass(frozen=True)
class ErrorPolicy:
    """What every shaped route needs to answer an error: the ``Retry-After`` it sends, and who counts
    the refusals (the metrics; None when they are off)."""

    retry_after_s: int = 1
    observe: Callable[[StreammlError, str | None], None] | None = None
    """Sees every domain error answered, with the route the request named."""


def domain_error_response(
    request: Request, exc: StreammlError, shape: ErrorShape, *, retry_after_s: int
) -> JSONResponse:
    """The answer to a domain error: its status from the table, ``Retry-After`` when it may pass, and a
    message that never carries a backing service's internals (those go to our log)."""
    status = next((s for t, s in ERROR_STATUS.items() if isinstance(exc, t)), 500)
    if isinstance(exc, PredictionFailed):
        status = FAILED_STATUS.get(exc.reason, 500)
    headers = {"Retry-After": str(retry_after_s)} if exc.retry_later else None
    if isinstance(exc, Unauthenticated):
        headers = {"WWW-Authenticate": 'Bearer realm="streamml"'}
    if status >= 500:
        log.warning(
            "request %s: %s %s -> %d: %s", _request_id(request), request.method, request.url.path, status, exc
        )
    problems = [p.as_dict() for p in exc.problems] if isinstance(exc, InvalidRequest) else []
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
    return JSONResponse(shape(status, exc.code, message, problems), status_code=status, headers=headers)


def invalid_request(exc: RequestValidationError) -> InvalidRequest:
    """FastAPI's own validation error (a query parameter, a header) as a domain error naming the field."""
    return InvalidRequest([_problem_from_pydantic(e) for e in exc.errors()] or [Problem("invalid request")])


def shaped_route(shape: ErrorShape, policy_of: Callable[[Request], ErrorPolicy]) -> type[APIRoute]:
    """A route class whose handler answers every error in ``shape``: domain errors by the table,
    FastAPI's validation errors as 422 naming the field, anything else as a 500 that says only that it
    was logged. ``policy_of`` finds the app's :class:`ErrorPolicy` for a request."""

    class ShapedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            full = super().get_route_handler()
            handler = lean_handler(self.endpoint, full) or full

            async def shaped(request: Request) -> Response:
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    error: StreammlError = invalid_request(exc)
                except StreammlError as exc:
                    error = exc
                except Exception:
                    log.exception(
                        "request %s: unhandled error on %s %s",
                        _request_id(request),
                        request.method,
                        request.url.path,
                    )
                    body = shape(500, "internal_error", "internal error; it has been logged", [])
                    return JSONResponse(body, status_code=500)
                policy = policy_of(request)
                if policy.observe is not None:
                    policy.observe(error, route_of(request))
                return domain_error_response(request, error, shape, retry_after_s=policy.retry_after_s)

            return shaped

    return ShapedRoute


def install_fallback_handlers(app: FastAPI, *, retry_after_s: int) -> None:
    """Errors raised outside every route (a middleware): streamml's own shape."""

    @app.exception_handler(StreammlError)
    async def domain_error(request: Request, exc: StreammlError) -> JSONResponse:
        return domain_error_response(request, exc, native_error, retry_after_s=retry_after_s)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception(
            "request %s: unhandled error on %s %s", _request_id(request), request.method, request.url.path
        )
        return JSONResponse(
            native_error(500, "internal_error", "internal error; it has been logged", []), 500
        )


def route_of(request: Request) -> str | None:
    """The model route a request named: ``?model=`` natively, a path parameter in the protocols."""
    return request.query_params.get("model") or request.path_params.get("route")


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def _problem_from_pydantic(error: Any) -> Problem:
    """Turn FastAPI's location (``query.model``) into the field a client needs."""
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    message = str(error.get("msg", "invalid"))
    if location[:1] in (["query"], ["header"], ["path"]):
        return Problem(f"{location[0]} parameter {location[-1]!r}: {message.lower()}", field=location[-1])
    where = ".".join(location) or "body"
    return Problem(f"{where}: {message.lower()}", field=where)
