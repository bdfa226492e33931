"""The prediction log: every prediction with its inputs as typed columns, in Parquet files partitioned by
route and hour, for DuckDB, pandas, polars or any engine that reads Parquet.

Layout under the log's directory (Hive partitioning: engines read ``route``, ``date`` and ``hour`` from
the path as columns, and a file does not repeat them)::

    route=<route>/date=<YYYY-MM-DD>/hour=<HH>/<worker>-<first ms>-<n>.parquet   finished files
    failures/route=<route>/date=<YYYY-MM-DD>/hour=<HH>/<...>.parquet               dead-lettered requests
    .journal/<worker>-<first ms>-<n>.arrows                                        files being written

A request that is dead-lettered (it could not be predicted, or its entry could not be read) is logged
under ``failures/``: one row per record with its inputs as JSON, the error's code and message.

A worker appends each batch to a journal, an Arrow IPC stream: every batch is a complete message once
written, so a journal cut short by a crash still reads up to its last whole batch. A journal is sealed —
read, written as Parquet under a temporary name, renamed into place, then deleted, on a thread of its
own — when it reaches the size or age limit, when the hour or the columns change, and when the worker
stops. A journal no live worker holds (each holds an exclusive ``flock`` on its own) is sealed by the
next worker that starts, so a crash loses no batch that was written, and no reader ever meets a
half-written Parquet file. Finished files older than the retention are deleted.

Rows are at least once, like every sink's: a batch re-delivered after a crash appears twice, and
``request_id`` + ``record_index`` identify a row (``streamml log query`` offers the deduplicated view).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from redis.asyncio.client import Pipeline

from streamml.models.refs import ModelRef
from streamml.models.schema import InputSchema
from streamml.output_kinds import PROBA
from streamml.rows import Rows
from streamml.settings import PredictionLogSettings
from streamml.worker.sinks import FailedRequest, Result, WrittenBatch, predict_latency_ms

log = logging.getLogger(__name__)

JOURNAL_DIR = ".journal"
JOURNAL_SUFFIX = ".arrows"
TIMESTAMP = pa.timestamp("ms", tz="UTC")
FAILURES_DIR = "failures"
FAILURE_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("stream_id", pa.string()),
        ("record_index", pa.int32()),  # null when the entry's records could not be read
        ("route", pa.string()),
        ("error_code", pa.string()),
        ("error_message", pa.string()),
        ("accepted_at", TIMESTAMP),
        ("failed_at", TIMESTAMP),
        ("inputs_json", pa.string()),  # a record, or the unreadable payload as it was written
    ]
)
"""The columns of a dead-lettered request's rows."""

PREDICTED, FAILED = "predicted", "failed"

META = (
    "request_id",
    "stream_id",
    "record_index",
    "route",
    "model_name",
    "model_version",
    "output",
    "prediction",
    "probabilities",
    "classes",
    "canary",
    "challenger_version",
    "challenger_prediction",
    "accepted_at",
    "predicted_at",
    "latency_ms",
    "batch_predict_ms",
    "inputs_json",
)
"""The columns every row has, before the inputs; an input of the same name is written as
``input_<name>``. ``inputs_json`` holds the inputs of a model logged without a signature."""


def input_column(feature: str) -> str:
    """The log's column for a signature feature: its own name, unless a fixed column has it."""
    return f"input_{feature}" if feature in META else feature


