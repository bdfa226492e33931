"""Running streamml: the whole stack (``up``), the gateway alone (``api``), one worker (``worker``)."""

from __future__ import annotations

from typing import Annotated

import typer

from streamml.cli.options import (
    Host,
    Insecure,
    LogLevel,
    Port,
    StateDir,
    console,
    gateway_settings,
    load_settings,
    setting_option,
)


def up(
    workers: Annotated[
        int, typer.Option("--workers", "-w", min=1, metavar="N", help="Worker processes.")
    ] = 2,
    port: Port = None,
    host: Host = None,
    insecure: Insecure = False,
    rate: Annotated[
        float, typer.Option("--rate", metavar="RECORDS_PER_S", help="Producer records/s.")
    ] = 50.0,
    produce: Annotated[
        bool, typer.Option("--produce/--no-produce", help="Run the synthetic producer.")
    ] = True,
    duration: Annotated[
        float | None, typer.Option("--duration", metavar="SECONDS", help="Stop after this many seconds.")
    ] = None,
    train_rows: Annotated[
        int,
        typer.Option("--train-rows", metavar="N", help="Synthetic rows to train missing demo models on."),
    ] = 20_000,
    plain: Annotated[
        bool,
        typer.Option(
            "--plain", help="A status line per interval instead of the live panel (automatic off a tty)."
        ),
    ] = False,
    state_dir: StateDir = None,
    log_level: LogLevel = "info",
) -> None:
    """Start everything: Redis, MLflow, demo models if absent, gateway, workers and producer."""
    from streamml.local.processes import configure_logging
    from streamml.local.stack import Stack

    configure_logging(log_level)
    settings = gateway_settings(state_dir, host, port, insecure)
    stack = Stack(settings, console, train_rows=train_rows)
    raise typer.Exit(
        stack.run(workers=workers, rate=rate if produce else 0.0, duration=duration, plain=plain)
    )


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


COMMANDS = (up, api, worker)
