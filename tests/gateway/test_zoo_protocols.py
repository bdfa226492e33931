"""Every kind of model of the zoo served by a real gateway and a real worker, through the three protocols:
1,000 generated records answer exactly what ``mlflow.pyfunc.load_model(uri).predict`` answers on the
same frame, with the model's types; probabilities are ``predict_proba``'s; a model that cannot be served
fails its requests at once, visibly, and makes the gateway not ready, with the reason."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

from streamml.local.services import ManagedProcess, free_port, wait_until_healthy
from streamml.settings import Settings
from tests.conftest import make_settings
from tests.helpers import process_env, start_worker
from tests.models.test_zoo import assert_same, mlflows_answer
from tests.models.zoo import CLASSIFIERS, ROUTES, RUNS_CODE, Zoo, records

pytestmark = pytest.mark.integration

RECORDS = 1000
REFUSED = "refused"
"""A route to the pickled model without the opt-in: it must fail its requests at once."""
DATATYPES = {"int64": "INT64", "float64": "FP64", "float32": "FP32", "bool": "BOOL"}


@pytest.fixture(scope="module")
def served_env(
    zoo: Zoo, tmp_path_factory: pytest.TempPathFactory, redis_url: str, tracking_uri: str
) -> tuple[Settings, dict[str, str]]:
    """The zoo's settings, and the environment of every process that serves or reports on it."""
    settings = make_settings(tmp_path_factory.mktemp("zoo-served"), redis_url, tracking_uri)
    routes = zoo.routes | {REFUSED: zoo.routes["pickled"]}
    env = {
        "STREAMML_MLFLOW_ROUTES": json.dumps(routes),
        "STREAMML_MLFLOW_ALLOW_PICKLE": json.dumps(list(RUNS_CODE)),
        "STREAMML_WORKER_HEARTBEAT_S": "0.5",
    }
    return settings, env


