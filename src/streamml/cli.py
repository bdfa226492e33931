"""``streamml``: the command line. Settings are built here, in each command, and passed down."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from streamml.errors import FailureReason
from streamml.settings import Settings

app = typer.Typer(
    help="Real-time ML inference on Redis Streams with models from the MLflow Model Registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()

StateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", envvar="STREAMML_STATE_DIR", help="Redis data, MLflow db, predictions CSV."),
]
LogLevel = Annotated[str, typer.Option("--log-level", help="debug, info, warning, error.")]


def _settings(state_dir: Path | None) -> Settings:
    return Settings.load(state_dir)


@app.command()
def up(
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Worker processes.")] = 2,
    port: Annotated[int | None, typer.Option("--port", help="Gateway port (default 8800).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Gateway interface (default 127.0.0.1).")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a non-loopback gateway without API keys.")
    ] = False,
    rate: Annotated[float, typer.Option("--rate", help="Producer records/s.")] = 50.0,
    produce: Annotated[
        bool, typer.Option("--produce/--no-produce", help="Run the synthetic producer.")
    ] = True,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many seconds.")
    ] = None,
    train_rows: Annotated[
        int, typer.Option("--train-rows", help="Synthetic rows to train missing demo models on.")
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
    settings = _settings(state_dir)
    if port is not None:
        settings.gateway.port = port
    if host is not None:
        settings.gateway.host = host
    settings.gateway.insecure = settings.gateway.insecure or insecure
    stack = Stack(settings, console, train_rows=train_rows)
    raise typer.Exit(
        stack.run(workers=workers, rate=rate if produce else 0.0, duration=duration, plain=plain)
    )


@app.command()
def api(
    host: Annotated[str | None, typer.Option("--host", help="Interface (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default 8800).")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Allow a non-loopback address without API keys.")
    ] = False,
    processes: Annotated[
        int, typer.Option("--processes", min=1, help="Gateway processes sharing the port (one per core).")
    ] = 1,
    state_dir: StateDir = None,
    log_level: LogLevel = "info",
) -> None:
    """Run the HTTP gateway."""
    from streamml.local.processes import configure_logging, run_gateway

    configure_logging(log_level)
    settings = _settings(state_dir)
    settings.gateway.insecure = settings.gateway.insecure or insecure
    if host:
        settings.gateway.host = host
    if port:
        settings.gateway.port = port
    run_gateway(settings, log_level=log_level, processes=processes)


@app.command()
def worker(
    burst: Annotated[bool, typer.Option("--burst", help="Drain the stream, then exit.")] = False,
    consumer: Annotated[
        str | None, typer.Option("--consumer", help="Consumer name (default: unique).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", help="Serve Prometheus metrics here (STREAMML_WORKER_METRICS_PORT)."),
    ] = None,
    state_dir: StateDir = None,
    log_level: LogLevel = "info",
) -> None:
    """Run a stream worker (consumer group member)."""
    from streamml.local.processes import configure_logging, run_worker

    configure_logging(log_level)
    settings = _settings(state_dir)
    if metrics_port is not None:
        settings.worker.metrics_port = metrics_port
    stats = run_worker(settings, burst=burst, consumer=consumer)
    if burst:
        console.print(
            f"drained: {stats.entries} requests, {stats.records} records, {stats.dead_lettered} dead-lettered"
        )


@app.command()
def train(
    data: Annotated[
        Path | None, typer.Option("--data", exists=True, dir_okay=False, help="Real CSV.")
    ] = None,
    rows: Annotated[int, typer.Option("--rows", help="Synthetic rows when no --data.")] = 20_000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    if_missing: Annotated[
        bool,
        typer.Option("--if-missing", help="Only the demo models with no 'champion' yet (none: do nothing)."),
    ] = False,
    state_dir: StateDir = None,
    log_level: LogLevel = "info",
) -> None:
    """Train the three demo models and register them with alias 'champion'."""
    from streamml.local.demo import train_demo_models, training_frame
    from streamml.local.processes import configure_logging
    from streamml.models.training import missing_demo_models

    configure_logging(log_level)
    settings = _settings(state_dir)
    models = missing_demo_models(settings.tracking_uri()) if if_missing else None
    if models == []:
        console.print("every demo model has a 'champion' version already: nothing to train")
        return
    frame, source = training_frame(data, rows, seed)
    trained = train_demo_models(
        frame,
        tracking_uri=settings.tracking_uri(),
        experiment=settings.mlflow.experiment,
        trusted_types=settings.mlflow.trusted_types,
        source=source,
        seed=seed,
        models=models,
    )
    table = Table(
        "model",
        "version",
        "holdout macro-F1",
        "accuracy",
        "train rows",
        title=f"trained on {source}",
    )
    for model in trained:
        table.add_row(
            model.name,
            model.version,
            f"{model.macro_f1:.3f}",
            f"{model.accuracy:.3f}",
            str(model.rows),
        )
    console.print(table)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="A live panel, refreshed every second, until Ctrl-C.")
    ] = False,
    plain: Annotated[bool, typer.Option("--plain", help="With --watch: a line per second.")] = False,
    state_dir: StateDir = None,
) -> None:
    """Stream length, group lag and pending, consumers and their idle time, results stream length."""
    from streamml.local.processes import make_redis
    from streamml.stream.broker import Broker

    settings = _settings(state_dir)
    if watch:
        from streamml.local.live import watch as watch_live

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(watch_live(settings, console, plain=plain))
        return

    async def read() -> dict[str, Any]:
        redis = make_redis(settings)
        try:
            return await Broker(redis, settings.streams).status()
        finally:
            await redis.aclose()

    report = asyncio.run(read())
    if as_json:
        print(json.dumps(report, indent=2))
        return
    console.print(
        f"stream [bold]{report['stream']}[/]: {report['length']} entries · results "
        f"{report['results_stream']}: {report['results_length']} · dead letters: {report['dead_letters']}"
    )
    for group in report["groups"]:
        console.print(f"group [bold]{group['name']}[/]: lag {group['lag']}, pending {group['pending']}")
        table = Table("consumer", "pending", "idle")
        for c in group["consumers"]:
            table.add_row(c["name"], str(c["pending"]), f"{c['idle_ms'] / 1000:.1f}s")
        console.print(table)
    if "partitions" in report:
        table = Table("partition", "stream", "entries", "lag", "pending", "dead letters")
        for part in report["partitions"]:
            group = next((g for g in part["groups"] if g["name"] == settings.streams.group), None)
            table.add_row(
                str(part["partition"]),
                part["stream"],
                str(part["length"]),
                str(group["lag"]) if group else "-",
                str(group["pending"]) if group else "-",
                str(part["dead_letters"]),
            )
        console.print(table)


@app.command()
def profile(
    csv: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV to profile.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Profile JSON to write.")],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the copula calibration.")] = 0,
) -> None:
    """Compute a dataset's statistical profile (marginals, null rates, Gaussian copula)."""
    from streamml.synthetic.profile import profile_csv

    result = profile_csv(csv, seed=seed)
    output.write_text(result.to_json())
    kinds = {c.name: c.kind for c in result.columns}
    console.print(f"profiled {result.source['rows']} rows, {len(kinds)} columns -> {output}")
    console.print(", ".join(f"{name} ({kind})" for name, kind in kinds.items()))


