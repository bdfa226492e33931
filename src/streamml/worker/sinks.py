"""Where predictions go: the :class:`Sink` protocol, and the two sinks every worker has — a CSV file
(:class:`CsvSink`), and in Redis the result a client fetches, the capped results stream and the reply
notice (:class:`RedisSink`).

Every sink tolerates re-delivery (at-least-once): the Redis result is a plain SET of the same
document, and CSV rows carry ``stream_id`` and ``record_index`` so duplicates can be removed.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import logging
import os
import time
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Protocol

import orjson
from redis.asyncio.client import Pipeline

from streamml import keys
from streamml.models.dispatch import Scored, ShadowRun
from streamml.rollout.shadow_store import stage_shadow
from streamml.rows import Rows
from streamml.settings import StreamSettings
from streamml.stream.entry import Entry
from streamml.stream.topology import Partition, StreamTopology
from streamml.worker.result_writes import ResultWrites

log = logging.getLogger(__name__)

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
    "challenger_version",
    "challenger_prediction",
]
"""The challenger columns are empty for records no challenger shadowed; a canary answer is stamped
with the challenger's version in ``model_version`` like any other."""


Result = Scored[Entry]
"""A request entry's predictions, stamped with the model version that made them."""


@dataclass(frozen=True)
class VersionTally:
    """What one model version predicted for one route in a batch."""

    requests: int
    records: int
    predict_ms: float
    """Its predict call's duration (one call per version and batch)."""


@dataclass(frozen=True)
class FailedRequest:
    """A request of the batch that was dead-lettered: its client is told so at once."""

    request_id: str
    stream_id: str
    route: str
    owner: str
    reply: bool
    reason: str
    message: str
    accepted_ms: float = 0.0
    inputs: Rows | None = None
    """Its records; None when the entry could not be read as a request."""
    payload: str | None = None
    """The entry's records as they were written, when they could not be read."""

    def document(self, failed_ms: float) -> dict[str, Any]:
        """What ``GET /predictions/{id}`` returns from now on (never ``pending`` again)."""
        owner = {"owner": self.owner} if self.owner else {}
        return owner | {
            "status": "failed",
            "request_id": self.request_id,
            "stream_id": self.stream_id,
            "model": {"route": self.route},
            "error": {"code": self.reason, "message": self.message[:ERROR_MESSAGE_CHARS]},
            "timings": {"failed_at": _iso(failed_ms)},
        }


ERROR_MESSAGE_CHARS = 500


class WrittenBatch:
    """A batch's results as they are written: ``written_ms`` is when they are handed to Redis (latency
    runs from acceptance to then). The tallies are counted once, for every sink and the metrics."""

    def __init__(
        self,
        results: Sequence[Result],
        written_ms: float,
        shadows: Sequence[ShadowRun],
        partition: Partition,
        failed: Sequence[FailedRequest] = (),
    ) -> None:
        self.results = results
        self.written_ms = written_ms
        self.shadows = shadows
        self.partition = partition
        """The request stream partition the batch was read from (its Redis writes share its tag)."""
        self.failed = failed
        """Its dead-lettered requests (whose id could be read)."""

    @cached_property
    def records(self) -> int:
        return sum(len(r.labels) for r in self.results)

    @cached_property
    def by_version(self) -> dict[tuple[str, str, str], VersionTally]:
        """(route, model, version) -> requests, records, predict time."""
        requests: Tally[tuple[str, str, str]] = Tally()
        records: Tally[tuple[str, str, str]] = Tally()
        predict_ms: dict[tuple[str, str, str], float] = {}
        for result in self.results:
            key = (result.request.route, result.model.name, result.model.version)
            requests[key] += 1
            records[key] += len(result.labels)
            predict_ms[key] = result.predict_ms
        return {key: VersionTally(requests[key], records[key], predict_ms[key]) for key in requests}

    @cached_property
    def classes(self) -> dict[tuple[str, str], int]:
        """(route, label) -> records predicted with that label (class labels only: a regressor's
        numbers are not counted by value)."""
        labels: dict[str, list[str]] = {}
        for result in self.results:
            if result.categorical:
                labels.setdefault(result.request.route, []).extend(map(str, result.labels))
        return {(route, label): n for route, found in labels.items() for label, n in Tally(found).items()}


