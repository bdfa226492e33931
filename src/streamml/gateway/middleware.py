"""The gateway's ASGI middleware: the body-size limit (before a body is read), the response headers
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

_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9_\-]{1,64}")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class GatewayMiddleware:
    """What every HTTP request passes through, in one ASGI layer (three layers cost three calls and
    closures per request):

    - the body limit: :class:`PayloadTooLarge` (413) when an endpoint starts reading a body larger than
      ``limit`` bytes: at once when the declared Content-Length is over it, else (chunked bodies) as soon
      as the bytes received pass it. An endpoint that refuses a request before reading its body (an
      unknown route, a missing key) answers that instead;
    - security headers on every response, and a request id: the client's ``X-Request-ID`` when it is
      sane, else a new one; echoed in the response and kept in ``request.state`` for the error logs, so
      a client's report can be found in our logs;
    - with ``metrics``, every request counted by path template, method and status, and timed. The path
      template (``/predictions/{request_id}``), never the path: a request id must not become a label
      value."""

    def __init__(self, app: ASGIApp, *, limit: int, metrics: GatewayMetrics | None = None) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        declared, given = b"", b""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value
            elif name == b"x-request-id":
                given = value
        request_id = given.decode("latin-1") if _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        docs = scope.get("path", "") in ("/docs", "/redoc")
        status = 500

        async def answered(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers += SECURITY_HEADERS if not docs else SECURITY_HEADERS[:1]
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        # A declared length within the limit needs no watching: the server reads exactly that many bytes.
        within = declared.isdigit() and int(declared) <= self.limit
        try:
            await self.app(scope, receive if within else self._limited(receive, declared), answered)
        finally:
            if self.metrics is not None:
                self._observe(self.metrics, scope, status, time.perf_counter() - started)

    def _limited(self, receive: Receive, declared: bytes) -> Receive:
        over, limit = declared.isdigit(), self.limit  # declared and not within: over the limit
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if over:
                raise PayloadTooLarge(f"the body is larger than {limit} bytes")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"the body is larger than {limit} bytes")
            return message

        return limited_receive

    def _observe(self, metrics: GatewayMetrics, scope: Scope, status: int, seconds: float) -> None:
        """Count and time the request, with the metrics' children kept per label set (``labels()`` is a
        lock and a dict lookup per call)."""
        handler = getattr(scope.get("route"), "path", None) or "unmatched"
        method = scope.get("method", "")
        counted = self._counted.get((handler, method, status))
        if counted is None:
            counted = self._counted[(handler, method, status)] = metrics.http_requests.labels(
                handler, method, str(status)
            )
        timed = self._timed.get((handler, method))
        if timed is None:
            timed = self._timed[(handler, method)] = metrics.http_duration.labels(handler, method)
        counted.inc()
        timed.observe(seconds)
