"""The Open Inference Protocol (KServe's "V2" REST protocol, spoken by KServe, MLServer and Triton): its
inference requests read into records, and its metadata and response documents.

A tabular model's input is one named tensor per column, as MLServer's pandas codec sends a frame:
numbers as FP64/FP32/INT64/INT32 (…), categories as BYTES, each of shape ``[n]`` or ``[n, 1]`` for n
rows. The tensors' data come as JSON lists or, with the binary tensor extension Triton's client uses by
default, as raw bytes after a JSON header of ``Inference-Header-Content-Length`` bytes. The output is
one BYTES tensor of labels, ``predictions``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from streamml.errors import InvalidRequest, Problem
from streamml.gateway.intake import check_records, parse_json_body
from streamml.models.schema import InputSchema
from streamml.settings import GatewaySettings

OUTPUT = "predictions"
PROTOCOL_VERSION = "2"

SIGNATURE_DATATYPES = {
    "double": "FP64",
    "float": "FP32",
    "long": "INT64",
    "integer": "INT32",
    "boolean": "BOOL",
    "string": "BYTES",
}
"""An MLflow signature's column type -> the tensor datatype the metadata announces for it."""

NUMPY_DTYPES = {
    "BOOL": "?",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP32": "<f4",
    "FP64": "<f8",
}
"""Fixed-size datatypes and their little-endian layout in the binary extension."""


def error_body(message: str) -> dict[str, str]:
    """The protocol's error shape (what Triton's client reads)."""
    return {"error": message}


def model_metadata(route: str, name: str, version: str, schema: InputSchema) -> dict[str, Any]:
    return {
        "name": route,
        "versions": [version],
        "platform": "mlflow",
        "inputs": [
            {"name": c.name, "datatype": SIGNATURE_DATATYPES.get(c.type, "BYTES"), "shape": [-1]}
            for c in schema.columns
        ],
        "outputs": [{"name": OUTPUT, "datatype": "BYTES", "shape": [-1]}],
        "parameters": {"registered_model": name, "registered_version": version},
    }


def infer_response(
    route: str, version: str, name: str, request_id: str | None, labels: list[str], stream_request_id: str
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "model_name": route,
        "model_version": version,
        "outputs": [{"name": OUTPUT, "datatype": "BYTES", "shape": [len(labels)], "data": labels}],
        "parameters": {"registered_model": name, "request_id": stream_request_id},
    }
    if request_id is not None:
        response["id"] = request_id
    return response


class InferRequest:
    """An inference request read: its records, the client's ``id`` to echo, and whether the output is
    wanted as binary data (Triton's client asks so unless told otherwise)."""

    def __init__(self, records: list[dict[str, Any]], request_id: str | None, binary_output: bool) -> None:
        self.records = records
        self.request_id = request_id
        self.binary_output = binary_output


def encode_response(response: dict[str, Any], *, binary: bool) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: all JSON, or (``binary``) a JSON header followed by the
    labels as length-prefixed bytes, as the binary tensor data extension has it."""
    if not binary:
        return orjson.dumps(response), {"Content-Type": "application/json"}
    [output] = response["outputs"]
    data = b"".join(struct.pack("<I", len(raw)) + raw for raw in (label.encode() for label in output["data"]))
    header = response | {
        "outputs": [
            {k: v for k, v in output.items() if k != "data"} | {"parameters": {"binary_data_size": len(data)}}
        ]
    }
    encoded = orjson.dumps(header)
    return encoded + data, {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(encoded)),
    }


def read_infer(raw: bytes, header_length: str | None, limits: GatewaySettings) -> InferRequest:
    """The request's records, or a 413/422 naming the tensor (and record) that is wrong."""
    json_part, binary = raw, b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(raw):
            raise _invalid(
                "Inference-Header-Content-Length must be the JSON header's size in bytes", "header"
            )
        json_part, binary = raw[: int(header_length)], raw[int(header_length) :]
    body = parse_json_body(json_part, limits)
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise _invalid("the body must be an object with a non-empty 'inputs' list of tensors", "inputs")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _invalid("'id' must be a string", "id")
    binary_output = _binary_output(body.get("parameters"), body.get("outputs"))
    chunks = _Chunks(binary)
    columns = [_tensor(index, tensor, chunks, limits) for index, tensor in enumerate(body["inputs"])]
    if chunks.left:
        raise _invalid(f"{chunks.left} bytes of binary data follow the tensors that declared theirs", "body")
    rows = {len(values) for _, values in columns}
    if len(rows) != 1:
        raise _invalid("every input tensor must hold one value per row, and as many rows", "inputs")
    records = [
        {name: value for name, values in columns if (value := values[row]) is not None}
        for row in range(rows.pop())
    ]
    check_records(records, limits)
    return InferRequest(records, request_id, binary_output)


