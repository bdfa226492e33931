"""The request entry: what the gateway writes to the stream and the worker reads back.

One entry per accepted request (it may carry many records), with fields:

    v            message format version; a worker refuses a version it does not know
    request_id   the id the client polls with
    route        model route, e.g. "svm"
    records      JSON list of records, keys already normalised to the signature's names (versions 1, 2)
    columns      JSON object: feature -> one value per record, null where missing (version 3)
    rows         how many records the columns hold (version 3)
    accepted_ms  gateway acceptance time, epoch milliseconds (latency is measured from here)
    reply        "1" when a client waits synchronously (POST /predict)
    owner        name of the API key that sent it (only with keys); only that key may read the result
    out          "proba" when the request asks for class probabilities (format version 2 or 3)

A request that came as records is written as records, one that came as columns (Open Inference Protocol
tensors, MLflow's ``dataframe_split``) as columns: neither is turned into the other at the gateway, and
a column's feature name is written once rather than once per record. An entry of records that asks for
nothing but predictions is version 1, so a worker of an earlier release still reads it; one that asks
for probabilities is version 2, and one of columns is version 3, which such a worker dead-letters as
``unsupported_format`` instead of misreading it. Only this module writes or reads that layout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from streamml.errors import FailureReason, InvalidEntry
from streamml.output_kinds import OUTPUTS, PREDICT
from streamml.rows import Rows

FORMAT_VERSION = "1"
"""Version of the entry layout (field ``v``); bumped on incompatible changes."""
OUTPUT_FORMAT_VERSION = "2"
"""The version of an entry of records that asks for another output than the predictions (``out``)."""
COLUMNS_FORMAT_VERSION = "3"
"""The version of an entry whose records are written as columns."""
KNOWN_VERSIONS = frozenset({FORMAT_VERSION, OUTPUT_FORMAT_VERSION, COLUMNS_FORMAT_VERSION})


@dataclass(frozen=True)
class Entry:
    """One request read from the stream."""

    stream_id: str
    request_id: str
    route: str
    rows: Rows
    accepted_ms: float
    reply: bool
    owner: str = ""
    """Name of the API key that sent the request ("" without keys); only it may read the result."""
    output: str = PREDICT
    """What the request asks of its model: ``predict`` (its predictions) or ``proba``."""

    @property
    def records(self) -> list[dict[str, Any]]:
        """The request's records, one dict each (built once from its columns if it came as columns)."""
        return self.rows.records


def now_ms() -> float:
    return time.time() * 1000.0


def encode_entry(
    request_id: str,
    route: str,
    rows: Rows,
    *,
    reply: bool,
    owner: str,
    output: str = PREDICT,
) -> dict[str, str | bytes]:
    """The stream fields of a request accepted now."""
    fields: dict[str, str | bytes]
    if rows.holds_records:
        fields = {
            "v": FORMAT_VERSION if output == PREDICT else OUTPUT_FORMAT_VERSION,
            "request_id": request_id,
            "route": route,
            "records": orjson.dumps(rows.records),
        }
    else:
        fields = {
            "v": COLUMNS_FORMAT_VERSION,
            "request_id": request_id,
            "route": route,
            "columns": orjson.dumps(rows.columns, option=orjson.OPT_SERIALIZE_NUMPY),
            "rows": str(len(rows)),
        }
    fields["accepted_ms"] = f"{now_ms():.3f}"
    if reply:
        fields["reply"] = "1"
    if owner:
        fields["owner"] = owner
    if output != PREDICT:
        fields["out"] = output
    return fields


def decode_entry(stream_id: str, fields: dict[bytes, bytes]) -> Entry:
    """The request in an entry, or :class:`InvalidEntry` saying what is wrong with it."""
    version = fields.get(b"v")
    if version is None:
        raise InvalidEntry("missing field 'v' (the entry format version): not written by a streamml gateway")
    if version.decode(errors="replace") not in KNOWN_VERSIONS:
        raise InvalidEntry(
            f"entry format version {version.decode(errors='replace')!r} is not one this worker reads "
            f"({', '.join(sorted(KNOWN_VERSIONS))}); upgrade the worker, then replay the dead letters",
            FailureReason.UNSUPPORTED_FORMAT,
        )
    try:
        rows = _columns(fields) if version == COLUMNS_FORMAT_VERSION.encode() else _records(fields)
        output = fields.get(b"out", PREDICT.encode()).decode()
        if output not in OUTPUTS:
            raise InvalidEntry(f"unknown output {output!r} (field 'out')")
        return Entry(
            stream_id=stream_id,
            request_id=fields[b"request_id"].decode(),
            route=fields[b"route"].decode(),
            rows=rows,
            accepted_ms=float(fields.get(b"accepted_ms", b"0")),
            reply=fields.get(b"reply") == b"1",
            owner=fields.get(b"owner", b"").decode(),
            output=output,
        )
    except KeyError as exc:
        raise InvalidEntry(f"missing field {exc.args[0]!r}") from exc
    except (orjson.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidEntry(f"unreadable entry: {exc}") from exc


def _records(fields: dict[bytes, bytes]) -> Rows:
    records = orjson.loads(fields[b"records"])
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise InvalidEntry("'records' is not a non-empty JSON list of objects")
    return Rows(records=records)


def _columns(fields: dict[bytes, bytes]) -> Rows:
    columns, count = orjson.loads(fields[b"columns"]), int(fields[b"rows"])
    if not isinstance(columns, dict) or not all(isinstance(v, list) for v in columns.values()):
        raise InvalidEntry("'columns' is not a JSON object of feature: list of values")
    if count < 1 or any(len(values) != count for values in columns.values()):
        raise InvalidEntry(f"'columns' does not hold {count} values for every feature ('rows')")
    return Rows(columns=columns) if columns else Rows(records=[{} for _ in range(count)])
