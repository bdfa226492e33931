"""The gateway's protections: API keys, per-client rate limits, body limits, strict JSON, headers.

API keys are configured as JSON (``STREAMML_API_KEYS`` or the file ``STREAMML_API_KEYS_FILE``):

    [{"name": "team-a", "key": "sk-...", "routes": ["svm", "knn"]},
     {"name": "dashboard", "sha256": "<hex of the key>", "read_only": true}]

or as a comma-separated list of keys allowed everywhere. Keys are hashed (SHA-256) as soon as they are
read, and a presented key is compared with every hash in constant time (``hmac.compare_digest``), so
neither the plaintext nor timing reveals a key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamml.errors import PayloadTooLarge, RateLimited, Unauthenticated

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


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes
    routes: frozenset[str] | None = None
    """None: every route."""
    read_only: bool = False

    def may_predict(self, route: str) -> bool:
        return not self.read_only and (self.routes is None or route in self.routes)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_api_keys(text: str) -> list[ApiKey]:
    """Keys from JSON (objects with name, key or sha256, routes, read_only) or a comma list."""
    text = text.strip()
    if not text:
        return []
    if not text.startswith("["):
        return [
            ApiKey(f"key-{i + 1}", _digest(k.strip())) for i, k in enumerate(text.split(",")) if k.strip()
        ]
    keys = []
    for index, item in enumerate(json.loads(text)):
        if "sha256" in item:
            digest = bytes.fromhex(item["sha256"])
        elif "key" in item:
            digest = _digest(item["key"])
        else:
            raise ValueError(f"API key {index} has neither 'key' nor 'sha256'")
        routes = item.get("routes")
        keys.append(
            ApiKey(
                name=str(item.get("name", f"key-{index + 1}")),
                digest=digest,
                routes=frozenset(routes) if routes is not None else None,
                read_only=bool(item.get("read_only", False)),
            )
        )
    return keys


def load_api_keys(inline: str | None, path: Path | None) -> list[ApiKey]:
    keys = parse_api_keys(inline or "")
    if path is not None:
        keys += parse_api_keys(path.read_text())
    return keys


class Authenticator:
    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def identify(self, authorization: str | None, x_api_key: str | None) -> ApiKey | None:
        """The caller's key; None when keys are off. Raises Unauthenticated when missing or wrong."""
        if not self.keys:
            return None
        presented = x_api_key
        if authorization:
            scheme, _, credentials = authorization.partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                presented = credentials.strip()
        if not presented:
            raise Unauthenticated("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key'")
        digest = _digest(presented)
        found = None
        for key in self.keys:  # compare with every key, so timing does not tell which one matched
            if hmac.compare_digest(digest, key.digest):
                found = key
        if found is None:
            raise Unauthenticated("the API key is not valid")
        return found


class RateLimiter:
    """Requests per second per client, counted in Redis so every gateway process shares the limit."""

    def __init__(self, redis: Redis, prefix: str, per_second: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.per_second = per_second

    async def check(self, client: str) -> None:
        if self.per_second <= 0:
            return
        window = int(time.time())
        key = f"{self.prefix}:{client}:{window}"
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.expire(key, 2)
                count, _ = await pipe.execute()
        except (RedisError, OSError):
            return  # the limiter fails open; the publish that follows reports Redis being down
        if int(count) > self.per_second:
            raise RateLimited(f"more than {self.per_second} requests per second from this client; slow down")


class BodyLimitMiddleware:
    """413 before a body larger than ``limit`` bytes is read: by Content-Length when declared, else
    (chunked bodies) as soon as the bytes received pass the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _send_error(
                    send, 413, PayloadTooLarge.code, f"the body is larger than {self.limit} bytes"
                )
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
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


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "problems": []}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


_SPACED_KEY_END = re.compile(rb'"\s+:')


def parse_json(body: bytes, max_depth: int) -> tuple[Any, int]:
    """Strict JSON and its nesting depth (counted up to ``max_depth + 1``). Duplicate keys are an error
    (a silent last-wins would hide a client bug). NaN and Infinity parse, so that validation can name
    the record and field that holds them.

    orjson parses first (several times faster than the strict parser). It keeps the last of duplicate
    keys silently, so its result is trusted only when the parsed objects hold as many keys as the body
    has key endings (``":``): every key ends that way once, so a duplicate always makes the body's
    count larger. Anything else — a duplicate, a string value holding a key ending, or a body orjson
    refuses (NaN, integers beyond a double) — goes to the strict parser, which decides."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        value = _strict_json(body)
        return value, _shape(value, max_depth)[0]
    nesting, keys = _shape(value, max_depth)
    endings = body.count(b'":')
    if _SPACED_KEY_END.search(body) is not None:  # '"key" :' too: count with the slower regex
        endings = len(re.findall(rb'"\s*:', body))
    if endings != keys:
        value = _strict_json(body)
    return value, nesting


def _strict_json(body: bytes) -> Any:
    return json.loads(body, object_pairs_hook=_no_duplicates)


def _shape(value: Any, limit: int) -> tuple[int, int]:
    """(nesting depth, keys of every object) in one pass; stops counting once deeper than ``limit``.
    A scalar is one level, so a body of flat records is four: object, list, record, value."""
    if not isinstance(value, (dict, list)):
        return 1, 0
    deepest, keys = 1, 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children: Iterable[Any] = item
        if isinstance(item, dict):
            keys += len(item)
            children = item.values()
        below = level + 1
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, below))
            elif below > deepest:
                deepest = below
        deepest = max(deepest, level)
        if deepest > limit:
            break
    return deepest, keys
