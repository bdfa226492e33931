"""Every command answers --help, and the data commands work end to end."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from streamml.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [
        "up",
        "api",
        "worker",
        "train",
        "status",
        "produce",
        "profile",
        "synth",
        "fidelity",
        "promote",
        "rollback",
        "drift",
        "canary set",
        "canary show",
        "shadow report",
    ],
)
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


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
