"""The request entry's layout: what the gateway writes is what a worker reads, and a worker refuses a
format it does not know instead of guessing."""

from __future__ import annotations

from typing import Any

import pytest

from streamml.errors import FailureReason, InvalidEntry
from streamml.stream.entry import decode_entry, encode_entry


def as_read(fields: dict[str, str | bytes]) -> dict[bytes, bytes]:
    """Fields as redis-py returns them from XREADGROUP."""
    return {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}


def test_an_encoded_request_decodes_to_the_same_request() -> None:
    records: list[dict[str, Any]] = [{"Designation": 2.0}, {"Gender": "Female"}]
    entry = decode_entry("5-0", as_read(encode_entry("r1", "svm", records, reply=True, owner="team-a")))
    assert (entry.stream_id, entry.request_id, entry.route, entry.records) == ("5-0", "r1", "svm", records)
    assert entry.reply is True
    assert entry.owner == "team-a"
    assert entry.accepted_ms > 0


def test_an_unknown_format_version_is_refused_as_unsupported() -> None:
    fields = as_read(encode_entry("r1", "svm", [{"Designation": 2.0}], reply=False, owner=""))
    fields[b"v"] = b"99"
    with pytest.raises(InvalidEntry, match="version '99'") as refused:
        decode_entry("5-0", fields)
    assert refused.value.reason is FailureReason.UNSUPPORTED_FORMAT
    assert FailureReason.UNSUPPORTED_FORMAT.permanent


@pytest.mark.parametrize(("missing", "words"), [("v", "'v'"), ("records", "'records'"), ("route", "'route'")])
def test_an_entry_missing_a_field_is_an_invalid_payload(missing: str, words: str) -> None:
    fields = as_read(encode_entry("r1", "svm", [{"Designation": 2.0}], reply=False, owner=""))
    del fields[missing.encode()]
    with pytest.raises(InvalidEntry, match=words) as refused:
        decode_entry("5-0", fields)
    assert refused.value.reason is FailureReason.INVALID_PAYLOAD
