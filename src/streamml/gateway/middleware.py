"""ASGI middlewares of the gateway: the body-size limit (before a body is read), the response headers
(security headers, and a request id for the logs), and the HTTP metrics."""
# The body limit raises inside the endpoint's read of the body, so the endpoint's route class answers
# it in its protocol's shape (streamml.gateway.http_errors.shaped_route).

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from streamml.errors import PayloadTooLarge
from streamml.gateway.gateway_metrics import GatewayMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class BodyLimitMiddleware:
    """:class:`PayloadTooLarge` (413) when an endpoint starts reading a body larger than ``limit``
    bytes: at once when the declared Content-Length is over it, else (chunked bodies) as soon as the
    bytes received pass it. An endpoint that refuses a request before reading its body (an unknown
    route, a missing key) answers that instead."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((value for name, value in scope.get("headers", []) if name == b"content-length"), b"")
        over = declared.isdigit() and int(declared) > self.limit
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if over:
                raise PayloadTooLarge(f"the body is larger than {self.limit} bytes")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise PayloadTooLarge(f"the body is larger than {self.limit} bytes")
            return message

        await self.app(scope, limited_receive, send)


class ResponseHeadersMiddleware:
    """Security headers on every response, and a request id: the client's ``X-Request-ID`` when it is
    sane, else a new one; echoed in the response and kept in ``request.state`` for the error logs, so a
    client's report can be found in our logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope.get("path", "") in ("/docs", "/redoc")
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += SECURITY_HEADERS if not docs else SECURITY_HEADERS[:1]
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class MetricsMiddleware:
    """Counts every HTTP request by path template, method and status, and times it. The path template
    (``/predictions/{request_id}``), never the path: a request id must not become a label value."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = scope.get("route")
            handler = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.http_requests.labels(handler, method, str(status)).inc()
            self.metrics.http_duration.labels(handler, method).observe(time.perf_counter() - started)
