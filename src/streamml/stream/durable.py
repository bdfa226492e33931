"""A MULTI that answers only once it is durable: on disk (WAITAOF) or on a replica (WAIT).

WAIT and WAITAOF count the writes of the connection they are sent on, and inside a MULTI they do not
block, so they must follow the EXEC on the very same connection. redis-py's pipelines do not offer
that (a transaction pipeline wraps everything it is given in MULTI/EXEC), so this module pins one
connection of the client's pool (of the node that owns the slot, on a cluster) and sends
``MULTI, commands…, EXEC, WAIT`` in one round trip.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from streamml.errors import BrokerUnavailable, DurabilityUnsupported, NotDurable

log = logging.getLogger(__name__)

Durability = Literal["memory", "fsync", "replica"]
Command = tuple[Any, ...]


class DurableWriter:
    """Runs a transaction and waits for the durability it was built for (``fsync`` or ``replica``)."""

    def __init__(self, redis: Redis | RedisCluster, durability: Durability, timeout_ms: int) -> None:
        self.redis = redis
        self.durability = durability
        self.timeout_ms = timeout_ms
        self._fsync_by_config = False
        """True on servers without WAITAOF (Redis < 7.2) whose ``appendfsync always`` already makes
        every reply wait for the fsync."""

    async def check(self, key: str) -> None:
        """Refuse at start-up what cannot be honoured: ``fsync`` on a server without an append-only
        file, or with neither WAITAOF nor ``appendfsync always``; warn when ``replica`` has no replica
        to wait for yet (every request would be answered 503 until one attaches)."""
        if self.durability == "replica":
            replicas = await self._info_field(key, "replication", "connected_slaves")
            if replicas in ("", "0"):
                log.warning(
                    "STREAMML_DURABILITY=replica but the master of %r has no replica connected: requests "
                    "are answered 503 not_durable until one attaches",
                    key,
                )
            return
        if self.durability != "fsync":
            return
        try:
            await self._with_connection(key, [("WAITAOF", 1, 0, 1)])  # errs without an AOF
            return
        except ResponseError as exc:
            message = str(exc).lower()
            if "appendonly" in message:
                raise DurabilityUnsupported(
                    "STREAMML_DURABILITY=fsync needs the server's append-only file: set appendonly yes"
                ) from exc
            if "unknown command" not in message:
                raise
        setting: Any = await self._config_get(key, "appendfsync")
        if setting != "always":
            raise DurabilityUnsupported(
                "STREAMML_DURABILITY=fsync needs WAITAOF (Redis >= 7.2, Valkey >= 8) or a server with "
                f"appendonly yes and appendfsync always; this server has appendfsync {setting}"
            )
        self._fsync_by_config = True

    async def transaction(self, key: str, commands: Sequence[Command]) -> list[Any]:
        """EXEC's replies (raw, as Redis sent them); raises NotDurable when the wait timed out."""
        wait = self._wait_command()
        sent = [("MULTI",), *commands, ("EXEC",), *([wait] if wait else [])]
        try:
            replies = await self._with_connection(key, sent)
        except (ResponseError, RedisError, OSError) as exc:
            await self._refresh_slots(key)
            raise BrokerUnavailable(f"cannot publish to Redis: {type(exc).__name__}") from exc
        executed = replies[len(commands) + 1]
        if isinstance(executed, Exception) or executed is None:
            raise BrokerUnavailable(f"the transaction was refused: {executed}")
        if wait:
            self._require(replies[-1])
        return list(executed)

    def _wait_command(self) -> Command | None:
        if self.durability == "replica":
            return ("WAIT", 1, self.timeout_ms)
        if self.durability == "fsync" and not self._fsync_by_config:
            return ("WAITAOF", 1, 0, self.timeout_ms)
        return None

    def _require(self, reply: Any) -> None:
        if self.durability == "replica" and int(reply) < 1:
            raise NotDurable(f"no replica acknowledged within {self.timeout_ms} ms")
        if self.durability == "fsync" and int(reply[0]) < 1:
            raise NotDurable(f"not fsynced within {self.timeout_ms} ms")

    async def _with_connection(self, key: str, commands: Sequence[Command]) -> list[Any]:
        async with self._pinned(key) as connection:
            await connection.send_packed_command(connection.pack_commands(commands))
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:  # a queued command's error; read the rest all the same
                    replies.append(exc)
        errors = [r for r in replies if isinstance(r, ResponseError)]
        if errors and len(commands) == 1:
            raise errors[0]
        return replies

    @contextlib.asynccontextmanager
    async def _pinned(self, key: str) -> AsyncIterator[AbstractConnection]:
        if isinstance(self.redis, RedisCluster):
            await self.redis.initialize()
            node = self.redis.get_node_from_key(key)
            if node is None:
                raise BrokerUnavailable(f"no cluster node serves the slot of {key!r}")
            connection = node.acquire_connection()
            try:
                yield connection
            except BaseException:
                await connection.disconnect()  # a half-read reply must not reach the next user
                raise
            finally:
                node.release(connection)
        else:
            pool = self.redis.connection_pool
            connection = await pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                yield connection
            except BaseException:
                await connection.disconnect()
                raise
            finally:
                await pool.release(connection)

    async def _info_field(self, key: str, section: str, name: str) -> str:
        [info] = await self._with_connection(key, [("INFO", section)])
        for line in _text(info).splitlines():
            field, _, value = line.partition(":")
            if field == name:
                return value.strip()
        return ""

    async def _config_get(self, key: str, name: str) -> str:
        replies = await self._with_connection(key, [("CONFIG", "GET", name)])
        values = replies[0]
        return _text(values[1]) if values and len(values) > 1 else ""

    async def _refresh_slots(self, key: str) -> None:
        """After a failover the slot's master moved: a plain cluster command on the key follows the
        redirect and updates the client's slot map for the next attempt."""
        if isinstance(self.redis, RedisCluster):
            with contextlib.suppress(RedisError, OSError):
                await self.redis.exists(key)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
