"""Reading a prediction request at the edge: content type, size, strict JSON, shape limits.

Every refusal names the problem (and the record and field where there is one) and happens before
anything is published. The schema's own checks (feature names, types, finiteness) follow in
:mod:`streamml.models.schema`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import orjson
from pydantic import ValidationError

from streamml.errors import InvalidRequest, PayloadTooLarge, Problem, UnsupportedMediaType
from streamml.models.schema import InputSchema, ValidatedBatch
from streamml.settings import GatewaySettings

ALLOWED_QUERY = frozenset({"model"})


def _invalid(message: str, *, record: int | None = None, field: str | None = None) -> InvalidRequest:
    return InvalidRequest([Problem(message, record=record, field=field)])


def check_envelope(*, content_type: str, query: Iterable[str]) -> None:
    """Refuse what is wrong around the body (415, 422), before it is read. ``query`` holds the names
    of the request's query parameters."""
    unknown = sorted(set(query) - ALLOWED_QUERY)
    if unknown:
        raise _invalid(f"unknown query parameter {unknown[0]!r}; only 'model' is accepted", field=unknown[0])
    media_type = content_type.split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(
            f"send the body as application/json (got {media_type or 'no content type'!r})"
        )


def read_batch(raw: bytes, schema: InputSchema, limits: GatewaySettings) -> ValidatedBatch:
    """The records of a ``{"data": [...]}`` body validated against ``schema``, or a 413/422 naming
    what is wrong. The common case takes the compiled validator; the rest the careful path."""
    return quick_batch(raw, schema, limits) or schema.validate(read_records(raw, limits))


def quick_batch(raw: bytes, schema: InputSchema, limits: GatewaySettings) -> ValidatedBatch | None:
    """The batch when the compiled validator (:meth:`InputSchema.compiled`) takes the body whole,
    else None. It keeps the last of duplicate keys, so, as in :func:`parse_json`, its result counts
    only when the body has exactly as many key endings as the result has keys."""
    validator = schema.compiled(limits.max_records, limits.max_string_length)
    if validator is None:
        return None
    try:
        records: list[dict[str, Any]] = validator.validate_json(raw)["data"]
    except ValidationError:
        return None
    values = sum(map(len, records))
    if _key_endings(raw) != 1 + values:
        return None
    return schema.accept_valid(records, values)


def parse_json_body(raw: bytes, limits: GatewaySettings) -> Any:
    """A body's JSON, strictly (duplicate keys refused, depth limited), or a 422 saying what is wrong.
    The body-limit middleware has refused a body past the size limit before it was read."""
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
    if nesting > limits.max_depth:
        raise _invalid(f"the JSON nests deeper than {limits.max_depth} levels", field="body")
    return parsed


def check_records(records: list[Any], limits: GatewaySettings) -> None:
    """The shape limits every entry point applies: how many records, fields per record, string sizes
    (a 413 or a 422 naming the record and field)."""
    if len(records) > limits.max_records:
        raise PayloadTooLarge(f"{len(records)} records in one request; at most {limits.max_records}")
    for index, record in enumerate(records):
        if isinstance(record, dict):
            _check_record(index, record, limits)


def read_records(raw: bytes, limits: GatewaySettings) -> list[Any]:
    """The ``data`` list of a ``{"data": [...]}`` body, or a 413/422 saying what is wrong."""
    parsed = parse_json_body(raw, limits)
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
    check_records(data, limits)
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


class DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


_SPACED_KEY_END = re.compile(rb'"\s+:')


def parse_json(body: bytes, max_depth: int) -> tuple[Any, int]:
    """Strict JSON and its nesting depth (counted up to ``max_depth + 1``). Duplicate keys are an error
    (a silent last-wins would hide a client bug). NaN and Infinity parse, so that validation can name
    the record and field that holds them.

    orjson parses first (several times faster than the strict parser). It keeps the last of duplicate
    keys silently, so its result is trusted only when the parsed objects hold as many keys as the body
    has key endings (``":``): every key ends that way once, so a duplicate always makes the body's
    count larger. Anything else — a duplicate, a string value holding a key ending, or a body orjson
    refuses (NaN, integers beyond a double) — goes to the strict parser, which decides."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        value = _strict_json(body)
        return value, _shape(value, max_depth)[0]
    nesting, keys = _shape(value, max_depth)
    if _key_endings(body) != keys:
        value = _strict_json(body)
    return value, nesting


def _key_endings(body: bytes) -> int:
    """How many times a JSON key ends in ``body`` (``":``, or with spaces before the colon); a string
    value holding one counts too, which only ever sends a body to the strict parser."""
    if _SPACED_KEY_END.search(body) is not None:  # '"key" :' too: count with the slower regex
        return len(re.findall(rb'"\s*:', body))
    return body.count(b'":')


def _strict_json(body: bytes) -> Any:
    return json.loads(body, object_pairs_hook=_no_duplicates)


def _shape(value: Any, limit: int) -> tuple[int, int]:
    """(nesting depth, keys of every object) in one pass; stops counting once deeper than ``limit``.
    A scalar is one level, so a body of flat records is four: object, list, record, value."""
    if not isinstance(value, (dict, list)):
        return 1, 0
    deepest, keys = 1, 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children: Iterable[Any] = item
        if isinstance(item, dict):
            keys += len(item)
            children = item.values()
        below = level + 1
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, below))
            elif below > deepest:
                deepest = below
        deepest = max(deepest, level)
        if deepest > limit:
            break
    return deepest, keys
