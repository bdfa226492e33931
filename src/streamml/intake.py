"""Reading a prediction request at the edge: content type, size, strict JSON, shape limits.

Every refusal names the problem (and the record and field where there is one) and happens before
anything is published. The schema's own checks (feature names, types, finiteness) follow in
:mod:`streamml.schema`.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from streamml.errors import InvalidRequest, PayloadTooLarge, Problem, UnsupportedMediaType
from streamml.security import DuplicateKey, parse_json
from streamml.settings import GatewaySettings

ALLOWED_QUERY = frozenset({"model"})


def _invalid(message: str, *, record: int | None = None, field: str | None = None) -> InvalidRequest:
    return InvalidRequest([Problem(message, record=record, field=field)])


async def read_records(request: Request, limits: GatewaySettings) -> list[Any]:
    """The ``data`` list of a ``{"data": [...]}`` body, or a 413/415/422 saying what is wrong."""
    unknown = sorted(set(request.query_params) - ALLOWED_QUERY)
    if unknown:
        raise _invalid(f"unknown query parameter {unknown[0]!r}; only 'model' is accepted", field=unknown[0])
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(
            f"send the body as application/json (got {media_type or 'no content type'!r})"
        )
    raw = await request.body()  # the body-limit middleware raises PayloadTooLarge past the limit
    if not raw.strip():
        raise _invalid('the body is empty; send {"data": [{feature: value, ...}]}', field="body")
    try:
        parsed, nesting = parse_json(raw, limits.max_depth)
    except DuplicateKey as exc:
        raise _invalid(
            f"the key {exc.args[0]!r} appears twice in one object", field=str(exc.args[0])
        ) from None
    except RecursionError:
        raise _invalid(f"the JSON nests deeper than {limits.max_depth} levels", field="body") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid(f"the body is not valid JSON: {exc}", field="body") from None
    if not isinstance(parsed, dict):
        raise _invalid(f'the body must be a JSON object {{"data": [...]}}, not {_kind(parsed)}', field="body")
    extra = sorted(set(parsed) - {"data"})
    if extra:
        raise _invalid(f"unknown field {extra[0]!r} in the body; only 'data' is accepted", field=extra[0])
    if "data" not in parsed:
        raise _invalid("the body must be an object with a 'data' list of records", field="data")
    data = parsed["data"]
    if not isinstance(data, list):
        raise _invalid(f"'data' must be a list of records, not {_kind(data)}", field="data")
    if len(data) > limits.max_records:
        raise PayloadTooLarge(f"{len(data)} records in one request; at most {limits.max_records}")
    if nesting > limits.max_depth:
        raise _invalid(f"the JSON nests deeper than {limits.max_depth} levels", field="body")
    for index, record in enumerate(data):
        if isinstance(record, dict):
            _check_record(index, record, limits)
    return data


def _check_record(index: int, record: dict[str, Any], limits: GatewaySettings) -> None:
    if len(record) > limits.max_fields:
        raise _invalid(f"record {index} has {len(record)} fields; at most {limits.max_fields}", record=index)
    for name, value in record.items():
        if len(name) > limits.max_string_length:
            raise _invalid(
                f"record {index}: a feature name is longer than {limits.max_string_length} characters",
                record=index,
                field=name[:40] + "...",
            )
        if isinstance(value, str) and len(value) > limits.max_string_length:
            raise _invalid(
                f"record {index}, field {name!r}: the string is longer than {limits.max_string_length} "
                "characters",
                record=index,
                field=name,
            )


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
