"""streamml on a real Redis Cluster (3 masters + 3 replicas from the bundled server): the round trip
through gateway and worker processes over every partition, and a master killed under load.

The reconciliation counts records by (request id, record index): stream ids are per partition, so two
partitions may hand out the same one."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis
from redis.crc import key_slot

from streamml import keys
from streamml.local.cluster import LocalCluster
from streamml.local.services import free_port
from streamml.settings import Settings
from streamml.stream.topology import CLUSTER_PARTITIONS
from streamml.synthetic.producer import Producer, ProducerConfig, parse_routes, record_stream
from streamml.synthetic.profile import Profile
from tests.stream.faults import RECONCILIATIONS, WorkerPool, reconcile, worker_env

pytestmark = pytest.mark.integration

StartGateway = Callable[..., tuple[str, Settings]]
ROUTES = ("svm", "knn", "lightgbm")


CLUSTER_ENV = {"STREAMML_REDIS_CLUSTER": "true"}


def start_two_workers(pool: WorkerPool, client: redis.RedisCluster, settings: Settings) -> None:
    pool.start("w0")
    pool.start("w1")
    wait_for_workers(client, settings, 2)


def cluster_client(cluster: LocalCluster) -> redis.RedisCluster:
    return redis.RedisCluster.from_url(cluster.url)


def partition_streams(settings: Settings) -> list[str]:
    return [keys.partition_name(settings.stream.name, p, CLUSTER_PARTITIONS) for p in range(12)]


def wait_for_workers(
    client: redis.RedisCluster, settings: Settings, count: int, timeout_s: float = 90
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.zcard(keys.workers_heartbeat_key(settings.stream.name)) >= count:
            return
        time.sleep(0.2)
    raise AssertionError("workers did not start")


def streamml_status(env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "streamml", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout))


def test_round_trip_on_a_cluster_every_route_every_partition_two_gateways_two_workers(
    redis_cluster: LocalCluster, start_gateway: StartGateway, tracking_uri: str, tmp_path: Path
) -> None:
    # Two gateway processes on one port, two workers: nothing assumes it is alone.
    url, settings = start_gateway(redis_override=redis_cluster.url, processes=2, **CLUSTER_ENV)
    env = worker_env(settings, redis_cluster.url, tracking_uri, **CLUSTER_ENV)
    pool = WorkerPool(env, tmp_path)
    client = cluster_client(redis_cluster)
    try:
        start_two_workers(pool, client, settings)
        accepted = []
        for i in range(2 * CLUSTER_PARTITIONS):  # the original curl, every route, every partition
            route = ROUTES[i % len(ROUTES)]
            out = subprocess.run(
                [
                    "curl", "-s", "-X", "POST", f"{url}/predict_stream?model={route}",
                    "-H", "Content-Type: application/json",
                    "-d", '{"data": [{"Designation": 1.5, "Resource_Allocation": 1.7, "Sleep_Hours": 7}]}',
                ],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            accepted.append((route, json.loads(out.stdout)))
        synchronous = httpx.post(
            f"{url}/predict?model=lightgbm", json={"data": [{"Designation": 2, "Sleep_Hours": 6}]}, timeout=15
        )
        assert synchronous.status_code == 200, synchronous.text
        assert synchronous.json()["model"]["name"] == "LightGBM_Classifier"
        names = {"svm": "SVC", "knn": "Knn_Classifier", "lightgbm": "LightGBM_Classifier"}
        deadline = time.monotonic() + 30
        for route, body in accepted:
            while True:
                result = httpx.get(f"{url}/predictions/{body['request_id']}").json()
                if result["status"] == "done" or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert result["status"] == "done", result
            assert result["model"]["name"] == names[route]
        partitions_used = {int(body["request_id"].rpartition("-")[2]) for _, body in accepted}
        assert partitions_used == set(range(CLUSTER_PARTITIONS))
        status = streamml_status(env)
        assert len(status["partitions"]) == CLUSTER_PARTITIONS
        group = status["groups"][0]
        assert group["pending"] == 0
        assert group["lag"] == 0
        assert {c["name"] for c in group["consumers"]} == {"w0", "w1"}
        assert status["results_length"] == len(accepted) + 1
        # The partitions' streams are spread evenly over the three masters.
        owners = Counter(
            redis_cluster.master_of_slot(key_slot(s.encode())).port for s in partition_streams(settings)
        )
        assert sorted(owners.values()) == [4, 4, 4]
    finally:
        pool.stop_all()
        client.close()


async def _produce(url: str, config: ProducerConfig) -> Any:
    return await Producer(config, record_stream(Profile.load(), seed=config.seed), url=url).run()


def wait_until_settled(
    client: redis.RedisCluster, settings: Settings, records: int, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            predicted = sum(
                int(v)
                for s in partition_streams(settings)
                for v in client.hvals(keys.counter_keys(s).predicted)
            )
            pending = sum(
                int(i[0]["pending"]) for s in partition_streams(settings) if (i := client.xinfo_groups(s))
            )
            lag = sum(
                int(i[0]["lag"] or 0) for s in partition_streams(settings) if (i := client.xinfo_groups(s))
            )
        except (redis.ConnectionError, redis.exceptions.ClusterDownError):
            time.sleep(0.5)
            continue
        if predicted >= records and pending == 0 and lag == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"not settled within {timeout_s}s")


@pytest.mark.parametrize("durability", ["replica", "memory"])
async def test_a_master_killed_under_load_fails_over_and_loses_nothing_acknowledged(
    durability: str, start_gateway: StartGateway, tracking_uri: str, tmp_path: Path
) -> None:
    """kill -9 of a master mid-run: its replica takes over, and the old master, restarted, rejoins as its
    replica. With ``replica`` durability every record answered 202 ends predicted (or dead-lettered);
    with ``memory`` the test records what was lost."""
    with LocalCluster(tmp_path / "cluster") as cluster:
        extra = CLUSTER_ENV | {"STREAMML_STREAM_DURABILITY": durability}
        url, settings = start_gateway(redis_override=cluster.url, **extra)
        env = worker_env(settings, cluster.url, tracking_uri, STREAMML_WORKER_BATCH_ENTRIES="64", **extra)
        pool = WorkerPool(env, tmp_path)
        client = cluster_client(cluster)
        try:
            start_two_workers(pool, client, settings)
            config = ProducerConfig(
                rate=2000,
                records_per_request=20,
                count=20_000,
                duration_s=None,
                concurrency=32,
                seed=9,
                track_ids=True,
                routes=parse_routes("lightgbm=2,knn=1,svm=1"),
            )
            producing = asyncio.create_task(_produce(url, config))
            await asyncio.sleep(4)
            victim = cluster.masters[1]
            assert victim.process is not None
            victim_slot = key_slot(partition_streams(settings)[4].encode())  # partitions 4-7: master 1
            assert cluster.master_of_slot(victim_slot) is victim
            assert not producing.done()  # the kill comes under load
            victim.process.signal(signal.SIGKILL)
            await asyncio.to_thread(cluster.wait_healthy, 60)  # its replica has taken the slots over
            promoted = cluster.master_of_slot(victim_slot)
            # The operator's part: the old master comes back, as a replica of its successor (until then
            # `replica` durability refuses its partitions: the new master has no replica).
            await asyncio.to_thread(victim.start)
            await asyncio.to_thread(cluster.wait_healthy, 60)
            rejoined_as = cluster.client(victim).info("replication")["role"]
            stats = await producing
            await asyncio.to_thread(wait_until_settled, client, settings, stats.records_accepted, 180)
            figures = reconcile(
                client,
                settings,
                sent=stats.records_sent,
                accepted=stats.records_accepted,
                request_ids=set(stats.accepted_ids),
                streams=partition_streams(settings),
            )
        finally:
            pool.stop_all()
            client.close()
    RECONCILIATIONS.append(
        (
            f"cluster master kill -9 ({durability})",
            figures.as_dict()
            | {
                "refused": stats.records_sent - stats.records_accepted,
                "not_sent_while_busy_or_backing_off": 20_000 - stats.records_sent,
            },
        )
    )
    assert promoted in cluster.replicas  # the killed master's replica took its slots over
    assert rejoined_as == "slave"
    assert stats.records_accepted > 0
    assert figures.pending == 0
    if durability == "replica":
        assert figures.lost == 0


def test_processes_started_while_their_urls_node_is_down_come_up_through_a_seed_or_wait(
    redis_cluster: LocalCluster, start_gateway: StartGateway, tracking_uri: str, tmp_path: Path
) -> None:
    """REDIS_URL names a node that does not answer (nothing listens on its port). With another node in
    STREAMML_REDIS_SEEDS, gateway, worker and `streamml status` start through it; without one, a worker
    waits with its logged retry policy — never a traceback."""
    cluster = urlsplit(redis_cluster.url)
    down = f"redis://:{cluster.password}@127.0.0.1:{free_port()}/0"
    live = f"{cluster.hostname}:{cluster.port}"
    seeds = {"STREAMML_REDIS_SEEDS": json.dumps([live])}
    url, settings = start_gateway(redis_override=down, **CLUSTER_ENV, **seeds)
    env = worker_env(settings, down, tracking_uri, **CLUSTER_ENV, **seeds)
    pool = WorkerPool(env, tmp_path)
    client = cluster_client(redis_cluster)
    try:
        pool.start("seeded")
        wait_for_workers(client, settings, 1)
        answer = httpx.post(f"{url}/predict?model=svm", json={"data": [{"Designation": 2}]}, timeout=15)
        assert answer.status_code == 200, answer.text
        assert streamml_status(env)["groups"][0]["pending"] == 0

        alone = WorkerPool(worker_env(settings, down, tracking_uri, **CLUSTER_ENV), tmp_path)
        waiting = alone.start("unseeded")
        log = tmp_path / "unseeded.log"
        deadline = time.monotonic() + 30
        while "Redis unreachable" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "Redis unreachable" in log.read_text()
        assert waiting.process is not None
        assert waiting.process.poll() is None  # still waiting, not exited
        assert "Traceback" not in log.read_text()
        alone.stop_all()
    finally:
        pool.stop_all()
        client.close()