class PredictionLog:
    """The Parquet prediction log, as a sink (see the module's docstring). ``schema_of`` gives the input
    schema of a loaded model version (None: logged without a signature)."""

    def __init__(
        self,
        settings: PredictionLogSettings,
        root: Path,
        worker: str,
        schema_of: Callable[[ModelRef], InputSchema | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.worker = worker.replace(os.sep, "_")
        self.schema_of = schema_of
        self.rotate_bytes = int(settings.rotate_mb * 1024 * 1024)
        self.rotate_s = settings.rotate_s
        self.retention_s = settings.retention_h * 3600.0
        self.clock = clock
        self._journals: dict[tuple[str, str, str], _Journal] = {}  # (kind, route, hour) -> its open journal
        self._made = 0
        self._expired_at = 0.0
        # Parquet encoding releases the GIL: sealing on a thread of its own, a batch never waits for
        # a journal of tens of megabytes to be written, and the encode overlaps the next batches.
        self._sealer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prediction-log-seal")
        (root / JOURNAL_DIR).mkdir(parents=True, exist_ok=True)
        if seal_orphans(root):
            log.info("prediction log: finished the journals of workers that stopped without finishing them")

    def write(self, results: Sequence[Result], failed: Sequence[FailedRequest] = ()) -> None:
        groups: dict[tuple[str, str, str], list[Result]] = {}
        for result in results:
            hour = _hour(result.predicted_ms)
            groups.setdefault((PREDICTED, result.request.route, hour), []).append(result)
        tables = {key: self._table(members) for key, members in groups.items()}
        if failed:
            failed_ms = self.clock() * 1000.0
            by_route: dict[str, list[FailedRequest]] = {}
            for request in failed:
                by_route.setdefault(request.route, []).append(request)
            for route, members in by_route.items():
                tables[(FAILED, route, _hour(failed_ms))] = failure_table(members, failed_ms)
        for key, table in tables.items():
            journal = self._journals.get(key)
            if journal is not None and journal.schema != table.schema:  # another version's columns
                self._seal(key)
                journal = None
            if journal is None:
                self._seal_other_hours(key)
                journal = self._journals[key] = self._open(table.schema)
            journal.append(table)
        now = self.clock()
        for key in [k for k, j in self._journals.items() if j.due(self.rotate_bytes, self.rotate_s, now)]:
            self._seal(key)
        if self.retention_s > 0 and now - self._expired_at > 60.0:
            self._expired_at = now
            expire(self.root, now - self.retention_s)
            expire(self.root / FAILURES_DIR, now - self.retention_s)

    def stage(self, tx: Pipeline, batch: WrittenBatch) -> None:
        pass  # nothing in Redis

    def close(self) -> None:
        """Seal every open journal and wait for every seal to finish."""
        for key in list(self._journals):
            self._seal(key)
        self._sealer.shutdown(wait=True)

    def _open(self, schema: pa.Schema) -> _Journal:
        self._made += 1
        stem = f"{self.worker}-{int(self.clock() * 1000)}-{self._made}"
        return _Journal.create(self.root / JOURNAL_DIR / f"{stem}{JOURNAL_SUFFIX}", schema, self.clock())

    def _seal(self, key: tuple[str, str, str]) -> None:
        """Finish the journal's stream now; write it as Parquet in the background."""
        journal = self._journals.pop(key)
        journal.close()
        self._sealer.submit(self._seal_closed, journal)

    def _seal_closed(self, journal: _Journal) -> None:
        try:
            seal_journal(self.root, journal.path)
        except Exception:  # the journal stays: the next worker to start seals it
            log.exception("prediction log: could not seal %s", journal.path)
        finally:
            journal.release()

    def _seal_other_hours(self, key: tuple[str, str, str]) -> None:
        """A route's journal of an earlier hour is finished once the next hour's rows arrive."""
        for other in [k for k in self._journals if k[:2] == key[:2] and k != key]:
            self._seal(other)

    def _table(self, results: Sequence[Result]) -> pa.Table:
        schema = self.schema_of(results[0].model)
        rows = joined_rows(results)
        lengths = [len(r.labels) for r in results]
        # One value per request, repeated for each of its records (one index array for every column).
        spread = None if len(rows) == len(results) else pa.array(np.repeat(np.arange(len(lengths)), lengths))

        def per_request(values: list[Any], arrow_type: pa.DataType) -> pa.Array:
            array = pa.array(values, type=arrow_type)
            return array if spread is None else array.take(spread)

        proba = [r.request.output == PROBA for r in results]
        count = len(rows)
        if any(proba):
            asked = list(zip(results, proba, strict=True))
            prediction = typed_values([v for r, p in asked for v in _or_nulls(r, not p)])
            probabilities = pa.array(
                [v for r, p in asked for v in _or_nulls(r, p)], type=pa.list_(pa.float64())
            )
            classes = per_request(
                [[str(c) for c in r.classes] if r.classes and p else None for r, p in asked],
                pa.list_(pa.string()),
            )
        else:  # the common case: no per-record lists of nulls to build
            prediction = typed_values(list(chain.from_iterable(r.labels for r in results)))
            probabilities = pa.nulls(count, pa.list_(pa.float64()))
            classes = pa.nulls(count, pa.list_(pa.string()))
        shadowed = any(r.shadow for r in results)
        columns: dict[str, pa.Array] = {
            "request_id": per_request([r.request.request_id for r in results], pa.string()),
            "stream_id": per_request([r.request.stream_id for r in results], pa.string()),
            "record_index": pa.array(_record_indexes(lengths), type=pa.int32()),
            "route": per_request([r.request.route for r in results], pa.string()),
            "model_name": per_request([r.model.name for r in results], pa.string()),
            "model_version": per_request([r.model.version for r in results], pa.string()),
            "output": per_request([r.request.output for r in results], pa.string()),
            "prediction": prediction,
            "probabilities": probabilities,
            "classes": classes,
            "canary": per_request([r.canary for r in results], pa.bool_()),
            "challenger_version": per_request(
                [r.shadow.model.version if r.shadow else None for r in results], pa.string()
            ),
            "challenger_prediction": typed_values(
                [v for r in results for v in (r.shadow.labels if r.shadow else [None] * len(r.labels))]
            )
            if shadowed
            else pa.nulls(count, pa.string()),
            "accepted_at": per_request([int(r.request.accepted_ms) for r in results], TIMESTAMP),
            "predicted_at": per_request([int(r.predicted_ms) for r in results], TIMESTAMP),
            "latency_ms": per_request([predict_latency_ms(r) for r in results], pa.float64()),
            "batch_predict_ms": per_request([r.predict_ms for r in results], pa.float64()),
        }
        if schema is None:
            as_json = [orjson.dumps(record).decode() for record in rows.records]
            columns["inputs_json"] = pa.array(as_json, type=pa.string())
            return pa.table(columns)
        columns["inputs_json"] = pa.nulls(len(rows), type=pa.string())
        # The table the model's fast path read its matrix from, when it did (the same schema's).
        table = rows.arrow(schema.arrow_schema())
        for name, array in zip(table.column_names, table.columns, strict=True):
            columns[input_column(name)] = array
        return pa.table(columns)


def joined_rows(results: Sequence[Result]) -> Rows:
    """The records of ``results``, in order: the predict call's own batch when ``results`` are the whole
    of it in its order (the Arrow table the model read is then at hand), else joined anew."""
    batch = results[0].batch_rows
    if batch is not None:
        expected = 0
        for result in results:
            if result.batch_rows is not batch or result.batch_offset != expected:
                break
            expected += len(result.request.rows)
        else:
            if expected == len(batch):
                return batch
    return Rows.concat([r.request.rows for r in results])


@dataclass
class _Journal:
    """One open Arrow IPC stream file, locked by this process while it writes it."""

    path: Path
    schema: pa.Schema
    opened_s: float
    fd: int
    sink: pa.OSFile
    writer: ipc.RecordBatchStreamWriter
    bytes: int = field(default=0)

    @classmethod
    def create(cls, path: Path, schema: pa.Schema, now: float) -> _Journal:
        # Locked under a name no other worker looks at, then renamed: a worker looking for orphans
        # never finds a journal of a live worker unlocked.
        hidden = path.with_name(f".{path.name}.new")
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while written: no other worker seals a live journal
        sink = pa.OSFile(str(hidden), "wb")
        writer = ipc.new_stream(sink, schema)
        os.rename(hidden, path)
        return cls(path, schema, now, fd, sink, writer)

    def append(self, table: pa.Table) -> None:
        self.writer.write_table(table)
        self.sink.flush()  # in the OS's hands before the batch is acknowledged
        self.bytes = self.sink.tell()

    def due(self, rotate_bytes: int, rotate_s: float, now: float) -> bool:
        return self.bytes >= rotate_bytes or now - self.opened_s >= rotate_s

    def close(self) -> None:
        """Finish the stream; the lock is kept until :meth:`release` (after sealing)."""
        self.writer.close()
        self.sink.close()

    def release(self) -> None:
        os.close(self.fd)


def seal_orphans(root: Path) -> int:
    """Seal the journals no live process holds (their worker stopped without sealing them); returns how
    many. Each is sealed under its lock, so two workers starting together never seal one twice."""
    sealed = 0
    for path in sorted((root / JOURNAL_DIR).glob(f"*{JOURNAL_SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # sealed meanwhile by another worker
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_nlink:  # not sealed and deleted by another worker since it was listed
                seal_journal(root, path)
                sealed += 1
        except BlockingIOError:  # its worker is alive and writing it
            continue
        finally:
            os.close(fd)
    return sealed


def read_journal(path: Path) -> pa.Table | None:
    """Every whole batch of a journal (one cut short by a crash ends at its last whole batch); None
    when not even its schema was written."""
    batches: list[pa.RecordBatch] = []
    try:
        reader = ipc.open_stream(pa.memory_map(str(path)))
    except (pa.ArrowInvalid, OSError):
        return None
    with contextlib.suppress(pa.ArrowInvalid, OSError):
        for batch in reader:
            batches.append(batch)
    return pa.Table.from_batches(batches, schema=reader.schema)


def seal_journal(root: Path, journal: Path) -> Path | None:
    """Write ``journal``'s rows as a finished Parquet file (temporary name, then renamed), then delete
    the journal. Returns the file; None for a journal without rows."""
    table = read_journal(journal)
    target = None
    if table is not None and table.num_rows:
        failures = is_failure_table(table)
        first = table.column("failed_at" if failures else "predicted_at")[0].as_py()
        route = table.column("route")[0].as_py()
        home = root / FAILURES_DIR if failures else root
        target = partition_dir(home, route, first) / f"{journal.stem}.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{target.name}.*.tmp"):  # a seal of this journal cut short
            stale.unlink(missing_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # readers skip a leading "."
        # the route is in the path, as Hive partitioning has it: readers add it as a column
        pq.write_table(table.drop_columns(["route"]), temporary, compression="zstd")
        os.replace(temporary, target)
        log.debug("prediction log: %d rows sealed in %s", table.num_rows, target)
    journal.unlink(missing_ok=True)
    return target


def partition_dir(root: Path, route: str, moment: datetime) -> Path:
    return root / f"route={route}" / f"date={moment:%Y-%m-%d}" / f"hour={moment:%H}"


def expire(root: Path, before_s: float) -> int:
    """Delete the hours that ended before ``before_s`` (epoch seconds); returns the files deleted."""
    deleted = 0
    for hour_dir in root.glob("route=*/date=*/hour=*"):
        try:
            start = datetime.strptime(
                f"{hour_dir.parent.name[5:]} {hour_dir.name[5:]}", "%Y-%m-%d %H"
            ).replace(tzinfo=UTC)
        except ValueError:
            continue
        if start.timestamp() + 3600.0 <= before_s:
            deleted += len(list(hour_dir.glob("*.parquet")))
            shutil.rmtree(hour_dir, ignore_errors=True)
            with contextlib.suppress(OSError):  # another worker may have a file there again
                hour_dir.parent.rmdir()
    return deleted


def is_failure_table(table: pa.Table) -> bool:
    """Whether a journal holds dead-lettered requests rather than predictions."""
    return "error_code" in table.column_names


def failure_table(failed: Sequence[FailedRequest], failed_ms: float) -> pa.Table:
    """A row per record of each dead-lettered request (one row with the raw payload when its records
    could not be read)."""
    rows: list[dict[str, Any]] = []
    for request in failed:
        common = {
            "request_id": request.request_id,
            "stream_id": request.stream_id,
            "route": request.route,
            "error_code": request.reason,
            "error_message": request.message,
            "accepted_at": int(request.accepted_ms),
            "failed_at": int(failed_ms),
        }
        if request.inputs is None:
            rows.append(common | {"record_index": None, "inputs_json": request.payload})
            continue
        for index, record in enumerate(request.inputs.records):
            rows.append(common | {"record_index": index, "inputs_json": orjson.dumps(record).decode()})
    return pa.Table.from_pylist(rows, schema=FAILURE_SCHEMA)


def _hour(epoch_ms: float) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000.0, tz=UTC).strftime("%Y-%m-%dT%H")


def _record_indexes(lengths: list[int]) -> np.ndarray:
    """Each record's index in its request: 0..n-1 for every request of n records."""
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(len(starts)) - starts


def _or_nulls(result: Result, wanted: bool) -> list[Any]:
    return result.labels if wanted else [None] * len(result.labels)


def typed_values(values: list[Any]) -> pa.Array:
    """Predictions as one Arrow column: with their own type when they share one (labels, numbers,
    booleans), else as JSON text; ``None`` is null."""
    kinds = set(map(type, values)) - {type(None)}
    if kinds <= {str}:  # none at all too: a column of nulls keeps the type of the labels it stands for
        return pa.array(values, type=pa.string())
    if kinds == {bool} or kinds == {int}:
        return pa.array(values)
    if kinds <= {int, float}:
        return pa.array(values, type=pa.float64())
    return pa.array([None if v is None else orjson.dumps(v).decode() for v in values], type=pa.string())
