"""`streamml bench`: start what the benchmarks need, run them, print the tables, record the report."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from streamml.bench import drain, e2e_run, report, rollout_cost


@dataclass(frozen=True)
class Plan:
    quick: bool
    routes: list[str]
    drain: bool = True
    endtoend: bool = True
    rollout: bool = True
    """The cost of drift windows, the prediction log and shadow scoring (drain with and without them)."""
    workers: int = 1
    serve_workers: int = 2
    concurrency: int = 32
    duration_s: float = 20.0
    soak_s: float = 300.0
    metrics: bool = True
    """Prometheus metrics on in the measured processes (off: what they cost)."""
    open_loop_rate: float = 1000.0
    """Requests/s offered in the open loop (to every system)."""
    peers: tuple[str, ...] = e2e_run.PEERS
    """The systems measured beside streamml end to end (MLServer's environment is created on first use)."""

    @classmethod
    def for_ci(cls, routes: list[str]) -> Plan:
        # A low open-loop rate: `mlflow models serve` answers ~100/s, and what it cannot answer waits
        # out the client's timeout, which made the smoke run minutes longer at 1,000/s.
        # MLServer's own environment takes minutes to install: not in the smoke run.
        return cls(
            quick=True, routes=routes, duration_s=2.0, soak_s=0.0, open_loop_rate=100.0, peers=("mlflow",)
        )


@contextmanager
def services(root: Path, *, rows: int, say: Callable[[str], Any] = print) -> Iterator[tuple[str, str]]:
    """(Redis URL, tracking URI): REDIS_URL's and MLFLOW_TRACKING_URI's, or an embedded Redis and demo
    models trained on ``rows`` synthetic rows into a sqlite registry under ``root``, for as long as the
    block runs."""
    from streamml.local.demo import local_demo_registry
    from streamml.local.services import EmbeddedRedis
    from streamml.settings import DEFAULT_TRUSTED_TYPES

    server = None
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        server = EmbeddedRedis(root / "redis").start()
        redis_url = server.url
    try:
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not tracking_uri:
            say("training the demo models for the benchmark ...")
            tracking_uri = local_demo_registry(
                root, rows=rows, experiment="bench", trusted_types=DEFAULT_TRUSTED_TYPES
            )
        yield redis_url, tracking_uri
    finally:
        if server:
            server.stop()


def main(plan: Plan, *, record: bool, output: Path, command: str, console: Console) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="streamml-bench-") as scratch,
        services(Path(scratch), rows=3000 if plan.quick else 20_000, say=console.print) as (
            redis_url,
            tracking_uri,
        ),
    ):
        root = Path(scratch)
        results: dict[str, Any] = {
            "command": command,
            "machine": report.machine(),
            "redis_server": asyncio.run(_redis_version(redis_url)),
            "plan": plan.__dict__,
        }
        if plan.drain:
            results["drain"] = drain.run(
                redis_url=redis_url,
                tracking_uri=tracking_uri,
                quick=plan.quick,
                routes=plan.routes,
                metrics=plan.metrics,
            )
            console.print(_drain_table(results["drain"]))
        if plan.rollout:
            results["rollout"] = rollout_cost.run(
                redis_url=redis_url, tracking_uri=tracking_uri, quick=plan.quick, metrics=plan.metrics
            )
            console.print(_rollout_table(results["rollout"]))
        if plan.endtoend:
            console.print(
                f"end to end on route {plan.routes[0]} (streamml, then {', '.join(plan.peers)}) ..."
            )
            results["endtoend"] = e2e_run.run(
                root=root,
                redis_url=redis_url,
                tracking_uri=tracking_uri,
                route=plan.routes[0],
                workers=plan.workers,
                serve_workers=plan.serve_workers,
                concurrency=plan.concurrency,
                duration_s=plan.duration_s,
                soak_s=plan.soak_s,
                metrics=plan.metrics,
                open_loop_rate=plan.open_loop_rate,
                peers=plan.peers,
            )
            console.print(_e2e_table(results["endtoend"]))
    headline = Table("target", "measured", "met", title="targets")
    for target, measured, met, _ in report.headline(results):
        headline.add_row(target, measured, met.strip("*"))
    console.print(headline)
    if record:
        output.mkdir(parents=True, exist_ok=True)
        (output / "report.json").write_text(json.dumps(results, indent=2) + "\n")
        (output / "report.md").write_text(report.to_markdown(results, command))
        console.print(f"recorded in {output / 'report.md'}")
    return results


