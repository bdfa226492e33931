"""Run the end-to-end scenarios on both systems and put the ratios next to each other."""

from __future__ import annotations

import asyncio
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from streamml.bench.endtoend import (
    RESULT_TTL_S,
    MlflowServe,
    Outcome,
    Shape,
    StreammlStack,
    run_mlflow,
    run_streamml,
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
            "5. the identical request to both: POST /invocations, 1 record, closed loop",
            1,
            concurrency=concurrency,
            identical=True,
        ),
    ]


def _ratio(ours: Outcome, theirs: Outcome, key: str) -> float | None:
    mine, other = getattr(ours, key), getattr(theirs, key)
    return round(mine / other, 1) if other else None


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
) -> dict[str, Any]:
    records = complete_records(50_000)
    registry = ModelRegistry(tracking_uri, DEFAULT_ROUTES, trusted_types=DEFAULT_TRUSTED_TYPES)
    ref = asyncio.run(registry.resolver.resolve(route))
    model_dir = registry.artifacts.model(ref)
    outcomes: list[Outcome] = []

    # Both systems stay up and each scenario runs on one right after the other, so that a ratio compares
    # runs a minute apart at most (a shared machine's speed drifts); the idle one polls, and costs next
    # to nothing.
    stack = StreammlStack(
        root / "streamml", redis_url, tracking_uri, workers=workers, metrics=metrics, default_route=route
    ).start()
    serve = None
    memory = None
    try:
        serve = MlflowServe(root / "mlflow-serve", model_dir, workers=serve_workers).start()
        for shape in shapes(concurrency, open_loop_rate):
            outcomes.append(asyncio.run(run_streamml(stack, route, records, shape, duration_s)))
            outcomes.append(asyncio.run(run_mlflow(serve, records, shape, duration_s)))
        serve.stop()
        serve = None
        if soak_s:
            every_s = max(1.0, soak_s / 30)
            memory = asyncio.run(soak(stack, route, records, SOAK_RATE, soak_s, every_s=every_s))
    finally:
        if serve is not None:
            serve.stop()
        stack.stop()

    by_key = {(o.scenario, o.system): o for o in outcomes}
    ratios = []
    for shape in shapes(concurrency, open_loop_rate):
        ours, theirs = by_key[(shape.name, "streamml")], by_key[(shape.name, "mlflow models serve")]
        ratios.append(
            {
                "key": shape.key,
                "scenario": shape.name,
                "requests_per_s": _ratio(ours, theirs, "requests_per_s"),
                "records_per_s": _ratio(ours, theirs, "records_per_s"),
            }
        )
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
        "outcomes": [
            asdict(o) | {"cpu_ms_per_request": o.cpu_ms_per_request, "cpu_us_per_record": o.cpu_us_per_record}
            for o in outcomes
        ],
        "ratios": ratios,
        "memory": memory,
    }