@app.command()
def synth(
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write.")],
    rows: Annotated[int, typer.Option("--rows", min=1)] = 1000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    profile_path: Annotated[Path | None, typer.Option("--profile", help="Default: shipped profile.")] = None,
    drift: Annotated[
        list[str] | None, typer.Option("--drift", help="e.g. 'Mental Fatigue Score=+1.5sd'.")
    ] = None,
    no_nulls: Annotated[bool, typer.Option("--no-nulls", help="Generate complete rows.")] = False,
) -> None:
    """Write synthetic rows drawn from a profile, in the real data's columns and formats."""
    from streamml.synthetic.profile import Profile
    from streamml.synthetic.synth import generate, parse_drifts

    try:
        drifts = parse_drifts(drift or [])
        profile = Profile.load(profile_path)
        started = time.perf_counter()
        frame = generate(profile, rows, seed=seed, nulls=not no_nulls, drift=drifts)
        generated_s = time.perf_counter() - started
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    frame.to_csv(output, index=False)
    console.print(
        f"wrote {len(frame)} rows x {len(frame.columns)} columns to {output} "
        f"(generated in {generated_s:.2f} s: {len(frame) / max(generated_s, 1e-9):,.0f} rows/s)"
    )


@app.command()
def produce(
    rate: Annotated[float, typer.Option("--rate", help="Target records per second.")] = 50.0,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Records per request.")] = 1,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Seconds (default: until Ctrl-C).")
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Records in all (instead of --duration).")
    ] = None,
    routes: Annotated[
        str, typer.Option("--routes", "--model", help="'svm' or a mix 'svm=1,knn=1,lightgbm=2'.")
    ] = ("svm=1,knn=1,lightgbm=1"),
    via: Annotated[
        str, typer.Option("--via", help="http (the gateway) or redis (straight to the stream).")
    ] = "http",
    url: Annotated[str | None, typer.Option("--url", help="Gateway URL (default from settings).")] = None,
    drift: Annotated[
        list[str] | None, typer.Option("--drift", help="e.g. 'Mental Fatigue Score=+1.5sd'.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Requests in flight at most.")
    ] = 32,
    profile_path: Annotated[Path | None, typer.Option("--profile", help="Default: shipped profile.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No live display; print a JSON summary.")] = False,
    state_dir: StateDir = None,
) -> None:
    """Send synthetic records to the gateway (or the stream) at a target rate."""
    from streamml.local.processes import direct_submission
    from streamml.synthetic.producer import run_producer

    settings = _settings(state_dir)
    try:
        summary = run_producer(
            settings,
            rate=rate,
            batch=batch,
            duration=duration,
            count=count,
            routes=routes,
            via=via,
            url=url,
            drift=drift or [],
            seed=seed,
            concurrency=concurrency,
            profile_path=profile_path,
            quiet=quiet,
            console=console,
            open_submit=lambda: direct_submission(settings),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if quiet:
        print(json.dumps(summary))


@app.command()
def fidelity(
    data: Annotated[Path, typer.Option("--data", exists=True, dir_okay=False, help="The real CSV.")],
    rows: Annotated[int, typer.Option("--rows", help="Synthetic rows per generator.")] = 20_000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    profile_path: Annotated[Path | None, typer.Option("--profile", help="Default: shipped profile.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write a Markdown report.")] = None,
) -> None:
    """Measure synthetic-data fidelity (KS, shares, nulls, correlations, TSTR) vs a naive baseline."""
    import pandas as pd

    from streamml.synthetic.fidelity import evaluate, to_markdown
    from streamml.synthetic.profile import Profile

    result = evaluate(pd.read_csv(data), Profile.load(profile_path), rows=rows, seed=seed)
    command = f"streamml fidelity --data {data.name} --rows {rows} --seed {seed}"
    report = to_markdown(result, command)
    print(report)  # plain: Markdown must not be wrapped to the terminal's width
    if output:
        output.write_text(report)


@app.command()
def bench(
    quick: Annotated[
        bool, typer.Option("--quick", help="Small sizes, no memory run (the CI smoke run, under 2 minutes).")
    ] = False,
    routes: Annotated[
        str, typer.Option("--routes", help="Comma-separated routes; the first is also the end-to-end one.")
    ] = "lightgbm,svm,knn",
    only: Annotated[
        str | None, typer.Option("--only", help="'drain', 'rollout' or 'e2e' (default: all three).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="End to end: worker processes.")] = 1,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Closed-loop connections.")] = 32,
    duration: Annotated[float | None, typer.Option("--duration", help="Seconds per end-to-end run.")] = None,
    soak: Annotated[
        float | None, typer.Option("--soak", help="Seconds of the steady-memory run (default 300; 0: none).")
    ] = None,
    record: Annotated[
        bool | None,
        typer.Option("--record/--no-record", help="Write the report files (default: unless --quick)."),
    ] = None,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Where report.json and report.md go."),
    ] = Path("benchmarks/results"),
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
    )
    run_benchmarks(
        plan,
        record=(not quick) if record is None else record,
        output=output,
        command=command,
        console=console,
    )


