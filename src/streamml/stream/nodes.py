"""Which client a command on a key goes to: :class:`SlotClients`, over plain Redis clients on a cluster's
masters (:class:`NodeClients`) for the commands of one partition.

Every command of one partition's hot path (the gateway's MULTI, a worker's read and its acknowledging
MULTI) touches keys of one slot, so it can go to the slot's master over a plain client. redis-py's
cluster client would route each command again, and its transactional pipeline costs five to seven
times the CPU of a plain one (``python -m streamml.bench.publish_cost``); the cluster client stays for
discovery and for everything else. After a failover a plain client meets a
dead node or a MOVED reply: the clients are dropped, the cluster client relearns the slot map, and the
error reaches the caller as a connection error (the gateway answers 503, a worker backs off and retries).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.exceptions import AskError, ClusterDownError, ReadOnlyError, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamml.stream.wire import packed_in_c

SLOT_NOT_HERE = (AskError, ClusterDownError, ReadOnlyError, TryAgainError)
"""Replies meaning the slot is not (or not yet) served where we sent it (MovedError is an AskError)."""


def leaked_connection_error(exc: BaseException) -> bool:
    """redis-py 8.1's asyncio connection, writing to a pooled connection the peer has closed (a killed
    master), raises the transport's AttributeError or TypeError instead of ConnectionError
    (redis/redis-py#4287), past every retry. Such an error, raised inside redis-py's or asyncio's own
    code, is a lost connection; any other AttributeError is a bug and is left alone."""
    if not isinstance(exc, AttributeError | TypeError):
        return False
    frame, innermost = exc.__traceback__, None
    while frame is not None:
        innermost, frame = frame, frame.tb_next
    path = innermost.tb_frame.f_code.co_filename if innermost is not None else ""
    return "/redis/" in path or "/asyncio/" in path


class NodeClients:
    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        self._clients: dict[str, Redis] = {}

    async def for_key(self, key: str) -> Redis:
        await self.cluster.initialize()
        node = self.cluster.get_node_from_key(key)
        if node is None:
            raise RedisConnectionError(f"no cluster node serves the slot of {key!r}")
        client = self._clients.get(node.name)
        if client is None:
            pool = ConnectionPool(
                connection_class=packed_in_c(node.connection_class),
                max_connections=node.max_connections,
                **node.connection_kwargs,
            )
            client = self._clients[node.name] = Redis(connection_pool=pool)
        return client

    @contextlib.asynccontextmanager
    async def on(self, key: str) -> AsyncIterator[Any]:
        """The plain client of ``key``'s master; a moved slot or a lost node becomes a connection error
        after the slot map is refreshed."""
        client = await self.for_key(key)
        try:
            yield client
        except (RedisConnectionError, RedisTimeoutError, OSError):
            await self.forget(key)
            raise
        except (AttributeError, TypeError) as exc:
            if not leaked_connection_error(exc):
                raise
            await self.forget(key)
            raise RedisConnectionError(f"connection to the master of {key!r} lost: {exc!r}") from exc
        except SLOT_NOT_HERE as exc:
            await self.forget(key)
            raise RedisConnectionError(f"the slot of {key!r} is not served here now: {exc}") from exc

    async def forget(self, key: str) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()
        # A command through the cluster client follows the redirect (or finds the node gone) and
        # refreshes its slot map for the next attempt.
        with contextlib.suppress(RedisError, OSError):
            await self.cluster.exists(key)

    async def aclose(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()
        self._clients = {}


P = TypeVar("P")


class SlotClients:
    """The client for commands on a key's slot: the one client on a single Redis; on a cluster, the plain
    client of the slot's master (:class:`NodeClients`), with the cluster client for everything that
    spans slots. One per process, shared by the publisher, the consumer and the status reader."""

    def __init__(self, redis: Redis | RedisCluster) -> None:
        self.redis: Any = redis  # Redis or RedisCluster: the commands used here are common to both
        self.cluster = isinstance(redis, RedisCluster)
        self.nodes = NodeClients(redis) if isinstance(redis, RedisCluster) else None

    def on(self, key: str) -> contextlib.AbstractAsyncContextManager[Any]:
        """The client for commands on ``key``'s slot."""
        return self.nodes.on(key) if self.nodes is not None else contextlib.nullcontext(self.redis)

    async def call(self, key: str, command: str, *args: Any, **kwargs: Any) -> Any:
        """``command(key, *args)`` on the client for the key's slot."""
        async with self.on(key) as client:
            return await getattr(client, command)(key, *args, **kwargs)

    async def each(self, items: Sequence[P], command: Callable[[Any, P], Any]) -> list[Any]:
        """``command(pipe, item)`` for every item, pipelined (on a cluster, one round trip per node)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in items:
                command(pipe, item)
            return list(await pipe.execute())
