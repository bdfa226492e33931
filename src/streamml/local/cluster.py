"""A real Redis Cluster on loopback, from the embedded server binary: masters with equal contiguous slot
ranges, each with its replicas, formed with CLUSTER ADDSLOTSRANGE / MEET / REPLICATE (no redis-cli).

For tests, ``streamml bench --cluster`` and trying cluster mode on a laptop; a production cluster is the
operator's (any Redis >= 7 or Valkey cluster, managed or not).
"""

from __future__ import annotations

import random
import secrets
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from streamml.keys import HASH_SLOTS
from streamml.local.services import LOOPBACK, EmbeddedRedis, port_is_free

BUS_PORT_OFFSET = 10_000
"""A node's cluster bus listens on its port + 10,000, so a node's port must be at most 55,535."""
PORT_RANGE = (20_000, 45_000)


def free_cluster_port(taken: set[int]) -> int:
    """A port that is free, with its bus port (+10,000) free too."""
    for _ in range(1000):
        port = random.randint(*PORT_RANGE)
        if port not in taken and port_is_free(port) and port_is_free(port + BUS_PORT_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, password-protected, on 127.0.0.1."""

    def __init__(
        self,
        data_dir: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
        appendfsync: str = "everysec",
    ) -> None:
        self.data_dir = data_dir
        self.password = secrets.token_urlsafe(18)
        taken: set[int] = set()
        self.nodes: list[EmbeddedRedis] = []
        for index in range(masters * (1 + replicas)):
            port = free_cluster_port(taken)
            taken |= {port, port + BUS_PORT_OFFSET}
            self.nodes.append(
                EmbeddedRedis(
                    data_dir / f"node-{index}",
                    port=port,
                    appendfsync=appendfsync,
                    password=self.password,
                    choose_port=lambda: self._another_port(),
                    extra_config=[
                        "cluster-enabled yes",
                        "cluster-config-file nodes.conf",
                        f"cluster-node-timeout {node_timeout_ms}",
                        # A replica fails over however long it was out of touch (tests kill masters on
                        # purpose; the default refuses a replica that lagged "too long").
                        "cluster-replica-validity-factor 0",
                        # A rejoining replica syncs at once (the default waits 5 s for more replicas).
                        "repl-diskless-sync-delay 0",
                        f"masterauth {self.password}",
                    ],
                )
            )
        self.masters = self.nodes[:masters]
        self.replicas = self.nodes[masters:]
        self._taken = taken

    def _another_port(self) -> int:
        """A node's new port when its own was taken before it started (its bus port free too)."""
        port = free_cluster_port(self._taken)
        self._taken |= {port, port + BUS_PORT_OFFSET}
        return port

    @property
    def url(self) -> str:
        """A seed node's URL; the cluster client discovers the others."""
        return self.masters[0].url

    def client(self, node: EmbeddedRedis) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=node.port, password=self.password, socket_timeout=5)

    def start(self, timeout_s: float = 60.0) -> LocalCluster:
        for node in self.nodes:
            node.start()
        width = HASH_SLOTS / len(self.masters)
        for index, node in enumerate(self.masters):
            first, last = round(index * width), round((index + 1) * width) - 1
            _command(self.client(node), "CLUSTER", "ADDSLOTSRANGE", first, last)
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            _command(self.client(node), "CLUSTER", "MEET", LOOPBACK, seed.port)
        self._until(
            lambda: all(self._known(n) == len(self.nodes) for n in self.nodes), timeout_s, "nodes meet"
        )
        for index, replica in enumerate(self.replicas):
            master = self.masters[index % len(self.masters)]
            master_id = _command(self.client(master), "CLUSTER", "MYID")
            self._until(lambda r=replica, m=master_id: self._replicate(r, m), timeout_s, "replicas attach")
        self.wait_healthy(timeout_s)
        return self

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        """Every live node says ``cluster_state:ok`` and every live replica's link to its master is up
        (load before that would meet a replica that cannot take over yet)."""

        def healthy() -> bool:
            # Asked afresh each time: a node just killed may not have exited at the first look.
            for node in [n for n in self.nodes if n.process is not None and n.process.alive()]:
                client = self.client(node)
                if b"cluster_state:ok" not in _command(client, "CLUSTER", "INFO"):
                    return False
                replication = client.info("replication")
                if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                    return False
            return True

        self._until(healthy, timeout_s, "the cluster is healthy")

    def master_of_slot(self, slot: int) -> EmbeddedRedis:
        """The live node serving ``slot`` now (it moves on failover)."""
        for node in self.nodes:
            if node.process is None or not node.process.alive():
                continue
            for first, last, (_host, port, *_), *_ in _command(self.client(node), "CLUSTER", "SLOTS"):
                if first <= slot <= last:
                    return next(n for n in self.nodes if n.port == int(port))
        raise RuntimeError(f"no live node serves slot {slot}")

    def _known(self, node: EmbeddedRedis) -> int:
        return len(_command(self.client(node), "CLUSTER", "NODES").decode().strip().splitlines())

    def _replicate(self, replica: EmbeddedRedis, master_id: bytes) -> bool:
        try:
            _command(self.client(replica), "CLUSTER", "REPLICATE", master_id)
            return True
        except redis.ResponseError:  # the replica has not yet heard of that master through gossip
            return False

    @staticmethod
    def _until(condition: object, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if condition():  # type: ignore[operator]
                    return
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting until {what}")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _command(client: redis.Redis, *args: object) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]
