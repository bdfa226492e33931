"""Changing models safely: train the demo models, promote a challenger or roll back, canary shares,
what challengers answered in the champions' shadow, drift against the training data."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from streamml.cli.options import (
    AsJson,
    Command,
    LogLevel,
    RouteFilter,
    StateDir,
    console,
    load_settings,
    require_route,
)
from streamml.cli.redis_access import on_redis

canary_app = typer.Typer(
    help="Let a route's challenger answer a share of its requests.", no_args_is_help=True
)
shadow_app = typer.Typer(help="What the challengers answered in the champions' shadow.", no_args_is_help=True)


def train(
    data: Annotated[
        Path | None,
        typer.Option("--data", exists=True, dir_okay=False, metavar="CSV", help="Train on this real CSV."),
    ] = None,
    rows: Annotated[int, typer.Option("--rows", metavar="N", help="Synthetic rows when no --data.")] = 20_000,
    seed: Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the generator and split.")] = 0,
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
    settings = load_settings(state_dir)
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


def _move_aliases(route: str, state_dir: Path | None, action: str) -> None:
    from streamml.errors import LifecycleRefused
    from streamml.local.processes import make_registry
    from streamml.models.lifecycle import Lifecycle

    settings = load_settings(state_dir)
    lifecycle = Lifecycle(
        make_registry(settings),
        challenger=settings.rollout.challenger_alias,
        previous=settings.rollout.previous_alias,
    )
    try:
        moves = asyncio.run(lifecycle.promote(route) if action == "promote" else lifecycle.rollback(route))
    except LifecycleRefused as exc:
        console.print(f"[red]refused:[/] {exc}")
        raise typer.Exit(1) from exc
    for move in moves:
        console.print(move.describe())
    console.print(
        f"workers and gateways follow within {settings.mlflow.alias_refresh_s:g} s "
        "(STREAMML_MLFLOW_ALIAS_REFRESH_S), without a restart"
    )


def promote(
    route: Annotated[
        str, typer.Argument(metavar="ROUTE", help="The route whose model to promote, e.g. lightgbm.")
    ],
    if_better: Annotated[
        bool,
        typer.Option(
            "--if-better",
            help="Only if the challenger was right more often than the champion on the same labelled "
            "records (feedback), significantly (McNemar, STREAMML_FEEDBACK_ALPHA).",
        ),
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Make the 'challenger' version the route's model; the replaced one is kept as 'previous'."""
    if if_better:
        better, why = _challenger_is_better(route, state_dir)
        if not better:
            console.print(f"[red]not promoted:[/] {why}")
            raise typer.Exit(1)
        console.print(why)
    _move_aliases(route, state_dir, "promote")


def _challenger_is_better(route: str, state_dir: Path | None) -> tuple[bool, str]:
    from streamml.local.processes import make_registry
    from streamml.rollout.ground_truth import FeedbackStore, challenger_is_better

    settings = load_settings(state_dir)
    require_route(settings, route)
    resolver = make_registry(settings).resolver
    champion = asyncio.run(resolver.resolve(route))
    challenger = asyncio.run(resolver.challenger(route))
    if challenger is None or challenger.version == champion.version:
        return False, f"route {route!r} has no challenger other than its champion v{champion.version}"
    reports = on_redis(
        state_dir, lambda redis, topology, s: FeedbackStore(redis, topology, s.feedback).reports(route)
    )
    pair = next(
        (
            r
            for r in reports
            if r.get("champion") == champion.version and r.get("challenger") == challenger.version
        ),
        None,
    )
    return challenger_is_better(pair, settings.feedback.alpha)


def rollback(
    route: Annotated[str, typer.Argument(metavar="ROUTE", help="The route to roll back, e.g. lightgbm.")],
    state_dir: StateDir = None,
) -> None:
    """Move the route back to its 'previous' version."""
    _move_aliases(route, state_dir, "rollback")


def _canaries(state_dir: Path | None, action: Callable[[Any], Awaitable[Any]]) -> Any:
    from streamml.rollout.canary import CanaryStore

    return on_redis(state_dir, lambda redis, topology, settings: action(CanaryStore(redis, topology)))


@canary_app.command("set", cls=Command)
def canary_set(
    route: Annotated[str, typer.Argument(metavar="ROUTE", help="e.g. lightgbm.")],
    share: Annotated[
        str, typer.Argument(metavar="SHARE", help="Share the challenger answers: 10% or 0.1; 0 ends it.")
    ],
    state_dir: StateDir = None,
) -> None:
    """Send a share of a route's requests to its challenger as the answer (every worker, within a second)."""
    from streamml.rollout.canary import parse_share

    settings = load_settings(state_dir)
    require_route(settings, route)
    try:
        value = parse_share(share)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    _canaries(state_dir, lambda store: store.set(route, value))
    console.print(
        f"{route}: the {settings.rollout.challenger_alias!r} version answers {value:.1%} of requests"
        if value
        else f"{route}: canary ended, the champion answers every request"
    )


