"""Run the end-to-end scenarios on streamml and its peers and put the ratios next to each other."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from streamml.bench import mlserver
from streamml.bench.endtoend import (
    RESULT_TTL_S,
    MlflowServe,
    Outcome,
    Peer,
    Shape,
    StreammlStack,
    run_peer,
    run_streamml,
    runs,
    soak,
)
from streamml.models.registry import ModelRegistry
from streamml.models.training import FEATURES
from streamml.settings import DEFAULT_ROUTES, DEFAULT_TRUSTED_TYPES
from streamml.synthetic.producer import record_stream
from streamml.synthetic.profile import Profile

OPEN_LOOP_RATE = 1000.0
SOAK_RATE = 500.0
"""The steady-memory run's rate: half the open loop's, for five minutes."""


def complete_records(count: int) -> list[dict[str, Any]]:
    """Generated records with every feature present and numbers as floats. `mlflow models serve`
    refuses, with a 400, a request whose records lack an optional column ("columns are missing", from
    inside the model); the producer sends such records (its generator leaves features out, as the real
    data set does). The streamml gateway accepts them; the benchmark sends the same complete records to
    both."""
    records = []
    for record, _ in zip(record_stream(Profile.load(), seed=7), range(count * 2), strict=False):
        if len(record) == len(FEATURES):
            records.append({k: float(v) if isinstance(v, int) else v for k, v in record.items()})
    return records[:count]


def shapes(concurrency: int, open_loop_rate: float = OPEN_LOOP_RATE) -> list[Shape]:
    return [
        Shape("single", "2. 1 record/request, closed loop", 1, concurrency=concurrency),
        Shape("hundred", "3. 100 records/request, closed loop", 100, concurrency=concurrency),
        Shape(
            "open_loop",
            f"4. open loop, {open_loop_rate:.0f} requests/s of 1 record (streamml: POST /predict)",
            1,
            rate=open_loop_rate,
            synchronous=True,
        ),
        Shape(
            "invocations",
            "5. the identical request: POST /invocations, 1 record, closed loop",
            1,
            concurrency=concurrency,
            identical="invocations",
        ),
        Shape(
            "v2_single",
            "6. the identical request: V2 infer, 1 record, closed loop",
            1,
            concurrency=concurrency,
            identical="v2",
        ),
        Shape(
            "v2_hundred",
            "7. the identical request: V2 infer, 100 records, closed loop",
            100,
            concurrency=concurrency,
            identical="v2",
        ),
    ]


def _ratio(ours: Outcome, theirs: Outcome, key: str) -> float | None:
    mine, other = getattr(ours, key), getattr(theirs, key)
    return round(mine / other, 1) if other else None


PEERS = ("mlflow", "mlserver")
"""The peers streamml can be measured against: `mlflow models serve`, MLServer with adaptive batching."""


def _start_peer(name: str, root: Path, model_dir: str, route: str, serve_workers: int) -> Peer:
    if name == "mlflow":
        return MlflowServe(root / "mlflow-serve", model_dir, workers=serve_workers).start()
    if name == "mlserver":
        venv = mlserver.environment()
        return mlserver.MLServer(root / "mlserver", model_dir, name=route, venv=venv).start()
    raise ValueError(f"unknown peer {name!r}: one of {', '.join(PEERS)}")


def run(
    *,
    root: Path,
    redis_url: str,
    tracking_uri: str,
    route: str,
    workers: int,
    serve_workers: int,
    concurrency: int,
    duration_s: float,
    soak_s: float,
    metrics: bool = True,
    open_loop_rate: float = OPEN_LOOP_RATE,
    peers: Sequence[str] = ("mlflow",),
) -> dict[str, Any]:
    records = complete_records(50_000)
    registry = ModelRegistry(tracking_uri, DEFAULT_ROUTES, trusted_types=DEFAULT_TRUSTED_TYPES)
    ref = asyncio.run(registry.resolver.resolve(route))
    model_dir = registry.artifacts.model(ref)
    outcomes: list[Outcome] = []
    scenarios: list[Shape] = []
    settings: dict[str, dict[str, str]] = {}

    # Every system stays up and each scenario runs on one right after the other, so that a ratio
    # compares runs a minute apart at most (a shared machine's speed drifts); the idle ones poll, and
    # cost next to nothing.
    stack = StreammlStack(
        root / "streamml", redis_url, tracking_uri, workers=workers, metrics=metrics, default_route=route
    ).start()
    started: list[Peer] = []
    memory = None
    try:
        for name in peers:
            started.append(_start_peer(name, root, model_dir, route, serve_workers))
        # A protocol no peer speaks is not measured (streamml alone would have nothing to be compared to).
        spoken = {peer.protocol for peer in started}
        scenarios = [s for s in shapes(concurrency, open_loop_rate) if s.identical in (None, *spoken)]
        settings = {peer.system: peer.settings() for peer in started}
        for shape in scenarios:
            outcomes.append(asyncio.run(run_streamml(stack, route, records, shape, duration_s)))
            for peer in started:
                if runs(peer, shape):
                    outcomes.append(asyncio.run(run_peer(peer, records, shape, duration_s)))
        while started:
            started.pop().stop()
        if soak_s:
            every_s = max(1.0, soak_s / 30)
            memory = asyncio.run(soak(stack, route, records, SOAK_RATE, soak_s, every_s=every_s))
    finally:
        for peer in started:
            peer.stop()
        stack.stop()

    by_key = {(o.scenario, o.system): o for o in outcomes}
    ratios = [
        {
            "key": shape.key,
            "scenario": shape.name,
            "peer": theirs.system,
            "requests_per_s": _ratio(ours, theirs, "requests_per_s"),
            "records_per_s": _ratio(ours, theirs, "records_per_s"),
        }
        for shape in scenarios
        for ours in [by_key[(shape.name, "streamml")]]
        for theirs in outcomes
        if theirs.scenario == shape.name and theirs.system != "streamml"
    ]
    return {
        "model": f"{ref.name} v{ref.version}",
        "route": route,
        "parameters": {
            "workers": workers,
            "gateway_processes": 1,
            "mlflow_serve_workers": serve_workers,
            "concurrency": concurrency,
            "duration_s": duration_s,
            "open_loop_rate": open_loop_rate,
            "soak_rate": SOAK_RATE,
            "result_ttl_s": RESULT_TTL_S,
            "metrics": metrics,
            "soak_s": soak_s,
            "cpus": os.cpu_count(),
        },
        "peers": settings,
        "outcomes": [
            asdict(o) | {"cpu_ms_per_request": o.cpu_ms_per_request, "cpu_us_per_record": o.cpu_us_per_record}
            for o in outcomes
        ],
        "ratios": ratios,
        "memory": memory,
    }