@pytest.fixture(scope="module")
def served(served_env: tuple[Settings, dict[str, str]], tracking_uri: str) -> Iterator[str]:
    settings, env = served_env
    root = settings.state_dir
    port = free_port()
    argv = [sys.executable, "-m", "streamml", "api", "--port", str(port), "--log-level", "warning"]
    gateway = ManagedProcess(
        "gateway", argv, root / "gateway.log", process_env(settings, tracking_uri, **env)
    )
    gateway.start()
    worker = start_worker(settings, tracking_uri, root / "worker.log", env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(f"{url}/health", gateway)
        deadline = time.monotonic() + 90  # the worker loads the nine models, then reports them
        while REFUSED not in httpx.get(f"{url}/ready").text and time.monotonic() < deadline:
            time.sleep(0.2)
        yield url
    finally:
        worker.stop()
        gateway.stop()


def triton_inputs(frame: pd.DataFrame) -> list[InferInput]:
    inputs = []
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_datetime64_any_dtype(values):
            array = values.dt.strftime("%Y-%m-%dT%H:%M:%S").to_numpy(dtype=object).reshape(-1, 1)
            datatype = "BYTES"
        elif pd.api.types.is_string_dtype(values) or values.dtype == object:
            array, datatype = values.to_numpy(dtype=object).reshape(-1, 1), "BYTES"
        else:
            array, datatype = values.to_numpy().reshape(-1, 1), DATATYPES[str(values.dtype)]
        tensor = InferInput(column, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    return inputs


def v2_values(result: Any, expected: Any) -> Any:
    """The answer of a V2 response laid out as MLflow's: rows of columns, or one value (list) a record."""
    response = result.get_response()
    names = [output["name"] for output in response["outputs"]]
    arrays = {name: result.as_numpy(name).tolist() for name in names}
    decoded = {n: [v.decode() if isinstance(v, bytes) else v for v in a] for n, a in arrays.items()}
    if names == ["predictions"] or names == ["probabilities"]:
        return decoded[names[0]]
    return [dict(zip(names, row, strict=True)) for row in zip(*decoded.values(), strict=True)]


@pytest.mark.parametrize("route", ROUTES)
def test_every_protocol_answers_what_mlflow_answers_for_every_kind(served: str, zoo: Zoo, route: str) -> None:
    frame = zoo.frame(route, RECORDS, seed=7)
    expected = mlflows_answer(zoo, route, frame)
    sent = records(frame)

    native = httpx.post(f"{served}/predict?model={route}", json={"data": sent}, timeout=60)
    assert native.status_code == 200, native.text
    assert_same(native.json()["predictions"], expected, f"{route} /predict")

    queued = httpx.post(f"{served}/predict_stream?model={route}", json={"data": sent}, timeout=60).json()
    document = poll(served, queued["request_id"])
    assert_same(document["predictions"], expected, f"{route} /predict_stream")

    split = json.loads(frame.assign(**_iso(frame)).to_json(orient="split", index=False))
    invoked = httpx.post(f"{served}/models/{route}/invocations", json={"dataframe_split": split}, timeout=60)
    assert invoked.status_code == 200, invoked.text
    assert_same(invoked.json()["predictions"], expected, f"{route} /invocations")

    client = InferenceServerClient(served.removeprefix("http://"), network_timeout=60)
    result = client.infer(route, triton_inputs(frame))
    assert_same(v2_values(result, expected), expected, f"{route} V2 infer")


@pytest.mark.parametrize("route", CLASSIFIERS)
def test_probabilities_through_every_protocol_are_predict_proba(served: str, zoo: Zoo, route: str) -> None:
    import mlflow.pyfunc

    frame = zoo.frame(route, 200, seed=8)
    raw = mlflow.pyfunc.load_model(zoo.routes[route]).get_raw_model()
    expected, classes = raw.predict_proba(frame).tolist(), [c.item() for c in raw.classes_]
    native = httpx.post(
        f"{served}/predict?model={route}&output=proba", json={"data": records(frame)}, timeout=60
    )
    assert native.status_code == 200, native.text
    assert_same(native.json()["predictions"], expected, f"{route} ?output=proba")
    assert native.json()["classes"] == classes
    body = {"dataframe_records": records(frame), "params": {"predict_method": "predict_proba"}}
    invoked = httpx.post(f"{served}/models/{route}/invocations", json=body, timeout=60).json()
    assert_same(invoked["predictions"], expected, f"{route} predict_method")
    client = InferenceServerClient(served.removeprefix("http://"), network_timeout=60)
    asked = [InferRequestedOutput("probabilities", binary_data=False)]
    result = client.infer(route, triton_inputs(frame), outputs=asked)
    assert_same(result.as_numpy("probabilities").tolist(), expected, f"{route} V2 probabilities")


def test_probabilities_of_a_model_without_predict_proba_are_refused_before_publishing(
    served: str, zoo: Zoo
) -> None:
    sent = records(zoo.frame("regressor", 2))
    answer = httpx.post(f"{served}/predict_stream?model=regressor&output=proba", json={"data": sent})
    assert answer.status_code == 422, answer.text
    assert "has no predict_proba" in answer.json()["error"]["message"]


def test_a_model_that_cannot_be_served_fails_its_requests_at_once_and_the_gateway_says_why(
    served: str, zoo: Zoo
) -> None:
    sent = records(zoo.frame("pickled", 3))
    started = time.monotonic()
    waited = httpx.post(f"{served}/predict?model={REFUSED}", json={"data": sent}, timeout=60)
    assert time.monotonic() - started < 5  # not the predict timeout, not every redelivery
    assert waited.status_code == 503, waited.text
    assert waited.json()["error"]["code"] == "model_not_servable"
    assert "STREAMML_MLFLOW_ALLOW_PICKLE" in waited.json()["error"]["message"]
    queued = httpx.post(f"{served}/predict_stream?model={REFUSED}", json={"data": sent}).json()
    failed = poll(served, queued["request_id"])
    assert (failed["status"], failed["error"]["code"]) == ("failed", "model_not_servable")
    invoked = httpx.post(f"{served}/models/{REFUSED}/invocations", json={"dataframe_records": sent})
    assert (invoked.status_code, invoked.json().get("error_code")) == (503, "TEMPORARILY_UNAVAILABLE"), (
        invoked.text
    )
    ready = httpx.get(f"{served}/ready")
    assert ready.status_code == 503
    assert "no worker can load it" in ready.json()["checks"]["models"][REFUSED]
    assert httpx.get(f"{served}/v2/models/{REFUSED}/ready").status_code == 503
    assert httpx.get(f"{served}/v2/models/pickled/ready").status_code == 200  # the opted-in route serves it


def test_status_and_the_dashboard_say_which_route_no_worker_can_load_and_why(
    served: str, served_env: tuple[Settings, dict[str, str]], tracking_uri: str
) -> None:
    settings, env = served_env
    status = subprocess.run(
        [sys.executable, "-m", "streamml", "status", "--json"],
        env=process_env(settings, tracking_uri, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    refused = json.loads(status.stdout)["models"][REFUSED]
    assert [(load["state"], "STREAMML_MLFLOW_ALLOW_PICKLE" in load["error"]) for load in refused] == [
        ("failed", True)
    ]
    assert {load["state"] for load in json.loads(status.stdout)["models"]["pickled"]} == {"loaded"}
    shown: dict[str, Any] = {}
    with httpx.stream("GET", f"{served}/dashboard/events", timeout=30) as events:
        snapshots = (json.loads(line[5:]) for line in events.iter_lines() if line.startswith("data:"))
        for _, snapshot in zip(range(10), snapshots, strict=False):  # the history first, then live ones
            shown = {route: state["status"] for route, state in snapshot["routes"].items()}
            if shown.get(REFUSED, "ok") != "ok":
                break
    assert shown[REFUSED].startswith("unavailable: no worker can load it:")
    assert "STREAMML_MLFLOW_ALLOW_PICKLE" in shown[REFUSED]
    assert shown["pickled"] == "ok"


def poll(url: str, request_id: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        document: dict[str, Any] = httpx.get(f"{url}/predictions/{request_id}").json()
        if document["status"] in ("done", "failed") or time.monotonic() > deadline:
            return document
        time.sleep(0.05)


def _iso(frame: pd.DataFrame) -> dict[str, Any]:
    """Datetime columns as the ISO 8601 text a client sends."""
    return {
        column: frame[column].dt.strftime("%Y-%m-%dT%H:%M:%S")
        for column in frame.columns
        if pd.api.types.is_datetime64_any_dtype(frame[column])
    }
