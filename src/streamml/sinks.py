"""Where predictions go: a CSV file, the Redis result a client fetches, and a capped results stream.

Every sink tolerates re-delivery (at-least-once): the Redis result is a plain SET of the same
document, and CSV rows carry ``stream_id`` and ``record_index`` so duplicates can be removed.
"""

from __future__ import annotations

import csv
import fcntl
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio.client import Pipeline

from streamml import keys
from streamml.broker import Entry
from streamml.settings import StreamSettings

CSV_COLUMNS = [
    "timestamp",
    "request_id",
    "stream_id",
    "record_index",
    "model_route",
    "model_name",
    "model_version",
    "prediction",
    "latency_ms",
    "features",
]


@dataclass(frozen=True)
class RequestResult:
    """The predictions for one request entry, stamped with the model version that made them."""

    entry: Entry
    model_name: str
    model_version: str
    labels: list[str]
    predicted_ms: float
    """Epoch ms when the predict call returned."""
    predict_ms: float
    """Duration of the (batched) predict call this request was part of."""

    @property
    def latency_ms(self) -> float:
        """From gateway acceptance to prediction (the CSV's latency: a row cannot stamp its own write)."""
        return max(self.predicted_ms - self.entry.accepted_ms, 0.0)

    def written_latency_ms(self, written_ms: float) -> float:
        """From gateway acceptance to the predictions being written (CSV done, Redis write sent)."""
        return max(written_ms - self.entry.accepted_ms, 0.0)

    def document(self, written_ms: float) -> dict[str, Any]:
        owner = {"owner": self.entry.owner} if self.entry.owner else {}
        return owner | {
            "status": "done",
            "request_id": self.entry.request_id,
            "stream_id": self.entry.stream_id,
            "model": {
                "route": self.entry.route,
                "name": self.model_name,
                "version": self.model_version,
            },
            "records": len(self.labels),
            "predictions": self.labels,
            "timings": {
                "accepted_at": _iso(self.entry.accepted_ms),
                "predicted_at": _iso(self.predicted_ms),
                "written_at": _iso(written_ms),
                "latency_ms": round(self.written_latency_ms(written_ms), 3),
                "batch_predict_ms": round(self.predict_ms, 3),
            },
        }


class CsvSink:
    """Appends one row per record. Several worker processes may share the file: each batch is one
    ``write`` under an exclusive ``flock``, so rows never interleave and the header is written once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, results: Sequence[RequestResult]) -> int:
        # Formatted by hand rather than with csv.writer: a row differs from its request's other rows
        # only in index, label and features, and writerow per record was most of a worker's time.
        lines: list[str] = []
        for result in results:
            entry = result.entry
            head = _csv_fields(_iso(result.predicted_ms), entry.request_id, entry.stream_id)
            model = _csv_fields(entry.route, result.model_name, result.model_version)
            latency = f"{result.latency_ms:.3f}"
            for index, (label, record) in enumerate(zip(result.labels, entry.records, strict=True)):
                features = orjson.dumps(record).decode()
                if record:  # a non-empty JSON object always holds quotes, so always needs quoting
                    features = '"' + features.replace('"', '""') + '"'
                lines.append(f"{head},{index},{model},{_csv_field(label)},{latency},{features}\n")
        rows = len(lines)
        data = "".join(lines).encode()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if os.fstat(self._fd).st_size == 0:
                data = (",".join(CSV_COLUMNS) + "\n").encode() + data
            os.write(self._fd, data)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return rows

    def close(self) -> None:
        os.close(self._fd)


def queue_redis_writes(
    pipe: Pipeline, streams: StreamSettings, results: Sequence[RequestResult], written_ms: float
) -> None:
    """Add the result documents, results-stream entries and reply notices to a pipeline.
    ``written_ms`` is when the batch was handed to Redis, after the CSV rows were written; latency in
    the result and the results stream runs from gateway acceptance to then."""
    for result in results:
        entry = result.entry
        document = orjson.dumps(result.document(written_ms))
        pipe.set(keys.result_key(streams.stream, entry.request_id), document, ex=streams.result_ttl_s)
        pipe.xadd(
            streams.results_stream,
            {
                "request_id": entry.request_id,
                "stream_id": entry.stream_id,
                "model_route": entry.route,
                "model_name": result.model_name,
                "model_version": result.model_version,
                "predictions": orjson.dumps(result.labels),
                "latency_ms": f"{result.written_latency_ms(written_ms):.3f}",
            },
            maxlen=streams.results_maxlen,
            approximate=True,
        )
        if entry.reply:
            pipe.publish(keys.replies_channel(streams.stream), entry.request_id)


_CSV_SPECIAL = frozenset(',"\r\n')


def _csv_field(text: str) -> str:
    """One field as csv.writer's default dialect writes it: quoted only when it has to be."""
    if _CSV_SPECIAL.isdisjoint(text):
        return text
    return '"' + text.replace('"', '""') + '"'


def _csv_fields(*texts: str) -> str:
    return ",".join(_csv_field(text) for text in texts)


def _iso(epoch_ms: float) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000.0, tz=UTC).isoformat(timespec="milliseconds")


def dedup_csv(source: Path, target: Path) -> tuple[int, int]:
    """Copy the predictions CSV keeping the first row of each (stream_id, record_index).

    Duplicates come only from at-least-once re-delivery: a worker that wrote its CSV rows and stopped
    before its XACK, whose entry another worker then claimed. Returns (rows kept, rows dropped)."""
    seen: set[tuple[str, str]] = set()
    kept = dropped = 0
    with source.open(newline="") as reader_file, target.open("w", newline="") as writer_file:
        reader = csv.DictReader(reader_file)
        writer = csv.DictWriter(writer_file, fieldnames=reader.fieldnames or CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in reader:
            key = (row["stream_id"], row["record_index"])
            if key in seen:
                dropped += 1
                continue
            seen.add(key)
            writer.writerow(row)
            kept += 1
    return kept, dropped
