"""Hot endpoints served without FastAPI's per-request dependency resolution.

For every request FastAPI walks the endpoint's dependency tree, validates each declared parameter through
pydantic and builds a cache key per dependency: on a one-record ``POST /predict_stream`` that was about a
seventh of the gateway's CPU (``python -m streamml.bench.profile_e2e 1 15``: ``solve_dependencies``,
``request_params_to_args``). The prediction endpoints are declared as FastAPI routes all the same — the
OpenAPI document, and every request that is not the common case, stay FastAPI's — and a lean handler
registered here for an endpoint takes the common request: the parameters present and valid as declared,
read straight from the request. Anything else (a parameter missing or out of its declared range) goes to
FastAPI's own handler, so its validation and error answers are unchanged. An endpoint that declares only
the request, the context, the caller's key and path parameters has nothing for FastAPI to validate and is
always served lean (``context.dependencies_read_directly``). A lean handler runs inside the route's error
shaping (``http_errors.shaped_route``) like the full one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
LeanHandler = Callable[[Request, Handler], Awaitable[Response]]
"""(request, FastAPI's own handler for the route) -> the response; it calls the full handler for any
request it does not take whole."""

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

_LEAN: dict[Callable[..., Any], LeanHandler] = {}


def served_lean_by(handler: LeanHandler) -> Callable[[Endpoint], Endpoint]:
    """Decorate an endpoint (below its router's decorator): requests to it go to ``handler`` first."""

    def register(endpoint: Endpoint) -> Endpoint:
        _LEAN[endpoint] = handler
        return endpoint

    return register


def lean_handler(endpoint: Callable[..., Any], full: Handler) -> Handler | None:
    """The route handler for ``endpoint`` when it has a lean one, else None."""
    lean = _LEAN.get(endpoint)
    if lean is None:
        return None

    async def handle(request: Request) -> Response:
        return await lean(request, full)

    return handle
