"""The submission service: the business step between any entry point and the stream.

``admit`` checks the route (and that the caller may use it) and resolves it to the model version that
serves it now, once per request; ``submit`` validates the records against that version's signature
(or takes a batch a protocol's reader validated), honours an ``Idempotency-Key`` (begin, then finish
with the response, or release when nothing was published), applies back-pressure, and publishes. The
HTTP endpoints, the producer's ``--via redis`` and the benchmarks all submit through it; none writes an
entry by hand. Nothing here knows HTTP: refusals are domain errors, which the gateway maps to status
codes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from streamml.errors import (
    BrokerUnavailable,
    Forbidden,
    IdempotencyConflict,
    InvalidRequest,
    NotDurable,
    Overloaded,
    Problem,
    StreammlError,
    UnsupportedOutput,
)
from streamml.gateway.auth import ApiKey
from streamml.models.refs import ModelRef
from streamml.models.registry import ModelRegistry
from streamml.models.schema import InputSchema, ValidatedBatch, as_given
from streamml.monitoring.model_states import LOADED, ModelStates
from streamml.output_kinds import PREDICT
from streamml.rows import Rows
from streamml.stream.coalescing import CoalescedPublisher
from streamml.stream.publisher import Publisher
from streamml.stream.topology import StreamTopology

log = logging.getLogger(__name__)

STATES_MAX_AGE_S = 1.0
"""How long the workers' reported model states are reused before Redis is asked again."""


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

    def __init__(self, publisher: Publisher, limit: int, max_age_s: float) -> None:
        self.publisher = publisher
        self.limit = limit
        self.max_age_s = max_age_s
        self._backlog = 0
        self._read_at = float("-inf")

    async def check(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._read_at >= self.max_age_s:
            self._backlog = await self.publisher.backlog()
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

    def __init__(self, redis: Redis, topology: StreamTopology, ttl_s: int) -> None:
        """A key is kept under the hash tag of the partition its requests go to."""
        self.redis = redis
        self.topology = topology
        self.ttl_s = ttl_s

    def _name(self, key: str) -> str:
        return self.topology.partition_for(key).idempotency_key(key)

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
        self,
        publisher: Publisher,
        registry: ModelRegistry,
        gate: BacklogGate,
        idempotency: IdempotencyStore,
        states: ModelStates | None = None,
    ) -> None:
        self.publisher = publisher
        self.publishing = CoalescedPublisher(publisher)
        """Publishes of requests accepted in the same event-loop turn go in one transaction."""
        self.topology = publisher.topology
        self.registry = registry
        self.gate = gate
        self.idempotency = idempotency
        self.states = states
        """What the workers report of each model version: a request for an output the served version
        lacks is refused before anything is published."""

    async def prepare(self) -> None:
        """Resolve every route and read its model's schema, so the first requests do not wait on the
        registry. A route that cannot be prepared now is logged and left to its first request (which
        answers 503 saying why if the registry still cannot)."""

        async def prepare_route(route: str) -> None:
            try:
                await self.schema(await self.registry.resolver.resolve(route))
            except StreammlError as exc:
                log.warning("route %s is not prepared: %s", route, exc)

        await asyncio.gather(*(prepare_route(route) for route in self.registry.resolver.routes))

    async def admit(self, route: str, key: ApiKey | None) -> ModelRef:
        """The model version that serves ``route`` now. Refused before anything else: an unknown route
        (UnknownRoute), then a key that may not send to it (Forbidden), then a route that does not
        resolve (ModelUnavailable)."""
        self.registry.resolver.target(route)
        if key is not None and not key.may_predict(route):
            raise Forbidden(f"the API key {key.name!r} may not send requests to model {route!r}")
        return await self.registry.resolver.resolve(route)

    async def schema(self, model: ModelRef) -> InputSchema | None:
        """The input schema requests to ``model`` are validated against (None: the model was logged
        without a signature, and its records are taken as they come)."""
        return await self.registry.catalog.schema(model)

    async def require_output(self, model: ModelRef, output: str) -> None:
        """Refuse probabilities of a version the workers report has none (UnsupportedOutput); a version
        no worker has loaded yet is let through (its worker answers the request as failed if so)."""
        if output == PREDICT or self.states is None:
            return
        loads = (await self.states.read(max_age_s=STATES_MAX_AGE_S)).get(model.route, [])
        known = [load for load in loads if load.version == model.version and load.state == LOADED]
        if known and not any(load.proba for load in known):
            raise UnsupportedOutput(
                f"model {model.route!r} ({model.name} v{model.version}) has no predict_proba: "
                "ask for its predictions"
            )

    async def submit(
        self,
        model: ModelRef,
        records: Sequence[Any] | Rows,
        key: ApiKey | None,
        *,
        reply: bool = False,
        idempotency_key: str | None = None,
        output: str = PREDICT,
    ) -> Accepted:
        """Validate the records against ``model``'s schema, deduplicate, gate and publish one request;
        every refusal publishes nothing."""
        schema = await self.schema(model)
        batch = validated(records, schema)
        return await self.submit_batch(
            model, batch, key, reply=reply, idempotency_key=idempotency_key, output=output
        )

    async def submit_batch(
        self,
        model: ModelRef,
        batch: ValidatedBatch,
        key: ApiKey | None,
        *,
        reply: bool = False,
        idempotency_key: str | None = None,
        output: str = PREDICT,
    ) -> Accepted:
        """:meth:`submit` for records a protocol's reader has validated already."""
        await self.require_output(model, output)
        route = model.route
        fingerprint = ""
        if idempotency_key is not None:
            fingerprint = hashlib.sha256(
                route.encode() + output.encode() + _canonical_bytes(batch.rows)
            ).hexdigest()
            first = await self.idempotency.begin(idempotency_key, fingerprint)
            if first is not None:
                return _replay(first, fingerprint)
        request_id = self.topology.new_request_id(self.topology.partition_for(idempotency_key))
        try:
            await self.gate.check()
            stream_id = await self.publishing.publish(
                request_id, route, batch.rows, reply=reply, owner=key.name if key else "", output=output
            )
        except NotDurable:
            if idempotency_key is not None:  # published, not confirmed: a retry gets this same request
                unconfirmed = Accepted(request_id, "", route, len(batch.rows), batch.missing)
                await self.idempotency.finish(idempotency_key, fingerprint, unconfirmed.as_dict())
            raise
        except StreammlError:
            if idempotency_key is not None:  # nothing was published: the key may be used again
                await self.idempotency.release(idempotency_key)
            raise
        accepted = Accepted(request_id, stream_id, route, len(batch.rows), batch.missing)
        if idempotency_key is not None:
            await self.idempotency.finish(idempotency_key, fingerprint, accepted.as_dict())
        return accepted


def validated(records: Sequence[Any] | Rows, schema: InputSchema | None) -> ValidatedBatch:
    """``records`` checked against ``schema`` in the form they came in: columns as columns."""
    if schema is None:
        return as_given(records.records if isinstance(records, Rows) else records)
    if isinstance(records, Rows):
        return schema.validate_columns(records) if records.holds_columns else schema.validate(records.records)
    return schema.validate(records)


def _canonical_bytes(rows: Rows) -> bytes:
    """A request's validated records as bytes, for its fingerprint: a retry sends the same records in
    the same form (a protocol's records come as records or as columns, never one then the other)."""
    return orjson.dumps(rows.records if rows.holds_records else rows.columns)


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
