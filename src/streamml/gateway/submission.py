"""The submission service: the business step between any entry point and the stream.

``submit`` checks the route (and that the caller may use it), validates the records against the
route's model signature, honours an ``Idempotency-Key`` (begin, then finish with the response, or
release when nothing was published), applies back-pressure, and publishes. The HTTP routes, the
producer's ``--via redis`` and the benchmarks all submit through it; none writes an entry by hand.
Nothing here knows HTTP: refusals are domain errors, which the gateway maps to status codes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamml import keys
from streamml.errors import (
    BrokerUnavailable,
    Forbidden,
    IdempotencyConflict,
    InvalidRequest,
    NotDurable,
    Overloaded,
    Problem,
    StreammlError,
)
from streamml.gateway.auth import ApiKey
from streamml.gateway.intake import read_batch
from streamml.models.registry import ModelRegistry
from streamml.models.schema import InputSchema, ValidatedBatch
from streamml.settings import GatewaySettings
from streamml.stream.broker import Broker


@dataclass(frozen=True)
class Accepted:
    """A request in the stream: the id to poll, and which features the model will impute."""

    request_id: str
    stream_id: str
    model: str
    records: int
    missing_features: dict[str, int] = field(default_factory=dict)
    replayed: bool = False
    """True when this is the stored answer to a repeated ``Idempotency-Key`` (nothing was published)."""

    @property
    def status_url(self) -> str:
        return f"/predictions/{self.request_id}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "stream_id": self.stream_id,
            "model": self.model,
            "records": self.records,
            "status_url": self.status_url,
            "missing_features": self.missing_features,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, replayed: bool = False) -> Accepted:
        return cls(
            request_id=data["request_id"],
            stream_id=data["stream_id"],
            model=data["model"],
            records=data["records"],
            missing_features=dict(data.get("missing_features", {})),
            replayed=replayed,
        )


class BacklogGate:
    """Back-pressure: refuse new work while the stream's backlog is over the limit. The reading is
    reused for ``max_age_s`` so a busy gateway asks Redis a few times a second, not per request."""

    def __init__(self, broker: Broker, limit: int, max_age_s: float) -> None:
        self.broker = broker
        self.limit = limit
        self.max_age_s = max_age_s
        self._backlog = 0
        self._read_at = float("-inf")

    async def check(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._read_at >= self.max_age_s:
            self._backlog = await self.broker.backlog()
            self._read_at = loop.time()
        if self._backlog >= self.limit:
            raise Overloaded(
                f"the pipeline is behind ({self._backlog} queued entries, limit {self.limit}); "
                "nothing was published, retry later"
            )


class IdempotencyStore:
    """The first response given to each ``Idempotency-Key``, kept ``ttl_s`` in Redis.

    ``begin`` reserves a key (SET NX) or returns what its first use recorded; ``finish`` stores the
    response; ``release`` frees a key whose request was refused, so it may be used again."""

    def __init__(self, redis: Redis, stream: str, ttl_s: int, broker: Broker | None = None) -> None:
        """With ``broker``, a key is kept under the hash tag of the partition its requests go to."""
        self.redis = redis
        self.stream = stream
        self.ttl_s = ttl_s
        self.broker = broker

    def _name(self, key: str) -> str:
        if self.broker is None:
            return keys.idempotency_key(self.stream, key)
        partition = self.broker.partitions[self.broker.partition_for(key)]
        return keys.idempotency_key(partition.stream, key)

    async def begin(self, key: str, fingerprint: str) -> dict[str, Any] | None:
        """None: the key is ours now, go on; else the record of its first use."""
        name = self._name(key)
        record = orjson.dumps({"state": "pending", "fingerprint": fingerprint})
        try:
            if await self.redis.set(name, record, nx=True, ex=self.ttl_s):
                return None
            existing: Any = await self.redis.get(name)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot reach Redis: {type(exc).__name__}") from exc
        # Expired between SET NX and GET: the client's next attempt will find the key free.
        return dict(orjson.loads(existing)) if existing else {"state": "pending", "fingerprint": fingerprint}

    async def finish(self, key: str, fingerprint: str, response: dict[str, Any]) -> None:
        record = {"state": "done", "fingerprint": fingerprint, "response": response}
        await self._write(key, orjson.dumps(record))

    async def release(self, key: str) -> None:
        await self._write(key, None)

    async def _write(self, key: str, value: bytes | None) -> None:
        name = self._name(key)
        try:
            if value is None:
                await self.redis.delete(name)
            else:
                await self.redis.set(name, value, ex=self.ttl_s)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot reach Redis: {type(exc).__name__}") from exc


class Submission:
    def __init__(
        self, broker: Broker, registry: ModelRegistry, gate: BacklogGate, idempotency: IdempotencyStore
    ) -> None:
        self.broker = broker
        self.registry = registry
        self.gate = gate
        self.idempotency = idempotency

    def require_route(self, route: str, key: ApiKey | None) -> None:
        """An unknown route is refused before anything else (UnknownRoute), then a key that may not
        send to it (Forbidden)."""
        self.registry.target(route)
        if key is not None and not key.may_predict(route):
            raise Forbidden(f"the API key {key.name!r} may not send requests to model {route!r}")

    async def submit(
        self,
        route: str,
        records: Sequence[Any],
        key: ApiKey | None,
        *,
        reply: bool = False,
        idempotency_key: str | None = None,
    ) -> Accepted:
        """Validate, deduplicate, gate and publish one request; every refusal publishes nothing."""
        self.require_route(route, key)
        batch = (await self._schema(route)).validate(records)
        return await self._publish(route, batch, key, reply=reply, idempotency_key=idempotency_key)

    async def submit_json(
        self,
        route: str,
        body: bytes,
        key: ApiKey | None,
        *,
        limits: GatewaySettings,
        reply: bool = False,
        idempotency_key: str | None = None,
    ) -> Accepted:
        """:meth:`submit` for a ``{"data": [...]}`` JSON body, read within ``limits``."""
        self.require_route(route, key)
        batch = read_batch(body, await self._schema(route), limits)
        return await self._publish(route, batch, key, reply=reply, idempotency_key=idempotency_key)

    async def _schema(self, route: str) -> InputSchema:
        return await self.registry.aschema(await self.registry.aresolve(route))

    async def _publish(
        self,
        route: str,
        batch: ValidatedBatch,
        key: ApiKey | None,
        *,
        reply: bool,
        idempotency_key: str | None,
    ) -> Accepted:
        fingerprint = ""
        if idempotency_key is not None:
            fingerprint = hashlib.sha256(route.encode() + orjson.dumps(batch.records)).hexdigest()
            first = await self.idempotency.begin(idempotency_key, fingerprint)
            if first is not None:
                return _replay(first, fingerprint)
        request_id = self.broker.new_request_id(self.broker.partition_for(idempotency_key))
        try:
            await self.gate.check()
            stream_id = await self.broker.publish(
                request_id, route, batch.records, reply=reply, owner=key.name if key else ""
            )
        except NotDurable:
            if idempotency_key is not None:  # published, not confirmed: a retry gets this same request
                unconfirmed = Accepted(request_id, "", route, len(batch.records), batch.missing)
                await self.idempotency.finish(idempotency_key, fingerprint, unconfirmed.as_dict())
            raise
        except StreammlError:
            if idempotency_key is not None:  # nothing was published: the key may be used again
                await self.idempotency.release(idempotency_key)
            raise
        accepted = Accepted(request_id, stream_id, route, len(batch.records), batch.missing)
        if idempotency_key is not None:
            await self.idempotency.finish(idempotency_key, fingerprint, accepted.as_dict())
        return accepted


def _replay(first: dict[str, Any], fingerprint: str) -> Accepted:
    """The answer to a repeated ``Idempotency-Key``: the first one, or why there is none."""
    if first.get("fingerprint") != fingerprint:
        problem = Problem("this Idempotency-Key was used with a different request", field="Idempotency-Key")
        raise InvalidRequest([problem])
    if first.get("state") != "done":
        raise IdempotencyConflict(
            "a request with this Idempotency-Key is still being accepted; retry shortly"
        )
    return Accepted.from_dict(first["response"], replayed=True)
