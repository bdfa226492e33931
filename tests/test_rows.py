"""A batch of records held as records or as columns: either form gives the same records."""

from __future__ import annotations

from typing import Any

import pytest

from streamml.rows import Rows

RECORDS: list[dict[str, Any]] = [{"a": 1.0, "b": "x"}, {"b": "y"}, {"a": 3.0}]
COLUMNS: dict[str, list[Any]] = {"a": [1.0, None, 3.0], "b": ["x", "y", None]}


def test_records_gathered_into_columns_have_none_where_a_record_lacks_the_feature() -> None:
    assert Rows(records=RECORDS).columns == COLUMNS


def test_columns_spread_into_records_leave_out_the_features_that_are_none() -> None:
    assert Rows(columns=COLUMNS).records == RECORDS


def test_a_feature_no_record_has_is_a_column_of_none() -> None:
    assert Rows(columns=COLUMNS).column("c") == [None, None, None]


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match=r"different lengths: \[1, 2\]"):
        Rows(columns={"a": [1.0], "b": [1.0, 2.0]})


def test_parts_of_records_concatenate_as_records_in_order() -> None:
    joined = Rows.concat([Rows(records=RECORDS[:1]), Rows(records=RECORDS[1:])])
    assert joined.holds_records
    assert not joined.holds_columns
    assert joined.records == RECORDS


def test_a_part_of_columns_makes_the_concatenation_columns_with_gaps_where_a_part_lacks_a_feature() -> None:
    joined = Rows.concat([Rows(columns={"a": [1.0]}), Rows(records=[{"b": "y"}, {"a": 3.0}])])
    assert joined.holds_columns
    assert not joined.holds_records
    assert joined.columns == {"a": [1.0, None, 3.0], "b": [None, "y", None]}
    assert len(joined) == 3


def test_picked_records_come_from_the_columns_without_building_the_others() -> None:
    rows = Rows(columns=COLUMNS)
    assert rows.pick([2, 0]) == [RECORDS[2], RECORDS[0]]
    assert not rows.holds_records


def test_the_same_records_in_either_form_are_equal() -> None:
    assert Rows(records=RECORDS) == Rows(columns=COLUMNS)
    assert Rows(records=RECORDS) != Rows(records=RECORDS[:2])


def test_as_arrow_a_record_lacking_a_feature_is_null_and_either_form_gives_the_same_table() -> None:
    import pyarrow as pa

    schema = pa.schema([("a", pa.float64()), ("b", pa.string()), ("n", pa.int64())])
    records: list[dict[str, Any]] = [{"a": 1, "b": "x", "n": 3}, {"b": "y"}]
    table = Rows(records=records).arrow(schema)
    assert table.schema == schema
    assert table.to_pylist() == [{"a": 1.0, "b": "x", "n": 3}, {"a": None, "b": "y", "n": None}]
    as_columns = Rows(columns=Rows(records=records).columns).arrow(schema)
    assert as_columns.equals(table)


def test_the_arrow_table_is_built_once_per_schema() -> None:
    import pyarrow as pa

    rows = Rows(records=[{"a": 1.5}])
    doubles, floats = pa.schema([("a", pa.float64())]), pa.schema([("a", pa.float32())])
    first = rows.arrow(doubles)
    assert rows.arrow(pa.schema([("a", pa.float64())])) is first  # an equal schema: the same table
    assert rows.arrow(floats).schema == floats


def test_a_value_its_arrow_type_cannot_hold_is_refused() -> None:
    import pyarrow as pa

    with pytest.raises(pa.ArrowInvalid):
        Rows(records=[{"n": "seven"}]).arrow(pa.schema([("n", pa.int64())]))
