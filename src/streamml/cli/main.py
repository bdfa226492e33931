"""``streamml``: the command line, assembled from one module per command group. Settings are built in
each command and passed down."""

from __future__ import annotations

from typing import Annotated

import typer

from streamml import __version__
from streamml.cli import benchmark, generate, modelops, operate, run
from streamml.cli.options import Command

app = typer.Typer(
    help="Real-time ML inference on Redis Streams with models from the MLflow Model Registry.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        print(f"streamml {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Real-time ML inference on Redis Streams with models from the MLflow Model Registry."""


for group in (run, modelops, operate, generate, benchmark):
    for command in group.COMMANDS:
        app.command(cls=Command)(command)
for group in (modelops, operate):
    for name, sub_app in group.GROUPS.items():
        app.add_typer(sub_app, name=name)