class Sink(Protocol):
    """Where predictions go. Adding a sink is one class here and one line where the worker is built.

    Both hooks run before the entries are acknowledged, so a sink never misses a prediction (and may
    see one twice after a re-delivery: sinks must tolerate that)."""

    def write(self, results: Sequence[Result], failed: Sequence[FailedRequest] = ()) -> None:
        """Write outside Redis (a file, another system): the predictions, and the requests dead-lettered
        now. Blocks; large batches run in a thread."""

    def stage(self, tx: Pipeline, batch: WrittenBatch) -> None:
        """Add Redis writes to the transaction that also acknowledges the entries."""

    def close(self) -> None: ...


def predict_latency_ms(result: Result) -> float:
    """From gateway acceptance to the end of the predict call (the CSV's: a row cannot stamp its own
    write). A clock step between gateway and worker hosts cannot make it negative."""
    return max(result.predicted_ms - result.request.accepted_ms, 0.0)


def written_latency_ms(result: Result, written_ms: float) -> float:
    """From gateway acceptance to the predictions being written (CSV done, Redis write sent)."""
    return max(written_ms - result.request.accepted_ms, 0.0)


def result_document(result: Result, written_ms: float) -> dict[str, Any]:
    """What ``GET /predictions/{id}`` returns once the request is done: the predictions with the model's
    types; ``columns`` when the model answered a dict of arrays, ``classes`` with probabilities."""
    entry = result.request
    owner = {"owner": entry.owner} if entry.owner else {}
    layout: dict[str, Any] = {}
    if result.columns is not None:
        layout["columns"] = result.columns
    if result.classes is not None:
        layout["classes"] = result.classes
    return (
        owner
        | layout
        | {
            "status": "done",
            "request_id": entry.request_id,
            "stream_id": entry.stream_id,
            "model": {
                "route": entry.route,
                "name": result.model.name,
                "version": result.model.version,
                "canary": result.canary,
            },
            "records": len(result.labels),
            "output": entry.output,
            "predictions": result.labels,
            "timings": {
                "accepted_at": _iso(entry.accepted_ms),
                "predicted_at": _iso(result.predicted_ms),
                "written_at": _iso(written_ms),
                "latency_ms": round(written_latency_ms(result, written_ms), 3),
                "batch_predict_ms": round(result.predict_ms, 3),
            },
        }
    )