def _move_aliases(route: str, state_dir: Path | None, action: str) -> None:
    from streamml.errors import LifecycleRefused
    from streamml.local.processes import make_registry
    from streamml.models.lifecycle import Lifecycle

    settings = _settings(state_dir)
    lifecycle = Lifecycle(
        make_registry(settings),
        challenger=settings.mlflow.challenger_alias,
        previous=settings.mlflow.previous_alias,
    )
    try:
        moves = lifecycle.promote(route) if action == "promote" else lifecycle.rollback(route)
    except LifecycleRefused as exc:
        console.print(f"[red]refused:[/] {exc}")
        raise typer.Exit(1) from exc
    for move in moves:
        console.print(move.describe())
    console.print(
        f"workers and gateways follow within {settings.mlflow.alias_refresh_s:g} s "
        "(STREAMML_MLFLOW_ALIAS_REFRESH_S), without a restart"
    )


@app.command()
def promote(
    route: Annotated[str, typer.Argument(help="The route whose model to promote, e.g. lightgbm.")],
    state_dir: StateDir = None,
) -> None:
    """Make the 'challenger' version the route's model; the replaced one is kept as 'previous'."""
    _move_aliases(route, state_dir, "promote")


@app.command()
def rollback(
    route: Annotated[str, typer.Argument(help="The route to roll back, e.g. lightgbm.")],
    state_dir: StateDir = None,
) -> None:
    """Move the route back to its 'previous' version."""
    _move_aliases(route, state_dir, "rollback")


