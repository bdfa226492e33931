"""Options several commands share, defined once. Every option that takes a value names it (``PORT``,
``SECONDS``), never a Python type; a flag that mirrors a setting reads and shows its variable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand

from streamml.settings import Settings

console = Console()


class Command(TyperCommand):
    """Help that names an argument by its metavar alone (``ROUTE``): Typer adds the Python type after
    it (``ROUTE <str>``), which tells a user of the command nothing."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"argument": [], "option": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or param.param_type_name not in sections:
                continue
            if param.param_type_name == "argument" and param.metavar:
                record = (param.metavar, record[1])
            sections[param.param_type_name].append(record)
        for title, kind in (("Arguments", "argument"), ("Options", "option")):
            if sections[kind]:
                with formatter.section(title):
                    formatter.write_dl(sections[kind])


def setting_option(*declarations: str, variable: str, help: str, **options: Any) -> Any:
    """An option that mirrors a setting: the variable is read when the flag is absent, and ``--help``
    names it."""
    return typer.Option(*declarations, envvar=variable, show_envvar=True, help=help, **options)


StateDir = Annotated[
    Path | None,
    setting_option(
        "--state-dir",
        variable="STREAMML_STATE_DIR",
        metavar="DIR",
        help="Redis data, MLflow db, predictions CSV.",
    ),
]
LogLevel = Annotated[str, typer.Option("--log-level", metavar="LEVEL", help="debug, info, warning or error.")]
Host = Annotated[
    str | None,
    setting_option(
        "--host", variable="STREAMML_GATEWAY_HOST", metavar="HOST", help="Gateway interface (127.0.0.1)."
    ),
]
Port = Annotated[
    int | None,
    setting_option("--port", variable="STREAMML_GATEWAY_PORT", metavar="PORT", help="Gateway port (8800)."),
]
Insecure = Annotated[
    bool,
    setting_option(
        "--insecure",
        variable="STREAMML_GATEWAY_INSECURE",
        help="Allow a non-loopback gateway without API keys.",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
StackWorkers = Annotated[int, typer.Option("--workers", "-w", min=1, metavar="N", help="Worker processes.")]
StackDuration = Annotated[
    float | None, typer.Option("--duration", metavar="SECONDS", help="Stop after this many seconds.")
]
PlainPanel = Annotated[
    bool,
    typer.Option(
        "--plain", help="A status line per interval instead of the live panel (automatic off a tty)."
    ),
]
RouteFilter = Annotated[str | None, typer.Option("--route", metavar="ROUTE", help="Only this route.")]


def load_settings(state_dir: Path | None) -> Settings:
    """The settings a command runs with: the environment, and the state dir a flag names."""
    return Settings.load(state_dir)


def gateway_settings(state_dir: Path | None, host: str | None, port: int | None, insecure: bool) -> Settings:
    """Settings with the gateway flags ``up`` and ``api`` share applied."""
    settings = load_settings(state_dir)
    if host:
        settings.gateway.host = host
    if port:
        settings.gateway.port = port
    settings.gateway.insecure = settings.gateway.insecure or insecure
    return settings


def require_route(settings: Settings, route: str | None) -> None:
    """A route that is not configured is a usage error naming the configured ones."""
    if route is not None and route not in settings.mlflow.routes:
        raise typer.BadParameter(f"no route {route!r}; routes: {', '.join(settings.mlflow.routes)}")
