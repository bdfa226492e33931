"""Clients of other servers, unchanged, against a real gateway process and worker: MLflow's own
``ScoringServerClient`` and Triton's ``tritonclient.http`` get the predictions ``POST /predict`` gives,
which are the registered model's own; the bodies ``mlflow models serve`` takes give its predictions."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.pyfunc.scoring_server.client import ScoringServerClient
from redis import Redis
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from streamml.bench.e2e_run import complete_records
from streamml.bench.endtoend import MlflowServe
from streamml.local.services import ManagedProcess, free_port, wait_until_healthy
from streamml.models.inference import records_to_frame
from streamml.models.registry import ModelRegistry
from streamml.settings import Settings
from tests.conftest import make_settings
from tests.helpers import load_route, process_env, start_worker

pytestmark = pytest.mark.integration

ROUTES = ("svm", "knn", "lightgbm")
ROWS = complete_records(12)
FRAME = pd.DataFrame(ROWS)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, tracking_uri: str
) -> Iterator[tuple[str, Settings]]:
    """One gateway process whose /invocations serves lightgbm, and one worker process, for the module."""
    root = tmp_path_factory.mktemp("protocols")
    settings = make_settings(root, redis_url, tracking_uri)
    port = free_port()
    env = process_env(settings, tracking_uri, STREAMML_GATEWAY_DEFAULT_ROUTE="lightgbm")
    argv = [sys.executable, "-m", "streamml", "api", "--port", str(port), "--log-level", "warning"]
    gateway = ManagedProcess("gateway", argv, root / "gateway.log", env).start()
    worker = start_worker(settings, tracking_uri, root / "worker.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(f"{url}/health", gateway)
        yield url, settings
    finally:
        worker.stop()
        gateway.stop()


def native_predictions(url: str, route: str, rows: list[dict[str, Any]]) -> list[str]:
    response = httpx.post(f"{url}/predict?model={route}", json={"data": rows}, timeout=30)
    assert response.status_code == 200, response.text
    return list(response.json()["predictions"])


def models_own(registry: ModelRegistry, route: str, rows: list[dict[str, Any]]) -> list[str]:
    model = asyncio.run(load_route(registry, route))
    return [str(label) for label in model.call(records_to_frame(rows, model.schema))]


def test_mlflows_scoring_client_gets_the_registered_models_predictions(
    served: tuple[str, Settings], shared_registry: ModelRegistry
) -> None:
    url, _ = served
    client = ScoringServerClient("127.0.0.1", int(url.rsplit(":", 1)[1]))
    client.wait_server_ready(timeout=30)
    client.ping()
    assert client.get_version() == mlflow.__version__
    got = list(client.invoke(FRAME)["predictions"])
    assert got == native_predictions(url, "lightgbm", ROWS)
    assert got == models_own(shared_registry, "lightgbm", ROWS)


@pytest.mark.parametrize("route", ROUTES)
def test_every_mlflow_format_on_every_route_gives_predicts_answer(
    served: tuple[str, Settings], route: str
) -> None:
    url, _ = served
    expected = native_predictions(url, route, ROWS)
    split = FRAME.to_dict(orient="split")
    bodies: list[tuple[str, Any]] = [
        ("json", {"dataframe_split": {"columns": split["columns"], "data": split["data"]}}),
        ("json", {"dataframe_records": ROWS}),
        ("json", {"instances": ROWS}),
        ("json", {"inputs": {name: list(FRAME[name]) for name in FRAME.columns}}),
        ("csv", FRAME.to_csv(index=False)),
    ]
    for kind, body in bodies:
        if kind == "csv":
            response = httpx.post(
                f"{url}/models/{route}/invocations",
                content=body,
                headers={"Content-Type": "text/csv"},
                timeout=30,
            )
        else:
            response = httpx.post(f"{url}/models/{route}/invocations", json=body, timeout=30)
        assert response.status_code == 200, (kind, response.text)
        assert response.json() == {"predictions": expected}, kind
        assert response.headers["X-Model-Version"] == "1"


def test_tritons_client_speaks_to_every_route(
    served: tuple[str, Settings], shared_registry: ModelRegistry
) -> None:
    url, _ = served
    client = InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_live()
    deadline = time.monotonic() + 60  # ready once the worker's first heartbeat is in, as a probe waits
    while not client.is_server_ready() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.is_server_ready()
    for route in ROUTES:
        metadata = client.get_model_metadata(route)
        schema = asyncio.run(load_route(shared_registry, route)).schema
        assert schema is not None
        assert [tensor["name"] for tensor in metadata["inputs"]] == schema.names
        assert metadata["versions"] == ["1"]
        assert client.is_model_ready(route)
        for binary in (True, False):
            inputs = []
            for tensor in metadata["inputs"]:
                values = np.array(
                    [[row[tensor["name"]]] for row in ROWS],
                    dtype=object if tensor["datatype"] == "BYTES" else np.float64,
                )
                tensor_input = InferInput(tensor["name"], list(values.shape), tensor["datatype"])
                tensor_input.set_data_from_numpy(values, binary_data=binary)
                inputs.append(tensor_input)
            # Triton's default: binary output (bytes); asked for by name as JSON: strings.
            outputs = None if binary else [InferRequestedOutput("predictions", binary_data=False)]
            result = client.infer(route, inputs, outputs=outputs, request_id="triton-1")
            raw = list(result.as_numpy("predictions"))
            assert {type(label) for label in raw} == ({bytes} if binary else {str})
            labels = [label.decode() if binary else label for label in raw]
            assert labels == native_predictions(url, route, ROWS), (route, binary)
            response = result.get_response()
            assert (response["id"], response["model_version"]) == ("triton-1", "1")
        with pytest.raises(InferenceServerException, match="serves version 1"):
            client.infer(route, inputs, model_version="7")


def test_mlflow_models_serve_and_streamml_answer_the_same_bodies_alike(
    served: tuple[str, Settings], shared_registry: ModelRegistry, tmp_path: Path
) -> None:
    url, _ = served
    model_dir = shared_registry.artifacts.model(asyncio.run(shared_registry.resolver.resolve("lightgbm")))
    serve = MlflowServe(tmp_path / "serve", model_dir, workers=1).start()
    try:
        split = FRAME.to_dict(orient="split")
        for body in (
            {"dataframe_split": {"columns": split["columns"], "data": split["data"]}},
            {"dataframe_records": ROWS},
            {"instances": ROWS},
            {"dataframe_records": [ROWS[1] | {"Team Size": 4}]},  # an integer for a double: both take it
        ):
            theirs = httpx.post(f"{serve.url}/invocations", json=body, timeout=60)
            ours = httpx.post(f"{url}/invocations", json=body, timeout=30)
            assert theirs.status_code == ours.status_code == 200, (theirs.text, ours.text)
            assert ours.json() == theirs.json()
        # Where MLflow refuses what streamml accepts (documented): a request whose records leave out an
        # optional column ("columns are missing", from inside the model, stack trace in the body).
        lenient = {"dataframe_records": [{k: v for k, v in ROWS[0].items() if k != "Sleep Hours"}]}
        theirs = httpx.post(f"{serve.url}/invocations", json=lenient, timeout=60)
        ours = httpx.post(f"{url}/invocations", json=lenient, timeout=30)
        assert theirs.status_code == 400
        assert "columns are missing" in theirs.text
        assert ours.status_code == 200, ours.text
        assert "Traceback" not in ours.text
    finally:
        serve.stop()


def test_refusals_on_the_protocols_keep_the_limits_and_auth_and_publish_nothing(
    start_gateway: Callable[..., tuple[str, Settings]],
) -> None:
    url, settings = start_gateway(
        STREAMML_GATEWAY_API_KEYS="sk-protocols",
        STREAMML_GATEWAY_DEFAULT_ROUTE="svm",
        STREAMML_GATEWAY_MAX_BODY_BYTES="4096",
    )
    key = {"Authorization": "Bearer sk-protocols"}
    tensor = {"name": "Designation", "shape": [1], "datatype": "BYTES", "data": ["high"]}
    refusals: list[tuple[str, dict[str, Any], dict[str, str], int, str]] = [
        ("/invocations", {"dataframe_records": ROWS}, {}, 401, "UNAUTHENTICATED"),
        (
            "/invocations",
            {"dataframe_records": [{"Designation": "high"}]},
            key,
            422,
            "INVALID_PARAMETER_VALUE",
        ),
        ("/invocations", {"dataframe_records": [{"Nope": 1}]}, key, 422, "INVALID_PARAMETER_VALUE"),
        ("/invocations", {"dataframe_records": ROWS * 40}, key, 413, "REQUEST_LIMIT_EXCEEDED"),
        ("/models/nope/invocations", {"dataframe_records": ROWS}, key, 404, "RESOURCE_DOES_NOT_EXIST"),
        ("/v2/models/svm/infer", {"inputs": [tensor]}, {}, 401, ""),
        ("/v2/models/svm/infer", {"inputs": [tensor]}, key, 422, ""),
        ("/v2/models/svm/infer", {"inputs": [tensor | {"shape": [2]}]}, key, 422, ""),
        ("/v2/models/nope/infer", {"inputs": [tensor]}, key, 404, ""),
    ]
    for path, body, headers, status, mlflow_code in refusals:
        response = httpx.post(url + path, json=body, headers=headers, timeout=30)
        assert response.status_code == status, (path, body, response.text)
        answer = response.json()
        if path.startswith("/v2"):
            assert isinstance(answer["error"], str), answer
            assert answer["error"], answer
        else:
            assert answer["error_code"] == mlflow_code, answer
            assert answer["message"], answer
        assert "Traceback" not in response.text
    typed = httpx.post(
        url + "/invocations", json={"dataframe_records": [{"Designation": "high"}]}, headers=key
    )
    assert "record 0" in typed.json()["message"]
    assert "Designation" in typed.json()["message"]
    named = httpx.post(url + "/v2/models/svm/infer", json={"inputs": [tensor]}, headers=key)
    assert "record 0" in named.json()["error"]
    assert "Designation" in named.json()["error"]
    assert Redis.from_url(settings.redis_url()).xlen(settings.stream.name) == 0
