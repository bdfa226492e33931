"""The compiled validator is a shortcut, never a second opinion: for any body, ``read_batch`` gives what
the careful path (strict JSON, then ``InputSchema.validate``) gives — the same batch, or the same error."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamml.errors import InvalidRequest, StreammlError
from streamml.gateway.native import quick_batch, read_batch, read_records
from streamml.models.schema import Column, InputSchema, ValidatedBatch
from streamml.rows import Rows
from streamml.settings import GatewaySettings

SCHEMA = InputSchema(
    [
        Column("Sleep Hours", "double", required=False),
        Column("Team Size", "double", required=False),
        Column("Gender", "string", required=False),
        Column("Age", "long", required=False),
        Column("Remote", "boolean", required=False),
        Column("Designation", "double", required=True),
    ]
)
LIMITS = GatewaySettings(max_records=50, max_string_length=20)
COMPLETE = {"Sleep Hours": 6.5, "Team Size": 4, "Gender": "F", "Age": 41, "Remote": True, "Designation": 2.0}


def careful(body: bytes) -> ValidatedBatch | str:
    try:
        return SCHEMA.validate_carefully(read_records(body, LIMITS))
    except StreammlError as exc:
        return f"{type(exc).__name__}: {exc}"


def either(body: bytes) -> ValidatedBatch | str:
    try:
        return read_batch(body, SCHEMA, LIMITS)
    except StreammlError as exc:
        return f"{type(exc).__name__}: {exc}"


def test_the_common_case_takes_the_compiled_validator_and_matches_the_careful_path() -> None:
    body = orjson.dumps({"data": [COMPLETE, {"Designation": 1, "Gender": "M"}]})
    quick = quick_batch(body, SCHEMA, LIMITS)
    assert quick is not None
    assert quick == careful(body)
    assert quick.missing == {"Sleep Hours": 1, "Team Size": 1, "Age": 1, "Remote": 1}
    assert type(quick.records[0]["Team Size"]) is float  # an integer in a double column is a double


def test_complete_records_miss_nothing() -> None:
    quick = quick_batch(orjson.dumps({"data": [COMPLETE, COMPLETE]}), SCHEMA, LIMITS)
    assert quick == ValidatedBatch(Rows(records=[COMPLETE, COMPLETE]), {})


@pytest.mark.parametrize(
    "body",
    [
        b'{"data": [{"Designation": 1, "Designation": 2}]}',  # duplicate key: the careful path names it
        b'{"data": [{"designation": 1}]}',  # another spelling of a feature
        b'{"data": [{"Designation": 1, "Sleep Hours": null}]}',  # null: imputed, by the careful path
        b'{"data": [{"Designation": true}]}',
        b'{"data": [{"Designation": "1"}]}',
        b'{"data": [{"Designation": NaN}]}',
        b'{"data": [{"Designation": 1e999}]}',
        b'{"data": [{"Age": 3.0, "Designation": 1}]}',
        b'{"data": [{"Gender": "F"}]}',  # a required feature missing
        b'{"data": [{"Designation": 1, "Gender": "x:\\": 1"}]}',  # a key ending inside a string
        b'{"data": []}',
        b'{"data": [{"Designation": 1}], "extra": 1}',
        b'{"data": [{"Designation": 1, "Gender": "a string past the length limit"}]}',
    ],
)
def test_what_the_compiled_validator_does_not_take_goes_the_careful_way(body: bytes) -> None:
    assert quick_batch(body, SCHEMA, LIMITS) is None
    assert either(body) == careful(body)


def test_too_many_records_is_the_careful_paths_413() -> None:
    body = orjson.dumps({"data": [COMPLETE] * 51})
    assert quick_batch(body, SCHEMA, LIMITS) is None
    assert either(body).startswith("PayloadTooLarge")  # type: ignore[union-attr]


def test_a_schema_with_a_type_it_does_not_know_has_no_compiled_validator() -> None:
    assert InputSchema([Column("x", "float", required=True)]).compiled(10, 10) is None


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=25),
)
NAMES = st.sampled_from([*COMPLETE, "sleep_hours", "Team-Size", "Unknown", "Gender "])
RECORDS = st.lists(st.dictionaries(NAMES, VALUES, max_size=7), max_size=4)


@settings(max_examples=400, deadline=None)
@given(records=RECORDS, spaced=st.booleans())
def test_for_any_body_the_answer_is_the_careful_paths(records: list[dict[str, Any]], spaced: bool) -> None:
    """NaN and Infinity written as JS literals, as json.dumps does; with spaces before colons or not."""
    body = json.dumps({"data": records}, separators=(",", " : ") if spaced else (",", ":")).encode()
    assert either(body) == careful(body)


def _typed(answer: ValidatedBatch | str) -> Any:
    """An answer with each value's type beside it (``==`` takes 2 for 2.0): the error, or the missing
    counts and the records' value types."""
    if isinstance(answer, str):
        return answer
    return answer.missing, [{k: type(v) for k, v in r.items()} for r in answer.records]