def _invalid(message: str, field: str) -> InvalidRequest:
    return InvalidRequest([Problem(message, field=field)])


def _binary_output(parameters: Any, outputs: Any) -> bool:
    """Whether the output goes back as binary data: the request's ``binary_data_output``, unless the
    output is asked for by name with its own ``binary_data``."""
    wanted = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    if outputs is None:
        return wanted
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise _invalid("'outputs' must be a list of {name} objects", "outputs")
    unknown = [o.get("name") for o in outputs if o.get("name") != OUTPUT]
    if unknown:
        raise _invalid(f"no output {unknown[0]!r}: this model has one output, {OUTPUT!r}", "outputs")
    for output in outputs:
        own = output.get("parameters")
        if isinstance(own, dict) and isinstance(own.get("binary_data"), bool):
            wanted = own["binary_data"]
    return wanted


class _Chunks:
    """The binary data after the JSON header, handed out in the order the tensors declare it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.offset

    def take(self, size: int, name: str) -> bytes:
        if size < 0 or size > self.left:
            raise _invalid(f"tensor {name!r}: binary_data_size {size} is more than the bytes sent", name)
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk


def _tensor(index: int, tensor: Any, chunks: _Chunks, limits: GatewaySettings) -> tuple[str, list[Any]]:
    """(name, one value per row, None where missing) of one input tensor."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise _invalid(f"input {index} must be an object with a 'name'", f"inputs.{index}")
    name: str = tensor["name"]
    shape, datatype = tensor.get("shape"), tensor.get("datatype")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise _invalid(f"tensor {name!r}: 'shape' must be a list of sizes, rows first", name)
    if math.prod(shape[1:]) != 1:
        raise _invalid(f"tensor {name!r}: shape {shape} is not one column ([rows] or [rows, 1])", name)
    if shape[0] > limits.max_records:
        raise _invalid(f"tensor {name!r}: {shape[0]} rows; at most {limits.max_records}", name)
    if not isinstance(datatype, str) or (datatype != "BYTES" and datatype not in NUMPY_DTYPES):
        raise _invalid(f"tensor {name!r}: unknown datatype {datatype!r}", name)
    parameters = tensor.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is not None:
        if not isinstance(size, int):
            raise _invalid(f"tensor {name!r}: binary_data_size must be an integer", name)
        values = _from_binary(name, datatype, chunks.take(size, name))
    elif "data" in tensor:
        values = list(_flat(tensor["data"]))
    else:
        raise _invalid(f"tensor {name!r} has neither 'data' nor binary data", name)
    if len(values) != shape[0]:
        raise _invalid(f"tensor {name!r}: {len(values)} values for shape {shape}", name)
    return name, [_missing_as_none(v) for v in values]


def _flat(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flat(item)
    else:
        yield data


def _from_binary(name: str, datatype: str, chunk: bytes) -> list[Any]:
    if datatype == "BYTES":
        values, offset = [], 0
        while offset < len(chunk):
            if offset + 4 > len(chunk):
                raise _invalid(f"tensor {name!r}: a BYTES element's length is cut short", name)
            [length] = struct.unpack_from("<I", chunk, offset)
            offset += 4
            if offset + length > len(chunk):
                raise _invalid(f"tensor {name!r}: a BYTES element is cut short", name)
            element = chunk[offset : offset + length]
            offset += length
            try:
                values.append(element.decode("utf-8"))
            except UnicodeDecodeError:
                raise _invalid(f"tensor {name!r}: a BYTES element is not UTF-8 text", name) from None
        return values
    dtype = np.dtype(NUMPY_DTYPES[datatype])
    if len(chunk) % dtype.itemsize:
        raise _invalid(f"tensor {name!r}: {len(chunk)} bytes is not a whole number of {datatype}", name)
    return list(np.frombuffer(chunk, dtype=dtype).tolist())


def _missing_as_none(value: Any) -> Any:
    """NaN in a number tensor is a missing value (as in a pandas frame): the model imputes it."""
    return None if isinstance(value, float) and math.isnan(value) else value
