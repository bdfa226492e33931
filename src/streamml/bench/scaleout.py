"""`streamml bench --cluster`: the same end-to-end runs on one Redis node and on a local 3-master Redis
Cluster (12 partitions), then what each acceptance durability costs on a master with one replica.

Every run is a real gateway process and worker process(es), driven by ``wrk`` (C, one thread: it takes
little of the two cores the system shares with it) with POSTs of the same complete record; throughput
counts records predicted from the first request until everything accepted was predicted. CPU seconds
are read per process (gateway, workers, each Redis node, wrk), so the report gives CPU per record per
part: on a 2-core machine the absolute figures cannot scale out, the per-core costs are what a capacity
plan multiplies (docs/scaling.md).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from streamml import keys
from streamml.bench import wrk
from streamml.bench.usage import Meter
from streamml.local.cluster import LocalCluster
from streamml.local.services import EmbeddedRedis, ManagedProcess, free_port, wait_until_healthy
from streamml.models.training import FEATURES
from streamml.stream.topology import CLUSTER_PARTITIONS
from streamml.synthetic.producer import record_stream
from streamml.synthetic.profile import Profile

ROUTE = "lightgbm"


@dataclass(frozen=True)
class Topology:
    name: str
    url: str
    cluster: bool
    nodes: dict[str, int]
    """Redis node name -> pid (for its CPU)."""


def complete_record() -> dict[str, Any]:
    """The first generated record with every feature (the same body for every system and run)."""
    return next(r for r in record_stream(Profile.load(), seed=0) if len(r) == len(FEATURES))


@contextmanager
def single_node(root: Path, appendfsync: str = "everysec") -> Iterator[Topology]:
    server = EmbeddedRedis(root / f"single-{uuid.uuid4().hex[:6]}", appendfsync=appendfsync).start()
    try:
        assert server.process is not None
        yield Topology("1 node", server.url, False, {"redis": server.process.pid})
    finally:
        server.stop()


@contextmanager
def three_masters(root: Path) -> Iterator[Topology]:
    """Masters only: replicas would take CPU from the same two cores without serving anything."""
    with LocalCluster(root / f"cluster-{uuid.uuid4().hex[:6]}", masters=3, replicas=0) as cluster:
        pids = {f"redis-{i}": n.process.pid for i, n in enumerate(cluster.masters) if n.process}
        yield Topology("cluster, 3 masters, 12 partitions", cluster.url, True, pids)


@contextmanager
def with_replica(root: Path) -> Iterator[tuple[Topology, EmbeddedRedis]]:
    """A master and one replica (``replicaof``), for the durability runs."""
    master = EmbeddedRedis(root / f"master-{uuid.uuid4().hex[:6]}").start()
    replica = EmbeddedRedis(
        root / f"replica-{uuid.uuid4().hex[:6]}",
        password=master.password,
        extra_config=[f"replicaof 127.0.0.1 {master.port}", f"masterauth {master.password}"],
    ).start()
    try:
        client = redis.Redis.from_url(master.url)
        deadline = time.monotonic() + 30
        while int(client.info("replication").get("connected_slaves", 0)) < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not attach")
            time.sleep(0.1)
        assert master.process is not None
        assert replica.process is not None
        pids = {"redis": master.process.pid, "replica": replica.process.pid}
        yield Topology("1 master + 1 replica", master.url, False, pids), replica
    finally:
        replica.stop()
        master.stop()


def run_e2e(
    topology: Topology,
    tracking_uri: str,
    root: Path,
    *,
    records_per_request: int,
    duration_s: float,
    workers: int = 1,
    durability: str = "memory",
    connections: int = 16,
) -> dict[str, Any]:
    """One wrk run against a fresh gateway and ``workers`` workers on ``topology``."""
    stream = f"scale-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")} | {
        "REDIS_URL": topology.url,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "STREAMML_STATE_DIR": str(root / stream),
        "STREAMML_STREAM_NAME": stream,
        "STREAMML_STREAM_RESULTS": f"{stream}:predictions",
        "STREAMML_REDIS_CLUSTER": "true" if topology.cluster else "false",
        "STREAMML_STREAM_DURABILITY": durability,
        "STREAMML_GATEWAY_MAX_BACKLOG": "10000000",
        # One client sends everything here; the per-client limit is for the internet, not for this.
        "STREAMML_GATEWAY_RATE_LIMIT_PER_S": "0",
    }
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    python = [sys.executable, "-m", "streamml"]
    gateway = ManagedProcess(
        "gateway",
        [*python, "api", "--port", str(port), "--log-level", "warning"],
        root / f"{stream}-gw.log",
        env,
    ).start()
    pool = [
        ManagedProcess(
            f"worker-{i}",
            [*python, "worker", "--consumer", f"w{i}", "--log-level", "warning"],
            root / f"{stream}-w{i}.log",
            env,
        ).start()
        for i in range(workers)
    ]
    try:
        wait_until_healthy(f"{url}/ready", gateway, timeout_s=120)
        body = json.dumps({"data": [complete_record()] * records_per_request}).encode()
        client = (
            redis.RedisCluster.from_url(topology.url)
            if topology.cluster
            else redis.Redis.from_url(topology.url)
        )
        count = CLUSTER_PARTITIONS if topology.cluster else 1
        streams = [keys.partition_name(stream, p, count) for p in range(count)]
        pids = {"gateway": gateway.pid, **{p.name: p.pid for p in pool}, **topology.nodes}
        meter = Meter(pids)
        meter.start()
        started = time.perf_counter()
        load = wrk.run(
            f"{url}/predict_stream?model={ROUTE}",
            [body],
            connections=connections,
            duration_s=duration_s,
            scratch=root / stream,
        )
        accepted = _total(client, streams, "accepted")
        while _total(client, streams, "predicted") < accepted:
            if time.perf_counter() - started > duration_s + 120:
                raise RuntimeError("the workers did not catch up within two minutes")
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        usage = meter.stop()
        per_partition = [_total(client, [s], "predicted") for s in streams]
        client.close()
    finally:
        for process in [*pool, gateway]:
            process.stop()
    requests = accepted // records_per_request
    by_node = {name: u for name, u in usage.items() if name.startswith("redis") or name == "replica"}
    worker_cpu = sum(u["cpu_s"] for name, u in usage.items() if name.startswith("worker"))
    return {
        "topology": topology.name,
        "records_per_request": records_per_request,
        "durability": durability,
        "workers": workers,
        "records": accepted,
        "seconds": round(seconds, 2),
        "records_per_s": round(accepted / seconds),
        "requests_per_s": round(requests / seconds),
        "wrk_requests_per_s": round(load.requests / load.seconds, 1),
        "wrk_non_2xx": load.non_2xx,
        "answer_ms": load.latency_ms,
        "gateway_cpu_ms_per_request": round(usage["gateway"]["cpu_s"] * 1000 / max(requests, 1), 3),
        "worker_cpu_us_per_record": round(worker_cpu * 1e6 / max(accepted, 1), 2),
        "redis_cpu_us_per_record": round(
            sum(u["cpu_s"] for u in by_node.values()) * 1e6 / max(accepted, 1), 2
        ),
        "redis_nodes": {name: u["cores"] for name, u in by_node.items()},
        "per_partition_records": per_partition,
        "cores": {name: u["cores"] for name, u in usage.items()},
        "wrk_cores": round(load.cpu_s / duration_s, 2),
    }


def _total(client: Any, streams: list[str], counter: str) -> int:
    total = 0
    for stream in streams:
        values = client.hvals(getattr(keys.counter_keys(stream), counter))
        total += sum(int(v) for v in values)
    return total


def main(tracking_uri: str, *, quick: bool, repeats: int = 3) -> dict[str, Any]:
    """Single node vs cluster (1 and 100 records per request), then the three durabilities."""
    if not wrk.available():
        raise SystemExit("streamml bench --cluster drives the gateway with wrk: apt-get install wrk")
    duration = 3.0 if quick else 10.0
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="streamml-scale-") as scratch:
        root = Path(scratch)
        for per_request in (1, 100):
            with single_node(root) as topology:
                runs.append(
                    run_e2e(
                        topology, tracking_uri, root, records_per_request=per_request, duration_s=duration
                    )
                )
            with three_masters(root) as topology:
                runs.append(
                    run_e2e(
                        topology, tracking_uri, root, records_per_request=per_request, duration_s=duration
                    )
                )
        durability: dict[str, list[dict[str, Any]]] = {"memory": [], "fsync": [], "replica": []}
        with with_replica(root) as (topology, _):
            for _ in range(
                1 if quick else repeats
            ):  # alternate: a shared machine's speed drifts between minutes
                for mode in durability:
                    durability[mode].append(
                        run_e2e(
                            topology,
                            tracking_uri,
                            root,
                            records_per_request=1,
                            duration_s=duration,
                            durability=mode,
                        )
                    )
    return {"runs": runs, "durability": {mode: _median(results) for mode, results in durability.items()}}


def _median(results: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(results, key=lambda r: r["requests_per_s"])
    middle = ordered[len(ordered) // 2]
    return middle | {"runs_requests_per_s": [r["requests_per_s"] for r in results], "median_of": len(results)}


def to_markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        "# Scale-out benchmark: one Redis node vs a Redis Cluster, and the cost of durability",
        "",
        f"Command: `{report['command']}`. Machine: {json.dumps(machine)}. "
        f"Redis server: {report['redis_server']}. Load: wrk, 1 thread, "
        "16 connections, the same complete LightGBM record; throughput counts records predicted from the "
        "first request until all accepted were predicted. One gateway process, one worker process.",
        "",
        "## End to end, 1 node vs cluster",
        "",
        "| topology | records/request | records/s | requests/s | gateway CPU ms/request "
        "| worker CPU µs/record | Redis CPU µs/record | Redis cores by node | wrk cores |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in report["runs"]:
        nodes = ", ".join(f"{k} {v}" for k, v in r["redis_nodes"].items())
        cells = [
            r["topology"],
            r["records_per_request"],
            f"{r['records_per_s']:,}",
            f"{r['requests_per_s']:,}",
            r["gateway_cpu_ms_per_request"],
            r["worker_cpu_us_per_record"],
            r["redis_cpu_us_per_record"],
            nodes,
            r["wrk_cores"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "Records per partition (cluster runs):", ""]
    for r in report["runs"]:
        if len(r["per_partition_records"]) > 1:
            lines.append(f"- {r['records_per_request']} per request: {r['per_partition_records']}")
    lines += [
        "",
        "## Acceptance durability (1 record per request, master + 1 replica, median of alternated runs)",
        "",
        "| durability | requests/s | runs | gateway CPU ms/request | requests/s vs memory "
        "| answer p50 / p99 ms |",
        "|---|---:|---|---:|---:|---|",
    ]
    base = report["durability"]["memory"]["requests_per_s"] or 1
    for mode, r in report["durability"].items():
        change = r["requests_per_s"] / base - 1
        cells = [mode, f"{r['requests_per_s']:,}", r["runs_requests_per_s"], r["gateway_cpu_ms_per_request"]]
        answer = r.get("answer_ms", {})
        latency = f"{answer.get('p50', '?')} / {answer.get('p99', '?')}"
        lines.append("| " + " | ".join(str(c) for c in cells) + f" | {change:+.0%} | {latency} |")
    return "\n".join(lines) + "\n"
