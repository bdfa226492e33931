"""CPU per publish (the gateway's MULTI of one single-record request) by client path, on one Redis
node and on a local 3-master cluster: redis-py's cluster transaction pipeline, the slot master's plain
client (what streamml uses on a cluster, :mod:`streamml.stream.nodes`), and one pinned connection
(the durable path, :mod:`streamml.stream.durable`). Paths alternate; 32 publishes in flight.

    python -m streamml.bench.publish_cost
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis, RedisCluster

from streamml.local.cluster import LocalCluster
from streamml.local.services import EmbeddedRedis
from streamml.settings import StreamSettings
from streamml.stream.durable import DurableWriter
from streamml.stream.publisher import Publisher

PUBLISHES = 4000
IN_FLIGHT = 32
RECORD = [{"Designation": 2, "Sleep Hours": 5.6}]


async def cpu_per_publish(client: Any, partitions: int, path: str) -> tuple[float, float]:
    """(CPU µs per publish in this process, publishes per second)."""
    settings = StreamSettings(name=f"cost-{time.time_ns()}", partitions=partitions)
    publisher = Publisher.of(client, settings, cluster=isinstance(client, RedisCluster))
    if path == "cluster pipeline":
        publisher.slots.nodes = None  # every command through redis-py's cluster client
    elif path == "pinned connection":
        publisher.durable = DurableWriter("memory", 1000)
    await publisher.check()
    topology = publisher.topology

    async def one() -> None:
        await publisher.publish(topology.new_request_id(topology.partition_for(None)), "svm", RECORD)

    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(PUBLISHES // IN_FLIGHT):
        await asyncio.gather(*(one() for _ in range(IN_FLIGHT)))
    return (time.process_time() - cpu) / PUBLISHES * 1e6, PUBLISHES / (time.perf_counter() - wall)


async def compare(client: Any, partitions: int, label: str, paths: tuple[str, ...]) -> None:
    for _ in range(2):
        for path in paths:
            cpu_us, rate = await cpu_per_publish(client, partitions, path)
            print(f"{label:8} {path:18} {cpu_us:6.0f} µs CPU/publish {rate:7.0f} publishes/s")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="streamml-cost-") as scratch:
        root = Path(scratch)
        server = EmbeddedRedis(root / "single").start()
        try:
            await compare(Redis.from_url(server.url), 1, "1 node", ("plain pipeline", "pinned connection"))
        finally:
            server.stop()
        with LocalCluster(root / "cluster", replicas=0) as cluster:
            client = RedisCluster.from_url(cluster.url)
            await compare(client, 12, "cluster", ("cluster pipeline", "node client", "pinned connection"))
            await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
