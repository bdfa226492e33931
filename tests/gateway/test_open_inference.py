"""Open Inference Protocol (V2) requests become records: JSON tensors and the binary tensor extension,
encoded by Triton's own client (``InferenceServerClient.generate_request_body``), give the same records;
what is wrong is named by its tensor."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

from streamml.errors import InvalidRequest
from streamml.gateway.open_inference import infer_response, read_infer
from streamml.gateway.tensors import encode_response
from streamml.output_kinds import PREDICT, PROBA
from streamml.settings import GatewaySettings

LIMITS = GatewaySettings(max_records=10)
COLUMNS: dict[str, np.ndarray] = {
    "Designation": np.array([[2.0], [3.0]]),
    "Team Size": np.array([[4], [7]], dtype=np.int64),
    "Gender": np.array([["Female"], ["Male"]], dtype=object),
}
RECORDS = [
    {"Designation": 2.0, "Team Size": 4, "Gender": "Female"},
    {"Designation": 3.0, "Team Size": 7, "Gender": "Male"},
]
DATATYPES = {"Designation": "FP64", "Team Size": "INT64", "Gender": "BYTES"}


def triton_body(binary: bool, **kwargs: Any) -> tuple[bytes, str | None]:
    inputs = []
    for name, values in COLUMNS.items():
        tensor = InferInput(name, list(values.shape), DATATYPES[name])
        tensor.set_data_from_numpy(values, binary_data=binary)
        inputs.append(tensor)
    body, json_size = InferenceServerClient.generate_request_body(inputs, **kwargs)
    return body, None if json_size is None else str(json_size)


@pytest.mark.parametrize("binary", [True, False], ids=["binary extension", "json"])
def test_tritons_client_requests_give_one_record_per_row(binary: bool) -> None:
    body, header_length = triton_body(binary, request_id="r-1")
    read = read_infer(body, header_length, LIMITS)
    assert read.rows.records == RECORDS
    assert read.request_id == "r-1"


def test_naming_the_probabilities_output_asks_for_them_and_only_alone() -> None:
    body, length = triton_body(False, outputs=[InferRequestedOutput("predictions", binary_data=False)])
    read = read_infer(body, length, LIMITS)
    assert (read.rows.records, read.output) == (RECORDS, PREDICT)
    body, length = triton_body(False, outputs=[InferRequestedOutput("probabilities")])
    assert read_infer(body, length, LIMITS).output == PROBA
    both = [InferRequestedOutput("predictions"), InferRequestedOutput("probabilities")]
    body, length = triton_body(False, outputs=both)
    with pytest.raises(InvalidRequest, match="'probabilities' alone"):
        read_infer(body, length, LIMITS)


def test_typed_predictions_go_back_as_typed_tensors_json_or_binary() -> None:
    """Numbers as FP64, integers as INT64, booleans as BOOL, rows of columns as one tensor each,
    probabilities as a two-dimensional FP64 tensor with the classes beside: Triton's client reads them."""
    cases: list[tuple[dict[str, Any], dict[str, list[Any]]]] = [
        ({"predictions": [1.5, 2.25]}, {"predictions": [1.5, 2.25]}),
        ({"predictions": [3, 4]}, {"predictions": [3, 4]}),
        ({"predictions": [True, False]}, {"predictions": [True, False]}),
        ({"predictions": [{"band": "hi", "score": 0.5}, {"band": "lo", "score": 0.25}]},
         {"band": [b"hi", b"lo"], "score": [0.5, 0.25]}),
        ({"predictions": [[0.1, 0.9], [0.7, 0.3]], "classes": ["a", "b"]},
         {"probabilities": [[0.1, 0.9], [0.7, 0.3]]}),
    ]  # fmt: skip
    for fields, expected in cases:
        document = {"request_id": "q", "model": {"name": "M", "version": "1"}} | fields
        response = infer_response(document, "route", None)
        for binary in (True, False):
            body, headers = encode_response(response, binary=binary)
            result = InferenceServerClient.parse_response_body(
                body, header_length=headers.get("Inference-Header-Content-Length")
            )
            for name, values in expected.items():
                got = result.as_numpy(name).tolist()
                wanted = [v.decode() if isinstance(v, bytes) and not binary else v for v in values]
                assert got == wanted, (name, binary, got)
    assert orjson.loads(infer_response(document, "route", None)["parameters"]["classes"]) == ["a", "b"]