canary_app = typer.Typer(
    help="Let a route's challenger answer a share of its requests.", no_args_is_help=True
)
shadow_app = typer.Typer(help="What the challengers answered in the champions' shadow.", no_args_is_help=True)
app.add_typer(canary_app, name="canary")
app.add_typer(shadow_app, name="shadow")


def _rollouts(state_dir: Path | None, action: Callable[[Any], Awaitable[Any]]) -> Any:
    from streamml.stream.rollout import RolloutStore

    return _on_redis(state_dir, lambda redis, settings: action(RolloutStore.of(redis, settings.streams)))


@canary_app.command("set")
def canary_set(
    route: Annotated[str, typer.Argument(help="e.g. lightgbm.")],
    share: Annotated[str, typer.Argument(help="Share the challenger answers: 10% or 0.1; 0 ends it.")],
    state_dir: StateDir = None,
) -> None:
    """Send a share of a route's requests to its challenger as the answer (every worker, within a second)."""
    from streamml.stream.rollout import parse_share

    settings = _settings(state_dir)
    if route not in settings.mlflow.routes:
        raise typer.BadParameter(f"no route {route!r}; routes: {', '.join(settings.mlflow.routes)}")
    try:
        value = parse_share(share)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    _rollouts(state_dir, lambda store: store.set_canary(route, value))
    console.print(
        f"{route}: the {settings.mlflow.challenger_alias!r} version answers {value:.1%} of requests"
        if value
        else f"{route}: canary ended, the champion answers every request"
    )


@canary_app.command("show")
def canary_show(state_dir: StateDir = None) -> None:
    """The canary share of every route."""
    shares = _rollouts(state_dir, lambda store: store.canary())
    for route in _settings(state_dir).mlflow.routes:
        console.print(f"{route}: {shares.get(route, 0.0):.1%}")


