"""`streamml up` as a user runs it: real redis-server, real `mlflow server`, demo models trained on
first start, gateway, workers and producer as child processes; then SIGTERM, and nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from streamml.local.services import find_redis_cli, free_port
from tests.helpers import SEED_EXAMPLE

pytestmark = pytest.mark.integration

STARTUP_TIMEOUT_S = 240


def processes_of(state_dir: Path) -> list[int]:
    """PIDs whose environment carries this stack's state dir (the stack and all it started)."""
    marker = f"STREAMML_STATE_DIR={state_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_ready(url: str, up: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if up.poll() is not None:
            pytest.fail(f"streamml up exited with {up.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"stack not ready after {STARTUP_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


def test_up_serves_the_seed_example_on_every_route_and_stops_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    gateway_port, redis_port, mlflow_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.pop("REDIS_URL", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env |= {
        "STREAMML_STATE_DIR": str(state),
        "STREAMML_GATEWAY_PORT": str(gateway_port),
        "STREAMML_REDIS_PORT": str(redis_port),
        "STREAMML_MLFLOW_PORT": str(mlflow_port),
    }
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamml",
                "up",
                "--workers",
                "2",
                "--rate",
                "20",
                "--train-rows",
                "3000",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{gateway_port}"
    try:
        wait_ready(url, up, log)

        accepted = {}
        for route in ("svm", "knn", "lightgbm"):
            response = httpx.post(f"{url}/predict_stream", params={"model": route}, json=SEED_EXAMPLE)
            assert response.status_code == 202, response.text
            accepted[route] = response.json()
        for route, body in accepted.items():
            deadline = time.monotonic() + 30
            while (result := httpx.get(url + body["status_url"])).status_code == 202:
                assert time.monotonic() < deadline, f"{route} never predicted"
                time.sleep(0.1)
            assert result.status_code == 200
            assert result.json()["model"]["route"] == route
            assert result.json()["predictions"][0] in {"Low", "Medium", "High"}

        csv_text = (state / "predictions.csv").read_text()
        for body in accepted.values():
            assert body["request_id"] in csv_text

        password = (state / "redis" / "redis.password").read_text().strip()
        cli = [find_redis_cli(), "-p", str(redis_port), "-a", password, "--no-auth-warning"]
        # The original README's inspection command works (the length moves: acked entries are trimmed).
        xlen = subprocess.run([*cli, "xlen", "mlops_stream"], capture_output=True, text=True, check=True)
        assert xlen.stdout.strip().isdigit(), xlen.stdout
        kind = subprocess.run([*cli, "type", "mlops_stream"], capture_output=True, text=True, check=True)
        assert kind.stdout.strip() == "stream"
        results = subprocess.run(
            [*cli, "xlen", "mlops_predictions"], capture_output=True, text=True, check=True
        )
        assert int(results.stdout) >= 3
        groups = subprocess.run(
            [*cli, "XINFO", "GROUPS", "mlops_stream"], capture_output=True, text=True, check=True
        )
        assert "workers" in groups.stdout

        status = subprocess.run(
            [sys.executable, "-m", "streamml", "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        report = json.loads(status.stdout)
        assert report["stream"] == "mlops_stream"
        assert report["groups"][0]["name"] == "workers"
        assert len(report["groups"][0]["consumers"]) == 2
        assert (state / "mlflow.url").read_text().strip() == f"http://127.0.0.1:{mlflow_port}"
    finally:
        up.send_signal(signal.SIGTERM)
        code: int | None
        try:
            code = up.wait(timeout=90)
        except subprocess.TimeoutExpired:
            up.kill()
            code = None
        leftovers = processes_of(state)
        for pid in leftovers:  # never leave them running, even when the test fails
            os.kill(pid, signal.SIGKILL)
    assert code == 0, log.read_text()[-3000:]
    assert leftovers == [], f"processes left behind: {leftovers}"
