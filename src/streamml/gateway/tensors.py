"""Tensors of the Open Inference Protocol: one column of values from a tensor sent as JSON data or, with
the binary tensor data extension Triton's client uses by default, as raw bytes after the JSON header;
and the labels sent back the same way."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

from streamml.errors import InvalidRequest, Problem
from streamml.settings import GatewaySettings

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


def invalid(message: str, field: str) -> InvalidRequest:
    return InvalidRequest([Problem(message, field=field)])


def tensor(name: str, values: list[Any]) -> dict[str, Any]:
    """One output tensor of per-record values (each a scalar, or a list: a row of a 2-D tensor), with
    the narrowest datatype that holds them all: BOOL, INT64, FP64, else BYTES (text; other values as
    their JSON)."""
    rows = len(values)
    flat = [v for value in values for v in value] if values and isinstance(values[0], list) else values
    shape = [rows, len(flat) // rows] if flat is not values and rows else [rows]
    datatype = datatype_of(flat)
    if datatype == "BYTES":
        flat = [v if isinstance(v, str) else orjson.dumps(v).decode() for v in flat]
    return {"name": name, "datatype": datatype, "shape": shape, "data": flat}


def datatype_of(values: list[Any]) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "BOOL"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "FP64"
    return "BYTES"


def encode_response(response: dict[str, Any], *, binary: bool) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: all JSON, or (``binary``) a JSON header followed by each
    output's data as the binary tensor data extension has it (BYTES elements length-prefixed)."""
    if not binary:
        return orjson.dumps(response), {"Content-Type": "application/json"}
    chunks, outputs = [], []
    for output in response["outputs"]:
        data = _to_binary(output["datatype"], output["data"])
        chunks.append(data)
        meta = {k: v for k, v in output.items() if k != "data"}
        outputs.append(meta | {"parameters": meta.get("parameters", {}) | {"binary_data_size": len(data)}})
    encoded = orjson.dumps(response | {"outputs": outputs})
    return encoded + b"".join(chunks), {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(encoded)),
    }


def _to_binary(datatype: str, data: list[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(raw)) + raw for raw in (str(v).encode() for v in data))
    return np.asarray(data, dtype=np.dtype(NUMPY_DTYPES[datatype])).tobytes()


class Chunks:
    """The binary data after the JSON header, handed out in the order the tensors declare it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.offset

    def take(self, size: int, name: str) -> bytes:
        if size < 0 or size > self.left:
            raise invalid(f"tensor {name!r}: binary_data_size {size} is more than the bytes sent", name)
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk


def read_tensor(index: int, tensor: Any, chunks: Chunks, limits: GatewaySettings) -> tuple[str, list[Any]]:
    """(name, one value per row, None where missing) of one input tensor."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise invalid(f"input {index} must be an object with a 'name'", f"inputs.{index}")
    name: str = tensor["name"]
    shape, datatype = tensor.get("shape"), tensor.get("datatype")
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise invalid(f"tensor {name!r}: 'shape' must be a list of sizes, rows first", name)
    if math.prod(shape[1:]) != 1:
        raise invalid(f"tensor {name!r}: shape {shape} is not one column ([rows] or [rows, 1])", name)
    if shape[0] > limits.max_records:
        raise invalid(f"tensor {name!r}: {shape[0]} rows; at most {limits.max_records}", name)
    if not isinstance(datatype, str) or (datatype != "BYTES" and datatype not in NUMPY_DTYPES):
        raise invalid(f"tensor {name!r}: unknown datatype {datatype!r}", name)
    parameters = tensor.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is not None:
        if not isinstance(size, int):
            raise invalid(f"tensor {name!r}: binary_data_size must be an integer", name)
        values = _from_binary(name, datatype, chunks.take(size, name))
    elif "data" in tensor:
        values = _flat_list(tensor["data"])
    else:
        raise invalid(f"tensor {name!r} has neither 'data' nor binary data", name)
    if len(values) != shape[0]:
        raise invalid(f"tensor {name!r}: {len(values)} values for shape {shape}", name)
    types = set(map(type, values))  # a column's types and NaNs are read in C, not value by value
    if types == {float}:
        if math.isnan(sum(values)):  # in C: a NaN anywhere makes the sum NaN (so may inf and -inf)
            values = [None if math.isnan(v) else v for v in values]
    elif float in types:
        values = [_missing_as_none(v) for v in values]
    return name, values


def _flat_list(data: Any) -> list[Any]:
    """The values of a tensor's ``data`` in row order, however it nests them. Flat data (the common
    case) is taken as it is: its types are checked in C, not value by value."""
    if isinstance(data, list) and list not in set(map(type, data)):
        return data
    return list(_flat(data))


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
                raise invalid(f"tensor {name!r}: a BYTES element's length is cut short", name)
            [length] = struct.unpack_from("<I", chunk, offset)
            offset += 4
            if offset + length > len(chunk):
                raise invalid(f"tensor {name!r}: a BYTES element is cut short", name)
            element = chunk[offset : offset + length]
            offset += length
            try:
                values.append(element.decode("utf-8"))
            except UnicodeDecodeError:
                raise invalid(f"tensor {name!r}: a BYTES element is not UTF-8 text", name) from None
        return values
    dtype = np.dtype(NUMPY_DTYPES[datatype])
    if len(chunk) % dtype.itemsize:
        raise invalid(f"tensor {name!r}: {len(chunk)} bytes is not a whole number of {datatype}", name)
    return list(np.frombuffer(chunk, dtype=dtype).tolist())


def _missing_as_none(value: Any) -> Any:
    """NaN in a number tensor is a missing value (as in a pandas frame): the model imputes it."""
    return None if isinstance(value, float) and math.isnan(value) else value
