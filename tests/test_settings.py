"""The settings read exactly the variables their prefixes name (and the two the ecosystem shares), keep
reading last release's names with a warning, and describe themselves: the reference page and
``streamml config``."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamml.cli.main import app
from streamml.settings import Settings
from streamml.settings_reference import effective_settings, reference_markdown

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing from the developer's shell: every test sets what it reads."""
    for name in list(os.environ):
        if name.startswith("STREAMML_") or name in ("REDIS_URL", "MLFLOW_TRACKING_URI"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("bare", "value", "read"),
    [
        ("URL", "redis://stray:1/0", lambda s: s.redis.url),
        ("ROUTES", '{"stray": "models:/Stray@champion"}', lambda s: s.mlflow.routes),
        ("API_KEYS", "stray-key", lambda s: s.gateway.api_keys),
        ("API_KEYS_FILE", "/stray/keys", lambda s: s.gateway.api_keys_file),
        ("TRACKING_URI", "http://stray:5000", lambda s: s.mlflow.tracking_uri),
    ],
)
def test_a_bare_variable_without_the_prefix_is_ignored(
    monkeypatch: pytest.MonkeyPatch, bare: str, value: str, read: Callable[[Settings], object]
) -> None:
    default = read(Settings.load())
    monkeypatch.setenv(bare, value)
    assert read(Settings.load()) == default


def test_the_two_names_the_ecosystem_shares_are_read_without_the_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://shared:6379/2")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5001")
    settings = Settings.load()
    assert (settings.redis.url, settings.mlflow.tracking_uri) == (
        "redis://shared:6379/2",
        "http://mlflow:5001",
    )


@pytest.mark.parametrize(
    ("old", "new", "value", "read"),
    [
        ("STREAMML_STREAM", "STREAMML_STREAM_NAME", "legacy", lambda s: s.stream.name),
        ("STREAMML_DURABILITY", "STREAMML_STREAM_DURABILITY", "fsync", lambda s: s.stream.durability),
        (
            "STREAMML_ROUTES",
            "STREAMML_MLFLOW_ROUTES",
            '{"a": "models:/A@champion"}',
            lambda s: s.mlflow.routes,
        ),
        (
            "STREAMML_SHADOW_SAMPLE",
            "STREAMML_ROLLOUT_SHADOW_SAMPLE",
            '{"a": 0.5}',
            lambda s: s.rollout.shadow_sample,
        ),
        ("STREAMML_API_KEYS", "STREAMML_GATEWAY_API_KEYS", "k1,k2", lambda s: s.gateway.api_keys),
    ],
)
def test_a_renamed_variable_is_still_read_with_a_warning_naming_its_successor(
    monkeypatch: pytest.MonkeyPatch, old: str, new: str, value: str, read: Callable[[Settings], object]
) -> None:
    monkeypatch.setenv(old, value)
    with pytest.warns(FutureWarning, match=f"{old} is deprecated .* set {new} instead"):
        settings = Settings.load()
    expected = json.loads(value) if value.startswith("{") else value
    assert read(settings) == expected


def test_the_new_name_wins_over_the_old_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMML_STREAM", "old")
    monkeypatch.setenv("STREAMML_STREAM_NAME", "new")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        assert Settings.load().stream.name == "new"


def test_the_reference_page_is_generated_from_the_settings_classes() -> None:
    """docs/configuration.md is what `streamml config --reference` prints: regenerate it when a setting
    changes (the command is in the page)."""
    assert (ROOT / "docs" / "configuration.md").read_text() == reference_markdown()


def test_the_reference_names_every_variable_once_with_its_default_and_meaning() -> None:
    page = reference_markdown()
    assert "| `STREAMML_WORKER_CLAIM_IDLE_MS` | `int` | `30000` | Entries pending longer than this" in page
    assert "| `REDIS_URL` or `STREAMML_REDIS_URL` |" in page
    assert "`STREAMML_SHADOW_SAMPLE`" in page  # as the former name of STREAMML_ROLLOUT_SHADOW_SAMPLE


def test_effective_settings_say_where_each_value_came_from_and_mask_secrets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMML_GATEWAY_PORT", "9999")
    monkeypatch.setenv("STREAMML_GATEWAY_API_KEYS", "sk-secret")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:hunter2@mlflow:5001")
    (tmp_path / "redis.url").write_text("redis://:s3cret@127.0.0.1:6390/0\n")
    rows = {f"{r.group}.{r.field}": r for r in effective_settings(Settings.load(tmp_path), flags={})}
    assert (rows["gateway.port"].value, rows["gateway.port"].source) == (
        "9999",
        "environment (STREAMML_GATEWAY_PORT)",
    )
    assert rows["gateway.host"].source == "default"
    assert rows["gateway.api_keys"].value == "****"
    assert rows["mlflow.tracking_uri"].value == "http://user:****@mlflow:5001"
    assert rows["redis.url"].value == "redis://:****@127.0.0.1:6390/0"
    assert rows["redis.url"].source == f"file ({tmp_path / 'redis.url'})"
    shown = json.dumps([r.as_dict() for r in rows.values()])
    assert "sk-secret" not in shown
    assert "hunter2" not in shown
    assert "s3cret" not in shown


def test_streamml_config_prints_the_settings_as_json_and_the_flag_it_was_given(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["config", "--json", "--state-dir", str(tmp_path)],
        env={"STREAMML_WORKER_BATCH_ENTRIES": "64", "STREAMML_GATEWAY_API_KEYS": "sk-secret"},
    )
    assert result.exit_code == 0, result.output
    rows = {f"{r['group']}.{r['field']}": r for r in json.loads(result.output)}
    assert rows["worker.batch_entries"] == {
        "group": "worker",
        "field": "batch_entries",
        "variable": "STREAMML_WORKER_BATCH_ENTRIES",
        "value": "64",
        "source": "environment (STREAMML_WORKER_BATCH_ENTRIES)",
    }
    assert rows["general.state_dir"]["source"] == "flag (--state-dir)"
    assert "sk-secret" not in result.output
