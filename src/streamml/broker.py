"""The request stream and its keys in Redis: publish, consumer group, read, ack, results, status.

One stream entry per accepted request (it may carry many records), with fields:

    v            message format version (keys.MESSAGE_FORMAT_VERSION)
    request_id   the id the client polls with
    route        model route, e.g. "svm"
    records      JSON list of records, keys already normalised to the signature's names
    accepted_ms  gateway acceptance time, epoch milliseconds (latency is measured from here)
    reply        "1" when a client waits synchronously (POST /predict)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from streamml import keys
from streamml.errors import BrokerUnavailable
from streamml.settings import StreamSettings

PENDING = b'{"status":"pending"}'


class InvalidEntry(ValueError):
    """A stream entry that is not a well-formed request (written by something other than our gateway)."""


@dataclass(frozen=True)
class Entry:
    """One request read from the stream."""

    stream_id: str
    request_id: str
    route: str
    records: list[dict[str, Any]]
    accepted_ms: float
    reply: bool
    owner: str = ""
    """Name of the API key that sent the request ("" without keys); only it may read the result."""


def decode_entry(stream_id: str, fields: dict[bytes, bytes]) -> Entry:
    try:
        records = orjson.loads(fields[b"records"])
        if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
            raise InvalidEntry("'records' is not a non-empty JSON list of objects")
        return Entry(
            stream_id=stream_id,
            request_id=fields[b"request_id"].decode(),
            route=fields[b"route"].decode(),
            records=records,
            accepted_ms=float(fields.get(b"accepted_ms", b"0")),
            reply=fields.get(b"reply") == b"1",
            owner=fields.get(b"owner", b"").decode(),
        )
    except KeyError as exc:
        raise InvalidEntry(f"missing field {exc.args[0]!r}") from exc
    except (orjson.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, InvalidEntry):
            raise
        raise InvalidEntry(f"unreadable entry: {exc}") from exc


def now_ms() -> float:
    return time.time() * 1000.0


class Broker:
    """Every Redis operation of the pipeline, on one client. Errors reaching Redis become
    :class:`BrokerUnavailable` where a caller must answer a client."""

    def __init__(self, redis: Redis, streams: StreamSettings) -> None:
        self.redis = redis
        self.streams = streams
        self.stream = streams.stream
        self.group = streams.group

    # -- gateway side --------------------------------------------------------------------------

    async def publish(
        self,
        request_id: str,
        route: str,
        records: Sequence[dict[str, Any]],
        *,
        reply: bool = False,
        owner: str = "",
    ) -> str:
        """Record the request as pending and append it to the stream, atomically (MULTI)."""
        fields: Any = {
            "v": keys.MESSAGE_FORMAT_VERSION,
            "request_id": request_id,
            "route": route,
            "records": orjson.dumps(records),
            "accepted_ms": f"{now_ms():.3f}",
        }
        if reply:
            fields["reply"] = "1"
        if owner:
            fields["owner"] = owner
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(
                    keys.result_key(self.stream, request_id),
                    orjson.dumps({"status": "pending", "owner": owner}) if owner else PENDING,
                    ex=self.streams.result_ttl_s,
                    nx=True,
                )
                pipe.xadd(self.stream, fields)
                replies: Any = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot publish to Redis: {type(exc).__name__}") from exc
        stream_id = replies[1]
        return stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)

    async def begin_idempotent(self, key: str, fingerprint: str, ttl_s: int) -> dict[str, Any] | None:
        """Reserve an idempotency key. None: it is ours, go on; else the record of its first use."""
        name = keys.idempotency_key(self.stream, key)
        record = orjson.dumps({"state": "pending", "fingerprint": fingerprint})
        try:
            if await self.redis.set(name, record, nx=True, ex=ttl_s):
                return None
            existing: Any = await self.redis.get(name)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot reach Redis: {type(exc).__name__}") from exc
        # Expired between SET NX and GET: treat as first use on the next attempt.
        return dict(orjson.loads(existing)) if existing else {"state": "pending", "fingerprint": fingerprint}

    async def finish_idempotent(
        self, key: str, fingerprint: str, response: dict[str, Any] | None, ttl_s: int
    ) -> None:
        """Store the response given to a key's first use (or release the key when it failed)."""
        name = keys.idempotency_key(self.stream, key)
        try:
            if response is None:
                await self.redis.delete(name)
            else:
                record = {"state": "done", "fingerprint": fingerprint, "response": response}
                await self.redis.set(name, orjson.dumps(record), ex=ttl_s)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot reach Redis: {type(exc).__name__}") from exc

    async def result(self, request_id: str) -> dict[str, Any] | None:
        try:
            raw: Any = await self.redis.get(keys.result_key(self.stream, request_id))
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(f"cannot read from Redis: {type(exc).__name__}") from exc
        return None if raw is None else dict(orjson.loads(raw))

    async def live_workers(self, within_s: float) -> list[str]:
        members: Any = await self.redis.zrangebyscore(
            keys.workers_heartbeat_key(self.stream), time.time() - within_s, "+inf"
        )
        return [m.decode() for m in members]

    # -- worker side ---------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the group from the start of the stream (id 0), so nothing published before the
        first worker is skipped. MKSTREAM creates the stream if the gateway has not yet."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(
        self, consumer: str, count: int, block_ms: int | None, *, after: str = ">"
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        """New entries (``after=">"``), or this consumer's own pending entries after an id (history
        reads never block)."""
        history = after != ">"
        try:
            reply: Any = await self.redis.xreadgroup(
                self.group,
                consumer,
                {self.stream: after},
                count=count,
                block=None if history else block_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                raise RuntimeError(
                    f"consumer group {self.group!r} on stream {self.stream!r} is gone (was the stream "
                    "deleted?); restart the worker to recreate it"
                ) from exc
            raise
        if not reply:
            return []
        return [(as_text(sid), fields) for sid, fields in reply[0][1] if fields]

    async def heartbeat(self, consumer: str) -> None:
        await self.redis.zadd(keys.workers_heartbeat_key(self.stream), {consumer: time.time()})

    async def forget_worker(self, consumer: str) -> None:
        """Remove a stopped consumer from the heartbeat set and, when it holds nothing, the group."""
        await self.redis.zrem(keys.workers_heartbeat_key(self.stream), consumer)
        pending: Any = await self.redis.xpending_range(
            self.stream, self.group, "-", "+", 1, consumername=consumer
        )
        if not pending:
            await self.redis.xgroup_delconsumer(self.stream, self.group, consumer)

    async def trim_acknowledged(self) -> int:
        """Remove entries that every group has acknowledged, and nothing else.

        For each group, everything below its oldest pending entry (or, with nothing pending, up to
        its last delivered id) is acknowledged; entries after the last delivered id are unread. The
        stream is trimmed (XTRIM MINID, Redis >= 6.2) to the smallest such bound over all groups."""
        groups: Any = await self.redis.xinfo_groups(self.stream)
        if not groups:
            return 0
        bounds = []
        for group in groups:
            name = as_text(group["name"])
            summary: Any = await self.redis.xpending(self.stream, name)
            if summary["pending"]:
                bounds.append(as_text(summary["min"]))
            else:
                bounds.append(next_id(as_text(group["last-delivered-id"])))
        minimum = min(bounds, key=id_key)
        removed: Any = await self.redis.xtrim(self.stream, minid=minimum, approximate=False)
        return int(removed)

    async def backlog(self) -> int:
        """Entries in the request stream: unread, pending, or acknowledged but not yet trimmed."""
        length: Any = await self.redis.xlen(self.stream)
        return int(length)

    # -- operators -----------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Stream length, the group's lag and pending count, consumers and their idle time."""
        out: dict[str, Any] = {
            "stream": self.stream,
            "length": await self.redis.xlen(self.stream),
            "results_stream": self.streams.results_stream,
            "results_length": await self.redis.xlen(self.streams.results_stream),
            "dead_letters": await self.redis.xlen(keys.dead_letter_stream(self.stream)),
            "groups": [],
        }
        try:
            groups: Any = await self.redis.xinfo_groups(self.stream)
        except ResponseError:
            groups = []
        for group in groups:
            name = as_text(group["name"])
            consumers: Any = await self.redis.xinfo_consumers(self.stream, name)
            out["groups"].append(
                {
                    "name": name,
                    "pending": group["pending"],
                    "lag": group.get("lag"),
                    "last_delivered_id": as_text(group["last-delivered-id"]),
                    "consumers": [
                        {"name": as_text(c["name"]), "pending": c["pending"], "idle_ms": c["idle"]}
                        for c in consumers
                    ],
                }
            )
        if out["groups"] and out["groups"][0]["lag"] is None:
            # Redis < 7 has no "lag" in XINFO GROUPS: count the entries after the last delivered id.
            for group in out["groups"]:
                group["lag"] = await self._lag(group["last_delivered_id"])
        return out

    async def _lag(self, last_delivered_id: str) -> int:
        """Entries not yet delivered to the group (bounded scan; Redis 7 reports it directly)."""
        lag = 0
        start = f"({last_delivered_id}"
        while True:
            batch: Any = await self.redis.xrange(self.stream, min=start, max="+", count=10_000)
            lag += len(batch)
            if len(batch) < 10_000:
                return lag
            start = f"({as_text(batch[-1][0])}"


def as_text(value: bytes | str) -> str:
    """Redis replies arrive as bytes; ids and names are wanted as text."""
    return value.decode() if isinstance(value, bytes) else value


def next_id(stream_id: str) -> str:
    """The smallest stream id after ``stream_id``."""
    ms, _, seq = stream_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def id_key(stream_id: str) -> tuple[int, int]:
    """Sort key of a stream id (ids compare numerically, not as text)."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