@canary_app.command("show", cls=Command)
def canary_show(state_dir: StateDir = None) -> None:
    """The canary share of every route."""
    shares = _canaries(state_dir, lambda store: store.shares())
    for route in load_settings(state_dir).mlflow.routes:
        console.print(f"{route}: {shares.get(route, 0.0):.1%}")


@shadow_app.command("report", cls=Command)
def shadow_report(route: RouteFilter = None, as_json: AsJson = False, state_dir: StateDir = None) -> None:
    """Agreement, flips and predict time of each challenger against the champion it shadowed."""
    from streamml.rollout.shadow_store import ShadowStore

    reports = [
        r.as_dict()
        for r in on_redis(state_dir, lambda redis, topology, _: ShadowStore(redis, topology).reports(route))
    ]
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


def accuracy(route: RouteFilter = None, as_json: AsJson = False, state_dir: StateDir = None) -> None:
    """How often each version was right, against the feedback received (in total and recently), and
    each challenger against its champion on the same labelled records."""
    from streamml.rollout.ground_truth import FeedbackStore

    settings = load_settings(state_dir)
    require_route(settings, route)
    reports = on_redis(
        state_dir, lambda redis, topology, s: FeedbackStore(redis, topology, s.feedback).reports(route)
    )
    versions = [r for r in reports if "version" in r]
    pairs = [r for r in reports if "challenger" in r]
    if as_json:
        print(json.dumps({"versions": versions, "pairs": pairs}, indent=2))
        return
    if not reports:
        console.print("no feedback yet: POST /feedback or `streamml feedback FILE` with true labels")
        return
    table = Table("route", "version", "labelled", "accuracy / MAE", "recent labelled", "recent")
    for r in versions:
        total, recent = r["total"], r["window"]
        table.add_row(
            r["route"],
            r["version"],
            str(total["records"]),
            _score(total),
            str(recent["records"]),
            _score(recent),
        )
    console.print(table)
    for pair in pairs:
        console.print(
            f"{pair['route']}: champion v{pair['champion']} {_percent(pair['champion_accuracy'])} vs "
            f"challenger v{pair['challenger']} {_percent(pair['challenger_accuracy'])} on the same "
            f"{pair['records']} labelled records; McNemar p = {pair['mcnemar_p']:.3g}"
        )


def _score(summary: dict[str, Any]) -> str:
    if "mae" in summary:
        return "-" if summary["mae"] is None else f"MAE {summary['mae']:.4g}, RMSE {summary['rmse']:.4g}"
    return _percent(summary["accuracy"])


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def feedback(
    path: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="CSV or Parquet with columns request_id, label and (for requests of several records) "
            "record_index.",
        ),
    ],
    state_dir: StateDir = None,
) -> None:
    """Send true labels, as POST /feedback does: each counted once, however often it is sent."""
    import pandas as pd

    from streamml.rollout.ground_truth import FeedbackStore, parse_feedback

    frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    missing = {"request_id", "label"} - set(frame.columns)
    if missing:
        raise typer.BadParameter(f"{path} has no column {', '.join(sorted(missing))}", param_hint="FILE")
    if "record_index" not in frame.columns:
        frame["record_index"] = 0
    records = frame[["request_id", "record_index", "label"]].to_dict(orient="records")
    settings = load_settings(state_dir)
    size = settings.feedback.max_records

    async def send(redis: Any, topology: Any, s: Any) -> dict[str, int]:
        store = FeedbackStore(redis, topology, s.feedback)
        totals = {"received": 0, "recorded": 0, "repeated": 0, "unmatched": 0}
        for start in range(0, len(records), size):
            items = parse_feedback({"feedback": records[start : start + size]}, size)
            outcome = (await store.record(items)).as_dict()
            for name in totals:
                totals[name] += outcome[name]
        return totals

    totals = on_redis(state_dir, send)
    console.print(
        f"{totals['received']} received: {totals['recorded']} recorded, {totals['repeated']} repeated "
        f"(counted before), {totals['unmatched']} unmatched (unknown or expired request ids)"
    )


def drift(route: RouteFilter = None, as_json: AsJson = False, state_dir: StateDir = None) -> None:
    """How each route's recent records differ from its model version's training data."""
    from streamml.local.processes import make_registry
    from streamml.rollout.drift_monitor import drift_reports

    settings = load_settings(state_dir)
    require_route(settings, route)
    registry = make_registry(settings)
    reports = on_redis(
        state_dir, lambda redis, topology, s: drift_reports(redis, registry, topology, s.drift, route)
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


COMMANDS = (train, promote, rollback, drift, accuracy, feedback)
GROUPS = {"canary": canary_app, "shadow": shadow_app}
