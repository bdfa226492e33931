"""Operating the pipeline: its state (``status``), the dead letters (``dlq``), the sinks (``sink``), and
the settings a process runs with (``config``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from streamml.cli.options import AsJson, Command, StateDir, console, load_settings
from streamml.cli.redis_access import on_redis
from streamml.errors import FailureReason

dlq_app = typer.Typer(help="Inspect and operate the dead-letter stream.", no_args_is_help=True)
sink_app = typer.Typer(help="Maintain the sinks.", no_args_is_help=True)
log_app = typer.Typer(
    help="The prediction log: every prediction with its inputs, in Parquet.", no_args_is_help=True
)

Ids = Annotated[
    list[str] | None, typer.Argument(metavar="[ID]...", help="Dead-letter ids (default: all, or --reason).")
]
Reason = Annotated[
    FailureReason | None,
    typer.Option("--reason", metavar="REASON", help="Only the letters dead-lettered for this reason."),
]


def status(
    as_json: AsJson = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="A live panel, refreshed every second, until Ctrl-C.")
    ] = False,
    plain: Annotated[bool, typer.Option("--plain", help="With --watch: a line per second.")] = False,
    state_dir: StateDir = None,
) -> None:
    """Stream length, group lag and pending, consumers and their idle time, results stream length, and
    the model version each worker serves per route (loaded, or why not)."""
    from dataclasses import asdict

    from streamml.monitoring.model_states import ModelStates
    from streamml.stream.nodes import SlotClients
    from streamml.stream.status import StreamStatus

    async def read(redis: Any, topology: Any, _: Any) -> dict[str, Any]:
        report = await StreamStatus(SlotClients(redis), topology).status()
        loads = await ModelStates(redis, topology).read()
        report["models"] = {route: [asdict(load) for load in found] for route, found in loads.items()}
        return report

    settings = load_settings(state_dir)
    if watch:
        from streamml.local.live import watch as watch_live

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(watch_live(settings, console, plain=plain))
        return
    report: dict[str, Any] = on_redis(state_dir, read)
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
            group = next((g for g in part["groups"] if g["name"] == settings.stream.group), None)
            table.add_row(
                str(part["partition"]),
                part["stream"],
                str(part["length"]),
                str(group["lag"]) if group else "-",
                str(group["pending"]) if group else "-",
                str(part["dead_letters"]),
            )
        console.print(table)
    _print_models(report["models"])


def _print_models(models: dict[str, list[dict[str, Any]]]) -> None:
    """Each route's version as the live workers hold it: loaded (as what), or the load error."""
    table = Table("route", "model", "version", "workers", "state", title="models in the workers")
    for route, loads in sorted(models.items()):
        by_version: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for load in loads:
            by_version.setdefault((load["name"], load["version"], load["state"]), []).append(load)
        for (name, version, state), same in sorted(by_version.items()):
            shown = state if state != "loaded" else f"loaded ({same[0]['kind']})"
            if state == "failed":
                shown = f"[red]failed:[/] {same[0]['error']}"
            table.add_row(route, name, version, str(len(same)), shown)
    console.print(table)


def config(
    reference: Annotated[
        bool, typer.Option("--reference", help="Print docs/configuration.md: every setting, documented.")
    ] = False,
    as_json: AsJson = False,
    state_dir: StateDir = None,
) -> None:
    """The settings this process would run with, and where each value comes from (default,
    environment, file, flag); secrets masked."""
    from streamml.settings_reference import effective_settings, reference_markdown

    if reference:
        print(reference_markdown(), end="")
        return
    flags = {"general.state_dir": "--state-dir"} if state_dir is not None else {}
    rows = effective_settings(load_settings(state_dir), flags=flags)
    if as_json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
        return
    table = Table("variable", "value", "source", title="effective settings")
    for row in rows:
        table.add_row(row.variable, row.value, row.source)
    console.print(table)