def test_nan_and_null_are_missing_values() -> None:
    body = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "FP64", "data": [1.5, None]},
            {"name": "b", "shape": [2, 1], "datatype": "FP64", "data": [[None], [2.0]]},
        ]
    }
    assert read_infer(orjson.dumps(body), None, LIMITS).rows.records == [{"a": 1.5}, {"b": 2.0}]
    nan = np.array([np.nan, 1.0])
    binary = {
        "inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}}]
    }
    header = orjson.dumps(binary)
    assert read_infer(header + nan.tobytes(), str(len(header)), LIMITS).rows.records == [{}, {"a": 1.0}]


def tensor(**overrides: Any) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "data": [1, 2]} | overrides]}
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (tensor(shape=[3]), "'a': 2 values for shape \\[3\\]"),
        (tensor(shape=[1, 2]), "'a': shape \\[1, 2\\] is not one column"),
        (tensor(datatype="FP128"), "'a': unknown datatype 'FP128'"),
        (tensor(datatype=["FP64"]), "'a': unknown datatype"),
        (tensor(shape=[11], data=[0] * 11), "'a': 11 rows; at most 10"),
        (orjson.dumps({"inputs": []}), "non-empty 'inputs'"),
        (orjson.dumps({"inputs": [{"shape": [1]}]}), "input 0 must be an object with a 'name'"),
        (tensor(parameters={"binary_data_size": 8}), "binary_data_size 8 is more than the bytes sent"),
    ],
)
def test_a_wrong_tensor_is_a_422_naming_it(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        read_infer(body, None, LIMITS)


def test_tensors_of_different_lengths_are_refused() -> None:
    body = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "FP64", "data": [1, 2]},
            {"name": "b", "shape": [1], "datatype": "FP64", "data": [1]},
        ]
    }
    with pytest.raises(InvalidRequest, match="as many rows"):
        read_infer(orjson.dumps(body), None, LIMITS)


def test_binary_data_nobody_declared_is_refused() -> None:
    body, length = triton_body(True)
    with pytest.raises(InvalidRequest, match="3 bytes of binary data follow"):
        read_infer(body + b"xyz", length, LIMITS)


@pytest.mark.parametrize("binary", [True, False], ids=["binary extension", "json"])
def test_tritons_client_reads_the_response_either_way(binary: bool) -> None:
    document = {
        "request_id": "abc-0",
        "model": {"route": "svm", "name": "SVC", "version": "3"},
        "predictions": ["Low", "High"],
    }
    response = infer_response(document, "svm", "r-9")
    body, headers = encode_response(response, binary=binary)
    result = InferenceServerClient.parse_response_body(
        body, header_length=headers.get("Inference-Header-Content-Length")
    )
    labels = list(result.as_numpy("predictions"))
    assert labels == ([b"Low", b"High"] if binary else ["Low", "High"])
    assert result.get_response()["id"] == "r-9"


def test_binary_output_is_what_the_request_asks_for() -> None:
    def asks(parameters: Any = None, outputs: Any = None) -> bool:
        body = orjson.dumps(
            {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}]}
            | ({"parameters": parameters} if parameters else {})
            | ({"outputs": outputs} if outputs else {})
        )
        return read_infer(body, None, LIMITS).binary_output

    assert not asks()
    assert asks({"binary_data_output": True})
    assert not asks(
        {"binary_data_output": True}, [{"name": "predictions", "parameters": {"binary_data": False}}]
    )
    assert asks(None, [{"name": "predictions", "parameters": {"binary_data": True}}])


def test_a_string_or_a_record_over_the_limits_is_named_with_its_record_and_field() -> None:
    limits = GatewaySettings(max_records=10, max_string_length=5, max_fields=2)
    strings = {"name": "g", "shape": [2, 1], "datatype": "BYTES", "data": ["short", "too long"]}
    with pytest.raises(InvalidRequest) as raised:
        read_infer(orjson.dumps({"inputs": [strings]}), None, limits)
    [problem] = raised.value.problems
    assert (problem.record, problem.field) == (1, "g")
    assert "longer than 5 characters" in problem.message
    numbers = [{"name": n, "shape": [1], "datatype": "FP64", "data": [1.0]} for n in ("a", "b", "c")]
    with pytest.raises(InvalidRequest, match="record 0 has 3 fields; at most 2"):
        read_infer(orjson.dumps({"inputs": numbers}), None, limits)
