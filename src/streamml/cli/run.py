"""Running streamml: the whole stack (``up``), the gateway alone (``api``), one worker (``worker``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from streamml.cli.options import (
    Host,
    Insecure,
    LogLevel,
    PlainPanel,
    Port,
    StackDuration,
    StackWorkers,
    StateDir,
    console,
    gateway_settings,
    load_settings,
    setting_option,
)

Models = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        "-m",
        metavar="[ROUTE=]URI",
        help="Serve this registered model (models:/Name@alias or models:/Name/3) on ROUTE (default: its "
        "name in lower case); repeatable. Replaces the configured routes.",
    ),
]


def up(
    workers: StackWorkers = 2,
    port: Port = None,
    host: Host = None,
    insecure: Insecure = False,
    model: Models = None,
    rate: Annotated[
        float, typer.Option("--rate", metavar="RECORDS_PER_S", help="Producer records/s.")
    ] = 50.0,
    produce: Annotated[
        bool | None,
        typer.Option(
            "--produce/--no-produce",
            help="Run the synthetic producer of employee records (default: with the demo's routes only).",
        ),
    ] = None,
    duration: StackDuration = None,
    train_rows: Annotated[
        int,
        typer.Option("--train-rows", metavar="N", help="Synthetic rows to train missing demo models on."),
    ] = 20_000,
    plain: PlainPanel = False,
    state_dir: StateDir = None,
    log_level: LogLevel = "info",
) -> None:
    """Start everything: Redis, MLflow, the demo models if absent (with the demo's routes), gateway,
    workers and the producer."""
    from streamml.local.processes import configure_logging
    from streamml.local.stack import Stack
    from streamml.settings import DEFAULT_ROUTES

    configure_logging(log_level)
    settings = gateway_settings(state_dir, host, port, insecure)
    if model:
        settings.mlflow.routes = model_routes(model)
    demo = settings.mlflow.routes == DEFAULT_ROUTES
    producing = demo if produce is None else produce
    stack = Stack(settings, console, train_rows=train_rows)
    raise typer.Exit(
        stack.run(workers=workers, rate=rate if producing else 0.0, duration=duration, plain=plain)
    )


def serve(
    models: Annotated[
        list[str],
        typer.Argument(
            metavar="MODEL",
            help="A registered model to serve, models:/Name@alias or models:/Name/3, on the route named "
            "by ROUTE=URI (default: the model's name in lower case); several may be given.",
        ),
    ],
    workers: StackWorkers = 2,
    port: Port = None,
    host: Host = None,
    insecure: Insecure = False,
    duration: StackDuration = None,
    plain: PlainPanel = False,
    state_dir: StateDir = None,
    log_level: LogLevel = "info",
) -> None:
    """Serve models from an existing registry (MLFLOW_TRACKING_URI): Redis (embedded unless REDIS_URL
    is set), the gateway, workers and the live panel. Nothing is trained, nothing written to the
    registry."""
    from streamml.local.processes import configure_logging
    from streamml.local.stack import Stack

    configure_logging(log_level)
    settings = gateway_settings(state_dir, host, port, insecure)
    settings.mlflow.routes = model_routes(models)
    stack = Stack(settings, console)
    raise typer.Exit(stack.run(workers=workers, rate=0.0, duration=duration, plain=plain, serving=True))


def api(
    host: Host = None,
    port: Port = None,
    insecure: Insecure = False,
    processes: Annotated[
        int,
        typer.Option(
            "--processes", min=1, metavar="N", help="Gateway processes sharing the port (one per core)."
        ),
    ] = 1,
    state_dir: StateDir = None,
    log_level: LogLevel = "info",
) -> None:
    """Run the HTTP gateway."""
    from streamml.local.processes import configure_logging, run_gateway

    configure_logging(log_level)
    settings = gateway_settings(state_dir, host, port, insecure)
    run_gateway(settings, log_level=log_level, processes=processes)


def worker(
    burst: Annotated[bool, typer.Option("--burst", help="Drain the stream, then exit.")] = False,
    consumer: Annotated[
        str | None,
        setting_option(
            "--consumer",
            variable="STREAMML_WORKER_CONSUMER",
            metavar="NAME",
            help="Consumer name (default: unique per process).",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        setting_option(
            "--metrics-port",
            variable="STREAMML_WORKER_METRICS_PORT",
            metavar="PORT",
            help="Serve Prometheus metrics here.",
        ),
    ] = None,
    state_dir: StateDir = None,
    log_level: LogLevel = "info",
) -> None:
    """Run a stream worker (consumer group member)."""
    from streamml.local.processes import configure_logging, run_worker

    configure_logging(log_level)
    settings = load_settings(state_dir)
    if metrics_port is not None:
        settings.worker.metrics_port = metrics_port
    stats = run_worker(settings, burst=burst, consumer=consumer)
    if burst:
        console.print(
            f"drained: {stats.entries} requests, {stats.records} records, {stats.dead_lettered} dead-lettered"
        )


def score(
    source: Annotated[Path, typer.Argument(metavar="INPUT", help="CSV or Parquet, one record per row.")],
    route: Annotated[str, typer.Option("--route", "-r", metavar="ROUTE", help="The route to score on.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", metavar="OUTPUT", help="CSV or Parquet (by its suffix).")
    ],
    chunk_rows: Annotated[
        int, typer.Option("--chunk-rows", min=1, metavar="N", help="Rows per request.")
    ] = 5000,
    in_flight: Annotated[
        int, typer.Option("--in-flight", min=1, metavar="N", help="Requests awaiting their result at once.")
    ] = 16,
    proba: Annotated[
        bool, typer.Option("--proba", help="Class probabilities instead of predictions.")
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Score a whole file through the running workers: the input's rows in order with a prediction (or
    probabilities) and an error column. Rerun with the same arguments to continue after an interruption:
    nothing is scored twice."""
    import sys
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from streamml.cli.redis_access import on_redis
    from streamml.errors import StreammlError
    from streamml.gateway.submission import BacklogGate, IdempotencyStore, Submission
    from streamml.local.file_scoring import FileScorer, Interrupted, ScoreProgress
    from streamml.local.processes import make_registry
    from streamml.stream.publisher import Publisher

    settings = load_settings(state_dir)
    if route not in settings.mlflow.routes:
        raise typer.BadParameter(f"unknown route {route!r}; routes: {', '.join(settings.mlflow.routes)}")
    if not source.exists():
        raise typer.BadParameter(f"{source} does not exist", param_hint="INPUT")
    registry = make_registry(settings)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    interactive = sys.stdout.isatty()
    last_line = [0.0]

    def shown(progress: ScoreProgress) -> None:
        rate = f"{progress.rows_per_s:,.0f} records/s"
        if interactive:
            total = progress.total_rows if progress.total_rows >= 0 else None
            bar.update(task, completed=progress.rows_done, total=total, rate=rate)
        elif time.monotonic() - last_line[0] >= 5.0:
            last_line[0] = time.monotonic()
            print(
                f"{progress.rows_done:,} records scored ({progress.rows_failed:,} failed), {rate}", flush=True
            )

    async def run(redis: Any, topology: Any, s: Any) -> ScoreProgress:
        publisher = Publisher.of(redis, s.stream, cluster=s.redis.cluster)
        submission = Submission(
            publisher,
            registry,
            BacklogGate(publisher, s.gateway.max_backlog, s.gateway.backlog_check_s),
            IdempotencyStore(redis, topology, s.gateway.idempotency_ttl_s),
        )
        scorer = FileScorer(
            submission, redis, topology, chunk_rows=chunk_rows, in_flight=in_flight, proba=proba
        )
        return await scorer.score(source, route, output, shown)

    task = bar.add_task(f"scoring {source.name} on {route}", total=None, rate="")
    try:
        if interactive:
            with bar:
                done = on_redis(state_dir, run)
        else:
            done = on_redis(state_dir, run)
    except Interrupted as exc:
        console.print(f"{exc}; rerun the same command to continue")
        raise typer.Exit(130) from None
    except StreammlError as exc:
        console.print(f"[red]stopped:[/red] {exc}; rerun the same command to continue")
        raise typer.Exit(1) from None
    console.print(
        f"{done.rows_done:,} records -> {output} ({done.rows_failed:,} failed, {done.chunks_skipped} chunks "
        f"kept from an earlier run), {done.rows_per_s:,.0f} records/s"
    )


def model_routes(specs: list[str]) -> dict[str, str]:
    """``churn=models:/Churn@champion`` or ``models:/Churn@champion`` (route ``churn``) -> routes."""
    from streamml.models.refs import RouteTarget

    routes: dict[str, str] = {}
    for spec in specs:
        route, equals, uri = spec.partition("=")
        if not equals:
            route, uri = "", spec
        try:
            target = RouteTarget.parse(uri)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        route = route or re.sub(r"[^a-z0-9]+", "-", target.name.lower()).strip("-")
        if route in routes:
            raise typer.BadParameter(f"route {route!r} is given twice: name one of them (ROUTE=URI)")
        routes[route] = uri
    return routes


COMMANDS = (up, serve, api, worker, score)
