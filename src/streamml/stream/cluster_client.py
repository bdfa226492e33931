"""The Redis Cluster client every process uses: redis-py's, started from several seed nodes, and telling
an unreachable cluster apart from a misuse.

redis-py raises its generic ``RedisClusterException`` (not a ``RedisError``) when none of the nodes it
starts from answers, so a worker's outage policy, a gateway's 503 and a command's clear message — all
written for ``ConnectionError`` — missed it: a process started while its seed node was down exited with a
traceback. Here that case is a ``ConnectionError`` like any other outage, and more seed nodes
(``STREAMML_REDIS_SEEDS``) let a process start while one of them is down.
"""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException


class SeededCluster(RedisCluster):
    """``RedisCluster`` whose failure to reach any node at start is a ``ConnectionError``."""

    async def initialize(self, *args: Any, **kwargs: Any) -> SeededCluster:
        try:
            await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            if "cannot be connected" not in str(exc):  # a misuse, not an outage: as redis-py says it
                raise
            raise RedisConnectionError(f"no Redis Cluster node answers: {exc}") from exc
        return self


def seed_node(seed: str) -> ClusterNode:
    """``host:port`` (``[v6 address]:port`` too) as a node to start from."""
    host, _, port = seed.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"STREAMML_REDIS_SEEDS: {seed!r} is not host:port")
    return ClusterNode(host.strip("[]"), int(port))


def cluster_from_url(url: str, seeds: list[str], **kwargs: Any) -> SeededCluster:
    """A cluster client starting from the seeds, then the URL's node (no connection is made yet)."""
    client = SeededCluster.from_url(url, startup_nodes=[seed_node(seed) for seed in seeds], **kwargs)
    return cast(SeededCluster, client)  # from_url builds cls: typed as the base class by redis-py
