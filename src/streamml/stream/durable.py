"""A MULTI that answers only once it is durable: on disk (WAITAOF) or on a replica (WAIT).

WAIT and WAITAOF count the writes of the connection they are sent on, and inside a MULTI they do not
block, so they must follow the EXEC on the very same connection. redis-py's pipelines do not offer
that (a transaction pipeline wraps everything it is given in MULTI/EXEC), so this module pins one
connection of a plain client's pool (on a cluster, the client of the slot's master:
:mod:`streamml.stream.nodes`) and sends ``MULTI, commands…, EXEC, WAIT`` in one round trip.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from streamml.errors import BrokerUnavailable, DurabilityUnsupported, NotDurable

log = logging.getLogger(__name__)

Durability = Literal["memory", "fsync", "replica"]
Command = tuple[Any, ...]


class DurableWriter:
    """Runs a transaction in one round trip and waits for the durability it was built for (``fsync``
    or ``replica``; ``memory`` waits for nothing)."""

    def __init__(self, durability: Durability, timeout_ms: int) -> None:
        self.durability = durability
        self.timeout_ms = timeout_ms
        self._fsync_by_config = False
        """True on servers without WAITAOF (Redis < 7.2) whose ``appendfsync always`` already makes
        every reply wait for the fsync."""

    async def check(self, client: Redis, key: str) -> None:
        """Refuse at start-up what cannot be honoured: ``fsync`` on a server without an append-only
        file, or with neither WAITAOF nor ``appendfsync always``; warn when ``replica`` has no replica
        to wait for yet (every request would be answered 503 until one attaches)."""
        if self.durability == "replica":
            replicas = await _info_field(client, "replication", "connected_slaves")
            if replicas in ("", "0"):
                log.warning(
                    "STREAMML_STREAM_DURABILITY=replica but the master of %r has no replica connected: "
                    "requests are answered 503 not_durable until one attaches",
                    key,
                )
            return
        if self.durability != "fsync":
            return
        try:
            await _pipelined(client, [("WAITAOF", 1, 0, 1)])  # errs without an AOF
            return
        except ResponseError as exc:
            message = str(exc).lower()
            if "appendonly" in message:
                raise DurabilityUnsupported(
                    "STREAMML_STREAM_DURABILITY=fsync needs the server's append-only file: set appendonly yes"
                ) from exc
            if "unknown command" not in message:
                raise
        [(_, raw_setting)] = await _pipelined(client, [("CONFIG", "GET", "appendfsync")])
        setting = _text(raw_setting)
        if setting != "always":
            raise DurabilityUnsupported(
                "STREAMML_STREAM_DURABILITY=fsync needs WAITAOF (Redis >= 7.2, Valkey >= 8) or a server with "
                f"appendonly yes and appendfsync always; this server has appendfsync {setting}"
            )
        self._fsync_by_config = True

    async def transaction(self, client: Redis, commands: Sequence[Command]) -> list[Any]:
        """EXEC's replies (raw, as Redis sent them); raises NotDurable when the wait timed out.
        Connection errors reach the caller as they are."""
        wait = self._wait_command()
        replies = await _pipelined(client, [("MULTI",), *commands, ("EXEC",), *([wait] if wait else [])])
        executed = replies[len(commands) + 1]
        if isinstance(executed, Exception) or executed is None:
            raise BrokerUnavailable(f"the transaction was refused: {executed}")
        failed = next((reply for reply in executed if isinstance(reply, Exception)), None)
        if failed is not None:  # as redis-py's transaction pipeline does: the first command error
            raise failed
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


async def _pipelined(client: Redis, commands: Sequence[Command]) -> list[Any]:
    """The commands in one round trip on one connection of ``client``'s pool, raw replies in order (a
    queued command's error in its place; a lone command's error raised)."""
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(connection.pack_commands(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except ResponseError as exc:  # read the rest all the same
                replies.append(exc)
    except BaseException:
        await connection.disconnect()  # a half-read reply must not reach the connection's next user
        raise
    finally:
        await pool.release(connection)
    if len(commands) == 1 and isinstance(replies[0], ResponseError):
        raise replies[0]
    return replies


async def _info_field(client: Redis, section: str, name: str) -> str:
    [info] = await _pipelined(client, [("INFO", section)])
    for line in _text(info).splitlines():
        field, _, value = line.partition(":")
        if field == name:
            return value.strip()
    return ""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