@shadow_app.command("report")
def shadow_report(
    route: Annotated[str | None, typer.Option("--route", help="Only this route.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON, as GET /shadow serves it.")] = False,
    state_dir: StateDir = None,
) -> None:
    """Agreement, flips and predict time of each challenger against the champion it shadowed."""
    reports = [r.as_dict() for r in _rollouts(state_dir, lambda store: store.shadow_reports(route))]
    if as_json:
        print(json.dumps({"pairs": reports}, indent=2))
        return
    if not reports:
        console.print("no shadow scoring yet: set a 'challenger' alias on a route's registered model")
        return
    for report in reports:
        console.print(_shadow_table(report))


def _shadow_table(report: dict[str, Any]) -> Table:
    agreement = report["agreement"]
    low_high = report["agreement_95"]
    title = (
        f"{report['route']}: {report['model']} v{report['champion_version']} (champion) vs "
        f"v{report['challenger_version']} (challenger) — "
        + (
            f"agreement {agreement:.1%} [95% {low_high[0]:.1%}..{low_high[1]:.1%}]"
            if agreement is not None
            else "no records compared"
        )
    )
    labels = sorted(set(report["champion_classes"]) | set(report["challenger_classes"]))
    table = Table("champion \\ challenger", *labels, title=title)
    for label in labels:
        row = report["flips"].get(label, {})
        table.add_row(label, *(str(row.get(other, 0)) for other in labels))
    notes = [
        f"compared {report['records_compared']}, sampled out {report['records_sampled_out']}, "
        f"challenger errors {report['challenger_errors']}",
        f"predict per batch: champion {report['champion_predict_ms_per_batch']} ms, "
        f"challenger {report['challenger_predict_ms_per_batch']} ms",
    ]
    if report["incompatible"]:
        notes.append(f"cannot shadow: {report['incompatible']}")
    if report["last_error"]:
        notes.append(f"last challenger error: {report['last_error']}")
    table.caption = "\n".join(notes)
    return table


@app.command()
def drift(
    route: Annotated[str | None, typer.Option("--route", help="Only this route.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON, as GET /drift serves it.")] = False,
    state_dir: StateDir = None,
) -> None:
    """How each route's recent records differ from its model version's training data."""
    from streamml.local.processes import make_registry
    from streamml.stream.drift import drift_reports

    settings = _settings(state_dir)
    if route is not None and route not in settings.mlflow.routes:
        raise typer.BadParameter(f"no route {route!r}; routes: {', '.join(settings.mlflow.routes)}")
    registry = make_registry(settings)
    reports = _on_redis(
        state_dir,
        lambda redis, s: drift_reports(redis, registry, s.streams.stream, s.drift, route),
    )
    if as_json:
        print(json.dumps({"routes": reports}, indent=2))
        return
    for name, report in reports.items():
        console.print(_drift_table(name, report))


METHOD_NAMES = {"wasserstein_normed": "Wasserstein/sd", "jensen_shannon": "Jensen-Shannon"}


def _drift_table(route: str, report: dict[str, Any]) -> Table | str:
    version = f"{report.get('model', '?')} v{report.get('version', '?')}"
    head = f"{route}: {version}, {report['records']} recent records" if "records" in report else route
    if report["status"] not in ("ok", "drifted"):
        return f"{head}: [yellow]{report['status']}[/] ({report.get('reason', '')})"
    status = "[red]drifted[/]" if report["status"] == "drifted" else "[green]ok[/]"
    table = Table(
        "feature",
        "method",
        "score",
        "null rate (train)",
        "unseen",
        "drifted",
        title=f"{head}: {status}, "
        f"{len(report['drifted_features'])} of {len(report['features'])} features drifted",
    )
    for feature, entry in report["features"].items():
        table.add_row(
            feature,
            METHOD_NAMES.get(entry["method"], entry["method"]),
            f"{entry['score']:.3f}" if entry["score"] is not None else "–",
            f"{entry['null_rate']:.1%} ({entry['null_rate_reference']:.1%})",
            str(entry.get("unseen", "")),
            "[red]yes[/]" if entry["drifted"] else "no",
        )
    prediction = report.get("prediction")
    if prediction:
        table.caption = (
            f"predictions: Jensen-Shannon {prediction['score']:.3f}"
            f"{' (drifted)' if prediction['drifted'] else ''}; window {prediction['window']}, "
            f"training labels {prediction['reference']}"
        )
    return table


