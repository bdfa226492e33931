"""Commands packed in C: the bytes Redis receives, and what it answers, are those of redis-py's own packer."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from streamml.stream.wire import packed_in_c, redis_from_url

COMMANDS = [
    ("XADD", "s", "MAXLEN", "~", 1000, "*", "request_id", "r-1", "latency_ms", 1.25, "label", "héllo"),
    ("SET", "k", b"\x00\xff" * 300, "PX", 3_600_000),
    ("CONFIG GET", "maxmemory"),  # a two-word command name is sent as two arguments
    ("SET", "k", memoryview(b"view")),
    ("SET", "k", bytearray(b"array")),
    ("SET", "k", 2**70),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c[0]))
def test_packed_in_c_sends_the_bytes_of_redis_pys_own_packer(command: tuple[Any, ...]) -> None:
    python, in_c = Connection(), packed_in_c(Connection)()
    assert b"".join(in_c.pack_command(*command)) == b"".join(python.pack_command(*command))


def test_a_value_redis_cannot_take_is_a_data_error_as_before() -> None:
    with pytest.raises(DataError):
        packed_in_c(Connection)().pack_command("SET", "k", None)  # type: ignore[arg-type]


def test_every_connection_kind_gets_one_packed_class_of_its_own() -> None:
    for base in (Connection, SSLConnection, UnixDomainSocketConnection):
        packed = packed_in_c(base)
        assert packed is not base
        assert issubclass(packed, base)
        assert packed_in_c(base) is packed


async def test_a_client_from_a_url_round_trips_through_real_redis(redis_url: str) -> None:
    client = redis_from_url(redis_url)
    try:
        assert client.connection_pool.connection_class is packed_in_c(Connection)
        await client.set("wire:test", "héllo")
        entry = await client.xadd("wire:stream", {"a": 1.5, "b": b"\x00"})
        assert await client.get("wire:test") == "héllo".encode()
        assert await client.xrange("wire:stream") == [(entry, {b"a": b"1.5", b"b": b"\x00"})]
    finally:
        await client.delete("wire:test", "wire:stream")
        await client.aclose()
