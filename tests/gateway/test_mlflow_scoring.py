"""MLflow's scoring-protocol bodies become the records ``POST /predict`` takes: every format
``mlflow models serve`` documents gives the same records, and what is wrong is named."""

from __future__ import annotations

from typing import Any

import orjson
import pandas as pd
import pytest
from mlflow.utils.proto_json_utils import dump_input_data

from streamml.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from streamml.gateway.mlflow_scoring import read_invocation
from streamml.rows import Rows
from streamml.settings import GatewaySettings

LIMITS = GatewaySettings(max_records=10)
RECORDS = [
    {"Designation": 2.0, "Gender": "Female", "Sleep Hours": 6.5},
    {"Designation": 3.0, "Gender": "Male", "Sleep Hours": 7.0},
]
FRAME = pd.DataFrame(RECORDS)


def read(body: Any, content_type: str = "application/json") -> list[Any]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    records = read_invocation(raw, content_type, LIMITS).records
    return records.records if isinstance(records, Rows) else records


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_records": RECORDS},
        {"dataframe_split": {"columns": list(RECORDS[0]), "data": [list(r.values()) for r in RECORDS]}},
        {
            "dataframe_split": {
                "index": [5, 6],
                "columns": list(RECORDS[0]),
                "data": [list(r.values()) for r in RECORDS],
            }
        },
        {"instances": RECORDS},
        {"inputs": RECORDS},
        {"inputs": {name: [r[name] for r in RECORDS] for name in RECORDS[0]}},
        {"dataframe_records": RECORDS, "params": {"threshold": 0.5}},
        {"dataframe_records": RECORDS, "something_mlflow_ignores": 1},
    ],
    ids=[
        "records",
        "split",
        "split+index",
        "instances",
        "inputs-records",
        "inputs-columns",
        "params",
        "extra",
    ],
)
def test_every_json_format_gives_the_same_records(body: dict[str, Any]) -> None:
    assert read(body) == RECORDS


def test_the_body_mlflows_own_client_sends_for_a_dataframe_is_read() -> None:
    """``ScoringServerClient.invoke(df)`` posts ``dump_input_data(df)``: MLflow's own encoder."""
    assert read(dump_input_data(FRAME).encode()) == RECORDS


def test_csv_with_a_header_gives_the_same_records_and_blank_or_na_fields_are_missing() -> None:
    csv = FRAME.to_csv(index=False).encode()
    assert read(csv, "text/csv") == RECORDS
    holes = b"Designation,Gender,Sleep Hours\n2,,NaN\n"
    assert read(holes, "text/csv; charset=utf-8") == [{"Designation": 2}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"records": RECORDS}, "body"),
        ({"dataframe_records": RECORDS, "instances": RECORDS}, "body"),
        ({"dataframe_split": {"data": [[1]]}}, "dataframe_split.columns"),
        ({"dataframe_split": {"columns": ["a", "b"], "data": [[1]]}}, "dataframe_split.data"),
        ({"inputs": {"a": [1, 2], "b": [1]}}, "inputs"),
        ({"dataframe_records": RECORDS, "params": [1]}, "params"),
        ({"instances": {"a": 1}}, "instances"),
        ([RECORDS], "body"),
    ],
)
def test_a_malformed_body_is_a_422_naming_the_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        read(body)
    assert refused.value.problems[0].field == field


def test_a_short_split_row_names_its_record() -> None:
    body = {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3]]}}
    with pytest.raises(InvalidRequest) as refused:
        read(body)
    assert refused.value.problems[0].record == 1


def test_other_content_types_and_charsets_are_415() -> None:
    with pytest.raises(UnsupportedMediaType, match="application/json or text/csv"):
        read({"dataframe_records": RECORDS}, "application/x-www-form-urlencoded")
    with pytest.raises(UnsupportedMediaType, match="UTF-8"):
        read({"dataframe_records": RECORDS}, "application/json; charset=latin-1")


def test_the_record_limit_holds_in_every_format() -> None:
    many = [RECORDS[0]] * 11
    with pytest.raises(PayloadTooLarge):
        read({"inputs": {k: [v] * 11 for k, v in RECORDS[0].items()}})
    with pytest.raises(PayloadTooLarge):
        read(pd.DataFrame(many).to_csv(index=False).encode(), "text/csv")
