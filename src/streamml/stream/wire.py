"""Redis clients whose commands are packed by hiredis's C packer.

redis-py's synchronous connection packs commands with ``hiredis.pack_command`` when hiredis is installed;
its asyncio connection always packs them in Python, which on a small core costs 10-30 µs per command
(an XADD of a dozen fields, a result document's SET) against 3-4 µs in C. A worker writes four or five
commands per request it settles and the gateway one or more per request, so the Python packer was the
largest single cost of the one-record drain (``python -m streamml.bench.profile_drain``). The bytes sent are
the same: this uses redis-py's own hiredis serializer, with its handling of multi-word command names
and its ``DataError`` for a value Redis cannot take.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import DataError
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis


class HiredisPacking:
    """Mixed in before a redis-py asyncio connection class: its commands packed in C."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # a bytearray, or a value Redis cannot take (None, a bool, a dict)
            args = tuple(bytes(arg) if isinstance(arg, bytearray) else arg for arg in args)
            try:
                return [hiredis.pack_command(args)]
            except TypeError as exc:
                raise DataError(str(exc)) from exc


_PACKED: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def packed_in_c(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """``base`` (a plain, TLS or Unix-socket connection class) packing in C; ``base`` itself when hiredis
    is not installed or the class has its own packer. One class per base, so pools can compare them."""
    if not HIREDIS_AVAILABLE or base.pack_command is not AbstractConnection.pack_command:
        return base
    if base not in _PACKED:
        _PACKED[base] = type(f"HiredisPacked{base.__name__}", (HiredisPacking, base), {})
    return _PACKED[base]


def redis_from_url(url: str, **kwargs: Any) -> Redis:
    """``Redis.from_url(url, **kwargs)`` with the URL's connection class packing in C."""
    client = Redis.from_url(url, **kwargs)
    pool = client.connection_pool  # no connection is made before the first command
    pool.connection_class = packed_in_c(pool.connection_class)
    return client
