"""Who may call the gateway: API keys, and the per-client rate limit.

API keys are configured as JSON (``STREAMML_GATEWAY_API_KEYS``, or the file
``STREAMML_GATEWAY_API_KEYS_FILE``):

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
import time
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamml.errors import RateLimited, Unauthenticated


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
