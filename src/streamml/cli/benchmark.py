"""``streamml bench``: the benchmarks, beside the naive worker and ``mlflow models serve`` (the 'bench'
extra; benchmarks/README.md has the method)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streamml.cli.options import console


def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="Small sizes, no memory run (the CI smoke run, under 2 minutes).")
    ] = False,
    routes: Annotated[
        str,
        typer.Option(
            "--routes",
            metavar="ROUTES",
            help="Comma-separated routes; the first is also the end-to-end one. booster and pyfunc are "
            "other kinds of model the drain registers (a LightGBM booster, a custom PythonModel).",
        ),
    ] = "lightgbm,svm,knn,booster,pyfunc",
    only: Annotated[
        str | None,
        typer.Option("--only", metavar="drain|rollout|e2e", help="One part (default: all three)."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, metavar="N", help="End to end: worker processes.")
    ] = 1,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, metavar="N", help="Closed-loop connections.")
    ] = 32,
    duration: Annotated[
        float | None, typer.Option("--duration", metavar="SECONDS", help="Seconds per end-to-end run.")
    ] = None,
    soak: Annotated[
        float | None,
        typer.Option(
            "--soak", metavar="SECONDS", help="Seconds of the steady-memory run (default 300; 0: none)."
        ),
    ] = None,
    record: Annotated[
        bool | None,
        typer.Option("--record/--no-record", help="Write the report files (default: unless --quick)."),
    ] = None,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", metavar="DIR", help="Where report.json and report.md go."),
    ] = Path("benchmarks/results"),
    peers: Annotated[
        str | None,
        typer.Option(
            "--peers",
            metavar="mlflow,mlserver",
            help="End to end: the systems measured beside streamml (default: both; with --quick, mlflow). "
            "MLServer runs in an environment of its own, installed on first use.",
        ),
    ] = None,
    metrics: Annotated[
        bool, typer.Option("--metrics/--no-metrics", help="Prometheus metrics on in what is measured.")
    ] = True,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            help="1 Redis node vs a local 3-master cluster, and each durability's cost (needs wrk).",
        ),
    ] = False,
) -> None:
    """Benchmark the worker drain and the pipeline end to end, next to the naive worker and to
    `mlflow models serve` (needs the 'bench' extra); see benchmarks/README.md."""
    import dataclasses
    import sys

    command = (
        " ".join(["streamml", "bench", *sys.argv[sys.argv.index("bench") + 1 :]])
        if "bench" in sys.argv
        else "streamml bench"
    )
    if cluster:
        from streamml.bench.harness import cluster_main

        recorded = (not quick) if record is None else record
        cluster_main(
            quick=quick, record=recorded, output=output / "cluster", command=command, console=console
        )
        return

    if only not in (None, "drain", "rollout", "e2e"):
        raise typer.BadParameter("--only takes 'drain', 'rollout' or 'e2e'")
    try:
        from streamml.bench.harness import Plan
        from streamml.bench.harness import main as run_benchmarks
    except ImportError as exc:
        raise typer.BadParameter(
            f"the benchmarks need the 'bench' extra ({exc.name} is missing): pip install 'streamml[bench]'"
        ) from exc

    route_list = [r.strip() for r in routes.split(",") if r.strip()]
    defaults = Plan.for_ci(route_list) if quick else Plan(quick=False, routes=route_list)
    plan = dataclasses.replace(
        defaults,
        drain=only in (None, "drain"),
        rollout=only in (None, "rollout"),
        endtoend=only in (None, "e2e"),
        workers=workers,
        concurrency=concurrency,
        duration_s=duration if duration is not None else defaults.duration_s,
        soak_s=soak if soak is not None else defaults.soak_s,
        metrics=metrics,
        peers=tuple(p.strip() for p in peers.split(",") if p.strip())
        if peers is not None
        else defaults.peers,
    )
    run_benchmarks(
        plan,
        record=(not quick) if record is None else record,
        output=output,
        command=command,
        console=console,
    )


COMMANDS = (bench,)