dlq_app = typer.Typer(help="Inspect and operate the dead-letter stream.", no_args_is_help=True)
sink_app = typer.Typer(help="Maintain the sinks.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")
app.add_typer(sink_app, name="sink")

Ids = Annotated[list[str] | None, typer.Argument(help="Dead-letter ids (default: all, or --reason).")]
Reason = Annotated[
    FailureReason | None,
    typer.Option("--reason", help="Only the letters dead-lettered for this reason."),
]


def _on_redis(state_dir: Path | None, action: Callable[[Any, Settings], Awaitable[Any]]) -> Any:
    """Run ``action(redis, settings)`` on a client of the configured Redis, then close it."""
    from streamml.local.processes import make_redis

    settings = _settings(state_dir)

    async def run() -> Any:
        redis = make_redis(settings)
        try:
            return await action(redis, settings)
        finally:
            await redis.aclose()

    return asyncio.run(run())


def _dead_letters(state_dir: Path | None, action: Callable[[Any], Awaitable[Any]]) -> Any:
    from streamml.stream.deadletters import DeadLetters

    return _on_redis(state_dir, lambda redis, settings: action(DeadLetters.of(redis, settings.streams)))


@dlq_app.command("list")
def dlq_list(
    reason: Reason = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="Show at most this many (oldest first).")
    ] = 100,
    state_dir: StateDir = None,
) -> None:
    """Dead letters with their reason, delivery count and error."""
    letters = _dead_letters(state_dir, lambda dlq: dlq.entries(reason=reason, limit=limit))
    table = Table("id", "request_id", "route", "reason", "deliveries", "error", title="dead letters")
    for letter in letters:
        table.add_row(*letter.summary().values())
    console.print(table)


@dlq_app.command("show")
def dlq_show(
    letter_id: Annotated[str, typer.Argument(help="Dead-letter id.")], state_dir: StateDir = None
) -> None:
    """Every field of one dead letter."""
    letter = _dead_letters(state_dir, lambda dlq: dlq.show(letter_id))
    if letter is None:
        console.print(f"no dead letter {letter_id}")
        raise typer.Exit(1)
    print(json.dumps(letter.fields, indent=2))


@dlq_app.command("replay")
def dlq_replay(ids: Ids = None, reason: Reason = None, state_dir: StateDir = None) -> None:
    """Send dead letters back to the request stream (after fixing their cause)."""
    count = _dead_letters(state_dir, lambda dlq: dlq.replay(ids or [], reason=reason))
    console.print(f"replayed {count} dead letters")


@dlq_app.command("purge")
def dlq_purge(
    ids: Ids = None,
    reason: Reason = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="Purge every letter when no id or reason is given.")
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Delete dead letters for good."""
    if not ids and reason is None and not yes:
        raise typer.BadParameter("give ids, --reason, or --yes to purge every dead letter")
    count = _dead_letters(state_dir, lambda dlq: dlq.purge(ids or [], reason=reason))
    console.print(f"purged {count} dead letters")


@sink_app.command("dedup")
def sink_dedup(
    output: Annotated[Path, typer.Option("--output", "-o", help="Deduplicated CSV to write.")],
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Default: the predictions CSV.")] = None,
    state_dir: StateDir = None,
) -> None:
    """Write the predictions CSV without rows repeated by at-least-once re-delivery."""
    from streamml.stream.sinks import dedup_csv

    source = csv_path or _settings(state_dir).predictions_csv()
    kept, dropped = dedup_csv(source, output)
    console.print(f"{kept} rows kept, {dropped} duplicates dropped -> {output}")