async def _redis_version(url: str) -> str:
    """The server and its version: Valkey reports a Redis version too (7.2.4, for compatibility), so its
    own comes first."""
    async with Redis.from_url(url) as redis:
        info: Any = await redis.info("server")
        if "valkey_version" in info:
            return f"valkey {info['valkey_version']}"
        return f"redis-server {info.get('redis_version', 'unknown')}"


def _drain_table(result: dict[str, Any]) -> Table:
    table = Table(
        "route",
        "per entry",
        "records/s",
        "model/s",
        "inference/s",
        "share",
        "classifier/s",
        "naive/s",
        "× naive",
        title="worker drain",
    )
    for r in result["results"]:
        table.add_row(
            r["route"],
            str(r["records_per_entry"]),
            f"{r['records_per_s']:,}",
            f"{r['model_batch_records_per_s']:,}",
            f"{r['inference_records_per_s']:,}",
            f"{r['share_of_model_speed']:.0%}",
            f"{r['classifier_records_per_s']:,}",
            str(r["naive_records_per_s"]),
            f"{r['speedup_vs_naive']:,}",
        )
    return table


def _rollout_table(result: dict[str, Any]) -> Table:
    table = Table(
        "configuration",
        "per entry",
        "records/s",
        "CPU µs/record",
        "extra µs/record",
        title=result["scenario"],
    )
    for r in result["results"]:
        table.add_row(
            r["config"],
            str(r["records_per_entry"]),
            f"{r['records_per_s']:,}",
            f"{r['cpu_us_per_record']:.2f}",
            f"{r['extra_cpu_us_per_record']:+.2f}",
        )
    return table


def _e2e_table(result: dict[str, Any]) -> Table:
    table = Table(
        "scenario",
        "system",
        "requests/s",
        "records/s",
        "p50 ms",
        "p99 ms",
        "failed",
        "loadgen, cores",
        "CPU ms/request",
        title="end to end",
    )
    for o in result["outcomes"]:
        table.add_row(
            o["scenario"],
            o["system"],
            f"{o['requests_per_s']:,}",
            f"{o['records_per_s']:,}",
            str(o["latency_ms"]["p50"]),
            str(o["latency_ms"]["p99"]),
            str(o["failed"]),
            f"{o.get('load_generator', 'aiohttp')} {o['load_generator_cores']}",
            ", ".join(f"{k} {v}" for k, v in o.get("cpu_ms_per_request", {}).items()),
        )
    return table


def cluster_main(
    *, quick: bool, record: bool, output: Path, command: str, console: Console
) -> dict[str, Any]:
    """``streamml bench --cluster`` (see :mod:`streamml.bench.scaleout`)."""
    from streamml.bench import scaleout
    from streamml.local.demo import local_demo_registry
    from streamml.local.services import find_redis_server
    from streamml.settings import DEFAULT_TRUSTED_TYPES

    with tempfile.TemporaryDirectory(prefix="streamml-bench-") as scratch:
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or local_demo_registry(
            Path(scratch),
            rows=3000 if quick else 20_000,
            experiment="bench",
            trusted_types=DEFAULT_TRUSTED_TYPES,
        )
        results = scaleout.main(tracking_uri, quick=quick)
    version = subprocess.run(
        [find_redis_server(), "--version"], capture_output=True, text=True
    ).stdout.strip()
    results = {"command": command, "machine": report.machine(), "redis_server": version, **results}
    markdown = scaleout.to_markdown(results)
    console.print(markdown)
    if record:
        output.mkdir(parents=True, exist_ok=True)
        (output / "report.json").write_text(json.dumps(results, indent=2) + "\n")
        (output / "report.md").write_text(markdown)
        console.print(f"recorded in {output / 'report.md'}")
    return results