class CsvSink:
    """Appends one row per record. Several worker processes may share the file: each batch is one
    ``write`` under an exclusive ``flock``, so rows never interleave and the header is written once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        _set_aside_other_layout(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, results: Sequence[Result], failed: Sequence[FailedRequest] = ()) -> None:
        # Failed requests have no row: the file's columns are the seed's, for predictions only.
        # Formatted by hand rather than with csv.writer: a row differs from its request's other rows
        # only in index, label and features, and writerow per record was most of a worker's time.
        lines: list[str] = []
        label_field = _CsvLabels()
        for result in results:
            entry = result.request
            head = _csv_fields(_iso(result.predicted_ms), entry.request_id, entry.stream_id)
            model = _csv_fields(entry.route, result.model.name, result.model.version)
            latency = f"{predict_latency_ms(result):.3f}"
            shadow = result.shadow
            challenger = shadow.model.version if shadow else ""
            for index, (label, features) in enumerate(
                zip(result.labels, map(orjson.dumps, entry.records), strict=True)
            ):
                # a non-empty JSON object always holds quotes, so always needs quoting
                quoted = '"' + features.decode().replace('"', '""') + '"' if len(features) > 2 else "{}"
                shadowed = f"{challenger},{label_field.cell(shadow.labels[index])}" if shadow else ","
                lines.append(
                    f"{head},{index},{model},{label_field.cell(label)},{latency},{quoted},{shadowed}\n"
                )
        data = "".join(lines).encode()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            if os.fstat(self._fd).st_size == 0:
                data = (",".join(CSV_COLUMNS) + "\n").encode() + data
            os.write(self._fd, data)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def stage(self, tx: Pipeline, batch: WrittenBatch) -> None:
        pass  # nothing in Redis

    def close(self) -> None:
        os.close(self._fd)


class RedisSink:
    """The result document a client fetches (``GET /predictions/{id}``, with the stream's TTL) and an
    entry in the capped results stream for downstream consumers; and the running totals of records
    predicted per route and per class (``keys.counter_keys``), all under the batch's partition's hash
    tag. Re-delivery rewrites the same document; the results stream may hold a request twice
    (``stream_id`` tells), and the totals count it twice."""

    def __init__(self, topology: StreamTopology, settings: StreamSettings) -> None:
        self.topology = topology
        self.result_ttl_s = settings.result_ttl_s
        self.results_maxlen = settings.results_maxlen

    def write(self, results: Sequence[Result], failed: Sequence[FailedRequest] = ()) -> None:
        pass  # everything goes in the acknowledging transaction

    def stage(self, tx: Pipeline, batch: WrittenBatch) -> None:
        part, written_ms = batch.partition, batch.written_ms
        counters = part.counters
        for (route, _, _), tally in batch.by_version.items():
            tx.hincrby(counters.predicted, route, tally.records)
        for (route, label), count in batch.classes.items():
            tx.hincrby(counters.classes, f"{route}{keys.CLASS_SEPARATOR}{label}", count)
        writes = ResultWrites(part.results, self.result_ttl_s, self.results_maxlen)
        for result in batch.results:
            entry = result.request
            fields: list[str | bytes] = [
                "request_id",
                entry.request_id,
                "stream_id",
                entry.stream_id,
                "model_route",
                entry.route,
                "model_name",
                result.model.name,
                "model_version",
                result.model.version,
                "predictions",
                orjson.dumps(result.labels),
                "latency_ms",
                f"{written_latency_ms(result, written_ms):.3f}",
            ]
            if result.canary:
                fields += ["canary", "1"]
            if result.shadow is not None:
                fields += ["challenger_version", result.shadow.model.version]
                fields += ["challenger_predictions", orjson.dumps(result.shadow.labels)]
            document = orjson.dumps(result_document(result, written_ms))
            writes.add(part.result_key(entry.request_id), document, fields)
        writes.stage(tx)
        for failed in batch.failed:
            document = orjson.dumps(failed.document(written_ms))
            tx.set(part.result_key(failed.request_id), document, ex=self.result_ttl_s)
        stage_shadow(tx, part, batch.shadows, batch.results)

    def close(self) -> None:
        pass


def _set_aside_other_layout(path: Path) -> None:
    """A file written with other columns (an older streamml) is renamed, not appended to: rows of two
    layouts in one file would be misread."""
    try:
        with path.open() as existing:
            header = existing.readline().rstrip("\r\n")
    except FileNotFoundError:
        return
    if header and header != ",".join(CSV_COLUMNS):
        aside = path.with_name(f"{path.stem}.{int(time.time())}{path.suffix}")
        with contextlib.suppress(FileNotFoundError):  # another worker moved it first
            path.rename(aside)
            log.warning("%s has other columns; moved it to %s and start a new file", path, aside)


_CSV_SPECIAL = frozenset(',"\r\n')


def _csv_field(text: str) -> str:
    """One field as csv.writer's default dialect writes it: quoted only when it has to be."""
    if _CSV_SPECIAL.isdisjoint(text):
        return text
    return '"' + text.replace('"', '""') + '"'


class _CsvLabels(dict[Any, str]):
    """A prediction -> its CSV field: a label as its text, computed once per label (a batch has a few
    labels and many rows); any other value (a number, a boolean, an object, a list) as its JSON."""

    def __missing__(self, key: Any) -> str:
        value = key[1] if isinstance(key, tuple) else key
        self[key] = field = _csv_field(value if isinstance(value, str) else orjson.dumps(value).decode())
        return field

    def cell(self, value: Any) -> str:
        if isinstance(value, str):
            return self[value]
        if isinstance(value, int | float):  # by type too: True, 1 and 1.0 are one dict key
            return self[(type(value), value)]
        return _csv_field(orjson.dumps(value).decode())


def _csv_fields(*texts: str) -> str:
    return ",".join(_csv_field(text) for text in texts)


@lru_cache(maxsize=4096)
def _iso(epoch_ms: float) -> str:
    # Cached: a batch's documents share their written and predicted times, and requests accepted in
    # the same millisecond their accepted time; formatting was a tenth of a one-record entry's cost.
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