def _dead_letters(state_dir: Path | None, action: Callable[[Any], Awaitable[Any]]) -> Any:
    from streamml.stream.deadletters import DeadLetters
    from streamml.stream.nodes import SlotClients
    from streamml.stream.publisher import Publisher

    def letters(redis: Any, topology: Any, settings: Any) -> Awaitable[Any]:
        publisher = Publisher(SlotClients(redis), topology, settings.stream)
        return action(DeadLetters(redis, topology, publisher))

    return on_redis(state_dir, letters)


@dlq_app.command("list", cls=Command)
def dlq_list(
    reason: Reason = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, metavar="N", help="Show at most this many (oldest first).")
    ] = 100,
    state_dir: StateDir = None,
) -> None:
    """Dead letters with their reason, delivery count and error."""
    letters = _dead_letters(state_dir, lambda dlq: dlq.entries(reason=reason, limit=limit))
    table = Table("id", "request_id", "route", "reason", "deliveries", "error", title="dead letters")
    for letter in letters:
        table.add_row(*letter.summary().values())
    console.print(table)


@dlq_app.command("show", cls=Command)
def dlq_show(
    letter_id: Annotated[str, typer.Argument(metavar="ID", help="Dead-letter id.")],
    state_dir: StateDir = None,
) -> None:
    """Every field of one dead letter."""
    letter = _dead_letters(state_dir, lambda dlq: dlq.show(letter_id))
    if letter is None:
        console.print(f"no dead letter {letter_id}")
        raise typer.Exit(1)
    print(json.dumps(letter.fields, indent=2))


@dlq_app.command("replay", cls=Command)
def dlq_replay(
    ids: Ids = None,
    reason: Reason = None,
    every: Annotated[
        bool, typer.Option("--all", help="Replay every letter when no id or reason is given.")
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Send dead letters back to the request stream (after fixing their cause)."""
    if not ids and reason is None and not every:
        raise typer.BadParameter("give ids, --reason, or --all to replay every dead letter")
    count = _dead_letters(state_dir, lambda dlq: dlq.replay(ids or [], reason=reason))
    console.print(f"replayed {count} dead letters")


@dlq_app.command("purge", cls=Command)
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


@sink_app.command("dedup", cls=Command)
def sink_dedup(
    output: Annotated[Path, typer.Option("--output", "-o", metavar="CSV", help="Deduplicated CSV to write.")],
    csv_path: Annotated[
        Path | None, typer.Option("--csv", metavar="CSV", help="Default: the predictions CSV.")
    ] = None,
    state_dir: StateDir = None,
) -> None:
    """Write the predictions CSV without rows repeated by at-least-once re-delivery."""
    from streamml.worker.sinks import dedup_csv

    source = csv_path or load_settings(state_dir).predictions_csv()
    kept, dropped = dedup_csv(source, output)
    console.print(f"{kept} rows kept, {dropped} duplicates dropped -> {output}")


@log_app.command("query", cls=Command)
def log_query(
    sql: Annotated[
        str,
        typer.Argument(
            metavar="SQL",
            help="DuckDB SQL over the views `predictions` (no re-deliveries), `log` and `failures`.",
            show_default=False,
        ),
    ],
    log_dir: Annotated[
        Path | None,
        typer.Option("--dir", metavar="DIR", help="Default: the prediction log's directory."),
    ] = None,
    as_json: AsJson = False,
    state_dir: StateDir = None,
) -> None:
    """Query the prediction log with SQL, e.g. `streamml log query "SELECT route, model_version, count(*)
    FROM predictions GROUP BY ALL"`."""
    import duckdb

    from streamml.worker.log_query import open_log

    root = log_dir or load_settings(state_dir).prediction_log_dir()
    try:
        cursor = open_log(root).execute(sql)
        names = [column[0] for column in cursor.description or []]
        rows = cursor.fetchall() if names else []
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint="--dir") from None
    except duckdb.Error as exc:
        console.print(f"[red]query failed:[/red] {exc}")
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps([dict(zip(names, row, strict=True)) for row in rows], default=str))
        return
    table = Table(*names)
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    console.print(table)


COMMANDS = (status, config)
GROUPS = {"dlq": dlq_app, "sink": sink_app, "log": log_app}
