"""The request entry's layout: what the gateway writes is what a worker reads, and a worker refuses a
format it does not know instead of guessing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streamml.errors import FailureReason, InvalidEntry
from streamml.output_kinds import PROBA
from streamml.rows import Rows
from streamml.stream.entry import decode_entry, encode_entry


def as_read(fields: dict[str, str | bytes]) -> dict[bytes, bytes]:
    """Fields as redis-py returns them from XREADGROUP."""
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}


def test_an_encoded_request_decodes_to_the_same_request() -> None:
    records: list[dict[str, Any]] = [{"Designation": 2.0}, {"Gender": "Female"}]
    entry = decode_entry(
        "5-0", as_read(encode_entry("r1", "svm", Rows(records=records), reply=True, owner="team-a"))
    )
    assert (entry.stream_id, entry.request_id, entry.route, entry.records) == ("5-0", "r1", "svm", records)
    assert entry.reply is True
    assert entry.owner == "team-a"
    assert entry.accepted_ms > 0


def test_an_unknown_format_version_is_refused_as_unsupported() -> None:
    fields = as_read(encode_entry("r1", "svm", Rows(records=[{"Designation": 2.0}]), reply=False, owner=""))
    fields[b"v"] = b"99"
    with pytest.raises(InvalidEntry, match="version '99'") as refused:
        decode_entry("5-0", fields)
    assert refused.value.reason is FailureReason.UNSUPPORTED_FORMAT
    assert FailureReason.UNSUPPORTED_FORMAT.permanent


@pytest.mark.parametrize(("missing", "words"), [("v", "'v'"), ("records", "'records'"), ("route", "'route'")])
def test_an_entry_missing_a_field_is_an_invalid_payload(missing: str, words: str) -> None:
    fields = as_read(encode_entry("r1", "svm", Rows(records=[{"Designation": 2.0}]), reply=False, owner=""))
    del fields[missing.encode()]
    with pytest.raises(InvalidEntry, match=words) as refused:
        decode_entry("5-0", fields)
    assert refused.value.reason is FailureReason.INVALID_PAYLOAD


def test_a_request_of_columns_is_written_as_columns_and_reads_back_as_the_same_records() -> None:
    columns: dict[str, list[Any]] = {"Designation": [2.0, None, 4.0], "Gender": ["Female", "Male", None]}
    fields = as_read(encode_entry("r1", "svm", Rows(columns=columns), reply=False, owner="", output=PROBA))
    assert fields[b"v"] == b"3"
    assert b"records" not in fields  # each feature's name once, not once per record
    entry = decode_entry("5-0", fields)
    assert entry.rows.holds_columns
    assert not entry.rows.holds_records
    assert entry.rows.columns == columns
    assert entry.records == [
        {"Designation": 2.0, "Gender": "Female"},
        {"Gender": "Male"},
        {"Designation": 4.0},
    ]
    assert entry.output == PROBA


def test_a_request_of_records_is_written_as_records_readable_by_a_worker_of_an_earlier_release() -> None:
    fields = as_read(encode_entry("r1", "svm", Rows(records=[{"Designation": 2.0}]), reply=False, owner=""))
    assert (fields[b"v"], orjson.loads(fields[b"records"])) == (b"1", [{"Designation": 2.0}])


@pytest.mark.parametrize(
    ("columns", "rows", "words"),
    [
        (b'[{"a": 1}]', b"1", "JSON object of feature"),
        (b'{"a": [1, 2], "b": [1]}', b"2", "does not hold 2 values for every feature"),
        (b'{"a": [1, 2]}', b"3", "does not hold 3 values"),
        (b'{"a": [1, 2]}', b"two", "unreadable entry"),
    ],
)
def test_an_entry_of_columns_that_do_not_make_its_records_is_an_invalid_payload(
    columns: bytes, rows: bytes, words: str
) -> None:
    fields = {b"v": b"3", b"request_id": b"r1", b"route": b"svm", b"columns": columns, b"rows": rows}
    with pytest.raises(InvalidEntry, match=words) as refused:
        decode_entry("5-0", fields)
    assert refused.value.reason is FailureReason.INVALID_PAYLOAD
