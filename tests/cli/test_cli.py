"""Every command answers --help, and the data commands work end to end."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from streamml.cli.main import app

runner = CliRunner()


def every_command(group: Any = None, prefix: tuple[str, ...] = ()) -> list[str]:
    """Every command of the CLI, sub-commands included, as the words that name it."""
    out = []
    root: Any = group or typer.main.get_command(app)
    for name, command in root.commands.items():
        out.append(" ".join((*prefix, name)))
        if hasattr(command, "commands"):  # a group
            out += every_command(command, (*prefix, name))
    return out


COMMANDS = every_command()


def test_the_command_list_holds_every_group_and_its_commands() -> None:
    assert {"up", "api", "worker", "config", "dlq replay", "canary set", "shadow report"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_that_names_values_not_python_types(command: str) -> None:
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
    assert re.findall(r"<[a-z][a-z\[\]_ |]*>", result.output) == []  # <bool>, <list[str]>, <int range>


def test_flags_that_mirror_a_setting_name_its_variable_in_help() -> None:
    help_text = " ".join(runner.invoke(app, ["api", "--help"]).output.split())
    assert "env var: STREAMML_GATEWAY_PORT" in help_text
    assert "env var: STREAMML_GATEWAY_HOST" in help_text
    worker_help = " ".join(runner.invoke(app, ["worker", "--help"]).output.split())
    assert "env var: STREAMML_WORKER_METRICS_PORT" in worker_help


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"streamml {metadata.version('streamml')}"


def test_replaying_every_dead_letter_asks_for_all(tmp_path: Path) -> None:
    """As purge asks for --yes: neither ids nor --reason is a usage error, before Redis is touched."""
    result = runner.invoke(app, ["dlq", "replay", "--state-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "--all" in result.output


def test_synth_writes_rows_in_the_real_columns(tmp_path: Path) -> None:
    out = tmp_path / "synthetic.csv"
    result = runner.invoke(app, ["synth", "--rows", "250", "--seed", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert len(frame) == 250
    assert {"Burn Rate", "Date of Joining", "Mental Fatigue Score", "Gender"} <= set(frame.columns)


def test_synth_rejects_a_bad_drift_naming_the_problem(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", "-o", str(tmp_path / "x.csv"), "--drift", "Height=+1sd"])
    assert result.exit_code != 0
    assert "Height" in result.output


def test_profile_writes_a_profile_of_any_csv(tmp_path: Path) -> None:
    source = tmp_path / "small.csv"
    runner.invoke(app, ["synth", "--rows", "500", "-o", str(source)])
    out = tmp_path / "profile.json"
    result = runner.invoke(app, ["profile", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert '"format": "streamml-profile"' in out.read_text()


def test_a_refused_rollback_says_why_and_exits_1(tmp_path: Path, tracking_uri: str) -> None:
    """The session's registry has no 'previous' alias on any demo model: nothing to roll back."""
    result = runner.invoke(
        app,
        ["rollback", "lightgbm", "--state-dir", str(tmp_path)],
        env={"MLFLOW_TRACKING_URI": tracking_uri},
    )
    assert result.exit_code == 1, result.output
    assert "refused" in result.output
    assert "LightGBM_Classifier has no 'previous' alias" in result.output


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["xgboost", "10%"], "no route 'xgboost'"),
        (["svm", "120%"], "outside 0%..100%"),
        (["svm", "lots"], "not a share"),
    ],
)
def test_canary_set_refuses_an_unknown_route_or_a_share_outside_0_to_100(
    args: list[str], complaint: str, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["canary", "set", *args, "--state-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert complaint in " ".join(result.output.split())
