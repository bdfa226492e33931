"""`streamml serve` as the README's own-model block runs it: a model of an existing registry served on a
route of its own, with an embedded Redis, a gateway and a worker — and the registry left as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamml.local.services import free_port
from tests.local.test_stack import processes_of, wait_ready
from tests.models.test_zoo import assert_same, mlflows_answer
from tests.models.zoo import Zoo, records

pytestmark = pytest.mark.integration


def registry_state(tracking_uri: str) -> list[Any]:
    """Every registered model's versions and aliases, and every experiment's run count."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    models = sorted(
        (
            m.name,
            sorted(m.aliases.items()),
            [v.version for v in client.search_model_versions(f"name='{m.name}'")],
        )
        for m in client.search_registered_models()
    )
    runs = [(e.name, len(client.search_runs([e.experiment_id]))) for e in client.search_experiments()]
    return [models, sorted(runs)]


def test_serve_answers_with_a_registered_model_and_leaves_the_registry_as_it_was(
    zoo: Zoo, tmp_path: Path
) -> None:
    before = registry_state(zoo.tracking_uri)
    state, port = tmp_path / "state", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.pop("REDIS_URL", None)
    env |= {
        "MLFLOW_TRACKING_URI": zoo.tracking_uri,
        "STREAMML_STATE_DIR": str(state),
        "STREAMML_GATEWAY_PORT": str(port),
        "STREAMML_REDIS_PORT": str(free_port()),
    }
    log = tmp_path / "serve.log"
    argv = [sys.executable, "-m", "streamml", "serve", f"churn={zoo.routes['regressor']}", "--workers", "1"]
    with log.open("wb") as out:
        serve = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, serve, log)
        assert list(httpx.get(f"{url}/models").json()["models"]) == ["churn"]
        frame = zoo.frame("regressor", 20)
        answer = httpx.post(f"{url}/predict?model=churn", json={"data": records(frame)}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert_same(answer.json()["predictions"], mlflows_answer(zoo, "regressor", frame), "serve")
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            code: int | None = serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            code = None
        leftovers = processes_of(state)
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
    assert code == 0, log.read_text()[-3000:]
    assert leftovers == []
    assert registry_state(zoo.tracking_uri) == before
    assert "training" not in log.read_text()  # nothing trained, no producer started
    assert "producer     off" in log.read_text()


def test_serve_without_a_registry_refuses_saying_which_variable_to_set(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env |= {"STREAMML_STATE_DIR": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run(
        [sys.executable, "-m", "streamml", "serve", "models:/Churn@champion", "--plain"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "set MLFLOW_TRACKING_URI" in done.stdout
