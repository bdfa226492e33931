"""Reading a request body at the edge, whatever its protocol: strict JSON (duplicate keys refused, depth
limited) and the shape limits every entry point applies (records, fields, string sizes).

Every refusal names the problem (and the record and field where there is one) and happens before
anything is published. Each protocol's own reader (``native``, ``mlflow_scoring``, ``open_inference``)
builds on these; the schema's checks (feature names, types, finiteness) follow in
:mod:`streamml.models.schema`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import orjson

from streamml.errors import InvalidRequest, PayloadTooLarge, Problem
from streamml.rows import Rows
from streamml.settings import GatewaySettings


def invalid(message: str, *, record: int | None = None, field: str | None = None) -> InvalidRequest:
    return InvalidRequest([Problem(message, record=record, field=field)])


def parse_json_body(raw: bytes, limits: GatewaySettings) -> Any:
    """A body's JSON, strictly (duplicate keys refused, depth limited), or a 422 saying what is wrong.
    The body-limit middleware has refused a body past the size limit before it was read."""
    if not raw.strip():
        raise invalid('the body is empty; send {"data": [{feature: value, ...}]}', field="body")
    try:
        parsed, nesting = parse_json(raw, limits.max_depth)
    except DuplicateKey as exc:
        raise invalid(
            f"the key {exc.args[0]!r} appears twice in one object", field=str(exc.args[0])
        ) from None
    except RecursionError:
        raise invalid(f"the JSON nests deeper than {limits.max_depth} levels", field="body") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"the body is not valid JSON: {exc}", field="body") from None
    if nesting > limits.max_depth:
        raise invalid(f"the JSON nests deeper than {limits.max_depth} levels", field="body")
    return parsed


def check_records(records: list[Any], limits: GatewaySettings) -> None:
    """The shape limits every entry point applies: how many records, fields per record, string sizes
    (a 413 or a 422 naming the record and field)."""
    if len(records) > limits.max_records:
        raise PayloadTooLarge(f"{len(records)} records in one request; at most {limits.max_records}")
    for index, record in enumerate(records):
        if isinstance(record, dict):
            _check_record(index, record, limits)


def check_rows(rows: Rows, limits: GatewaySettings) -> None:
    """:func:`check_records` for records that came as columns, judged a column at a time; only when a
    column may break a limit are the records built, for ``check_records`` to name the first one."""
    if rows.holds_records:
        check_records(rows.records, limits)
    elif len(rows) > limits.max_records:
        raise PayloadTooLarge(f"{len(rows)} records in one request; at most {limits.max_records}")
    elif not _columns_within_limits(rows.columns, limits):
        check_records(rows.records, limits)


def _columns_within_limits(columns: dict[str, list[Any]], limits: GatewaySettings) -> bool:
    """Whether no record made of these columns can be over a limit :func:`check_records` applies."""
    if len(columns) > limits.max_fields:
        return False
    longest = limits.max_string_length
    for name, values in columns.items():
        if len(name) > longest:
            return False
        kinds = set(map(type, values))
        if str in kinds:
            strings = values if kinds == {str} else [v for v in values if type(v) is str]
            if max(map(len, strings)) > longest:
                return False
    return True


def _check_record(index: int, record: dict[str, Any], limits: GatewaySettings) -> None:
    if len(record) > limits.max_fields:
        raise invalid(f"record {index} has {len(record)} fields; at most {limits.max_fields}", record=index)
    for name, value in record.items():
        if len(name) > limits.max_string_length:
            raise invalid(
                f"record {index}: a feature name is longer than {limits.max_string_length} characters",
                record=index,
                field=name[:40] + "...",
            )
        if isinstance(value, str) and len(value) > limits.max_string_length:
            raise invalid(
                f"record {index}, field {name!r}: the string is longer than {limits.max_string_length} "
                "characters",
                record=index,
                field=name,
            )


def kind_of(value: Any) -> str:
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
    if key_endings(body) != keys:
        value = _strict_json(body)
    return value, nesting


def key_endings(body: bytes) -> int:
    """How many times a JSON key ends in ``body`` (``":``, or with spaces before the colon); a string
    value holding one counts too, which only ever sends a body to the strict parser."""
    if _SPACED_KEY_END.search(body) is not None:  # '"key" :' too: count with the slower regex
        return len(re.findall(rb'"\s*:', body))
    return body.count(b'":')


def _strict_json(body: bytes) -> Any:
    return json.loads(body, object_pairs_hook=_no_duplicates)


_CONTAINERS = frozenset((dict, list))


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
        if _CONTAINERS.isdisjoint(map(type, children)):  # scalars only (a column's values): read in C
            deepest = max(deepest, below) if len(item) else deepest
        else:
            for child in children:
                if isinstance(child, (dict, list)):
                    stack.append((child, below))
                elif below > deepest:
                    deepest = below
        deepest = max(deepest, level)
        if deepest > limit:
            break
    return deepest, keys