def _answer(validate: Any, records: list[Any]) -> ValidatedBatch | str:
    try:
        batch: ValidatedBatch = validate(records)
    except StreammlError as exc:
        return f"{type(exc).__name__}: {exc}"
    return batch


@settings(max_examples=400, deadline=None)
@given(records=RECORDS)
def test_for_any_records_another_protocol_read_the_answer_is_the_careful_paths(
    records: list[dict[str, Any]],
) -> None:
    """The records of a V2 request or an MLflow body (not JSON text): the compiled validator's answer,
    when it has one, is the careful path's, value types included."""
    quick, slow = _answer(SCHEMA.validate, records), _answer(SCHEMA.validate_carefully, records)
    assert quick == slow
    assert _typed(quick) == _typed(slow)


NUMBERS = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**60), 2**60))
TYPED = {
    "Sleep Hours": NUMBERS,
    "Team Size": NUMBERS,
    "Gender": st.text(max_size=5),
    "Age": st.integers(-(2**63), 2**63 - 1),
    "Remote": st.booleans(),
    "Designation": NUMBERS,
}
"""Values of each column's own type, so that whole batches pass (random values rarely all do)."""


def _columns(count: int) -> st.SearchStrategy[dict[str, list[Any]]]:
    def column(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
        return st.lists(values, min_size=count, max_size=count)

    typed = st.fixed_dictionaries(
        {"Designation": column(TYPED["Designation"])},
        optional={
            name: column(st.one_of(st.none(), values))
            for name, values in TYPED.items()
            if name != "Designation"
        },
    )
    return st.one_of(typed, st.dictionaries(NAMES, column(VALUES), max_size=7))


COLUMNS = st.integers(min_value=1, max_value=4).flatmap(_columns)


@settings(max_examples=400, deadline=None)
@given(columns=COLUMNS)
def test_for_any_columns_the_answer_is_the_careful_paths_on_the_same_records(
    columns: dict[str, list[Any]],
) -> None:
    """Columns (a V2 request's tensors, MLflow's ``dataframe_split``) checked a column at a time: the
    same batch as the careful path's on the records they make, value types included, or its very
    error naming record and field."""
    rows = Rows(columns=columns) if columns else Rows(records=[{}])
    quick = _answer(SCHEMA.validate_columns, rows)  # type: ignore[arg-type]
    slow = _answer(SCHEMA.validate_carefully, rows.records)
    assert quick == slow
    assert _typed(quick) == _typed(slow)


@pytest.mark.parametrize(
    "values",
    [[1.5, 3e38], [1.5, 4e38], [-4e38, 0.0], [1e308, 1e308], [2, None], [float("nan"), 1.0], [2**1100]],
)
def test_a_float32_column_answers_as_the_careful_path_at_and_beyond_its_range(values: list[Any]) -> None:
    schema = InputSchema([Column("x", "float", required=False)])
    rows = Rows(columns={"x": values})
    assert _answer(schema.validate_columns, rows) == _answer(schema.validate_carefully, rows.records)  # type: ignore[arg-type]


def test_valid_columns_stay_columns_under_the_signature_names() -> None:
    rows = Rows(columns={"sleep_hours": [6.5, None], "Designation": [2, 3], "Gender": ["F", "M"]})
    batch = SCHEMA.validate_columns(rows)
    assert batch.rows.holds_columns
    assert not batch.rows.holds_records
    assert batch.rows.columns == {"Sleep Hours": [6.5, None], "Designation": [2.0, 3.0], "Gender": ["F", "M"]}
    assert batch.missing == {"Sleep Hours": 1, "Team Size": 2, "Age": 2, "Remote": 2}


@pytest.mark.parametrize("age", [2**63, -(2**64)])
def test_a_long_beyond_64_bits_is_refused_by_both_paths(age: int) -> None:
    body = json.dumps({"data": [COMPLETE | {"Age": age}]}).encode()
    assert either(body) == careful(body)
    assert "a long can hold" in str(either(body))
    assert "a long can hold" in str(_answer(SCHEMA.validate, [COMPLETE | {"Age": age}]))


def test_a_required_feature_with_a_bad_value_is_named_once_for_its_value_not_as_missing() -> None:
    with pytest.raises(InvalidRequest) as raised:
        SCHEMA.validate([{"Designation": "two"}, {"Gender": "F"}])
    assert [(p.record, p.field, p.message) for p in raised.value.problems] == [
        (0, "Designation", "record 0, field 'Designation': expected a number, got str 'two'"),
        (1, "Designation", "record 1: required feature 'Designation' is missing"),
    ]
