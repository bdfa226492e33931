"""Scoring a whole file through the running workers (``streamml score``).

The file (CSV or Parquet) is read with Arrow in chunks of a fixed number of rows, and each chunk is one
request published through the same submission service the gateway uses — validated against the route's
signature, held back while the stream's backlog is over its limit, and deduplicated by an
``Idempotency-Key`` made of the input file's identity, the route and the chunk's number. Its predictions
are read from the request's result document. Each finished chunk is written as its own Parquet part
next to the output; once every chunk has its part, the parts are joined in input order into the output.

Interrupted (SIGINT, SIGTERM), a run publishes no more chunks, finishes those in flight and stops. A rerun
with the same arguments skips the chunks that have a part; a chunk that was published but has no part (a
run killed outright) is not published again: its key returns the first request, whose result is read. So
a run continues where it stopped and scores nothing twice (a run killed in the instant between reserving a
chunk's key and publishing it leaves that chunk unknown until the key's record expires, and says so).

Records a chunk's validation refuses are written with the reason in the ``error`` column; the rest of
the chunk is scored. A request a worker fails is written with its error for each of its records.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from redis.asyncio import Redis

from streamml.errors import IdempotencyConflict, InvalidRequest, Overloaded, StreammlError
from streamml.gateway.submission import Submission, validated
from streamml.models.refs import ModelRef
from streamml.models.schema import ValidatedBatch
from streamml.output_kinds import PREDICT, PROBA
from streamml.rows import Rows
from streamml.stream.topology import StreamTopology
from streamml.worker.prediction_log import typed_values

POLL_S = 0.05
BACKLOG_WAIT_S = 0.5
CONFLICT_WAIT_S = 10.0


class Interrupted(StreammlError):
    """The run was asked to stop (SIGINT, SIGTERM): the chunks in flight were finished, no others started."""

    code = "interrupted"


@dataclass
class ScoreProgress:
    """What a run has done so far (for a progress bar or a log line)."""

    total_rows: int
    rows_done: int = 0
    rows_failed: int = 0
    chunks_skipped: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def rows_per_s(self) -> float:
        return self.rows_done / max(time.monotonic() - self.started, 1e-9)


class FileScorer:
    """Scores ``source`` on ``route`` into ``target`` (see the module's docstring)."""

    def __init__(
        self,
        submission: Submission,
        redis: Redis,
        topology: StreamTopology,
        *,
        chunk_rows: int = 5000,
        in_flight: int = 16,
        proba: bool = False,
        result_timeout_s: float = 600.0,
    ) -> None:
        self.submission = submission
        self.redis = redis
        self.topology = topology
        self.chunk_rows = chunk_rows
        self.in_flight = in_flight
        self.output = PROBA if proba else PREDICT
        self.result_timeout_s = result_timeout_s

    async def score(
        self,
        source: Path,
        route: str,
        target: Path,
        on_progress: Callable[[ScoreProgress], None] = lambda progress: None,
    ) -> ScoreProgress:
        model = await self.submission.admit(route, None)
        parts = parts_dir(target)
        parts.mkdir(parents=True, exist_ok=True)
        identity = _identity(source, route, self.chunk_rows, self.output)
        progress = ScoreProgress(total_rows=_row_count(source))
        pending: set[asyncio.Task[tuple[int, int]]] = set()
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):  # finish what is in flight, publish no more
            loop.add_signal_handler(signum, stopping.set)
        try:
            await self._run(model, source, parts, identity, progress, pending, stopping, on_progress)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        on_progress(progress)
        if stopping.is_set():
            raise Interrupted(f"interrupted after {progress.rows_done:,} records")
        join_parts(parts, target)
        return progress

    async def _run(
        self,
        model: ModelRef,
        source: Path,
        parts: Path,
        identity: str,
        progress: ScoreProgress,
        pending: set[asyncio.Task[tuple[int, int]]],
        stopping: asyncio.Event,
        on_progress: Callable[[ScoreProgress], None],
    ) -> None:
        for index, chunk in enumerate(read_chunks(source, self.chunk_rows)):
            if stopping.is_set():
                break
            part = parts / f"{index:08d}.parquet"
            if part.exists():
                progress.rows_done += chunk.num_rows
                progress.chunks_skipped += 1
                continue
            while len(pending) >= self.in_flight:
                pending -= await self._collected(pending, progress, on_progress)
            key = f"score:{identity}:{index}"
            pending.add(asyncio.create_task(self._chunk(model, chunk, key, part)))
        while pending:
            pending -= await self._collected(pending, progress, on_progress)

    async def _collected(
        self,
        pending: set[asyncio.Task[tuple[int, int]]],
        progress: ScoreProgress,
        on_progress: Callable[[ScoreProgress], None],
    ) -> set[asyncio.Task[tuple[int, int]]]:
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            rows, failed = task.result()  # a chunk's unexpected error ends the run (its part is not written)
            progress.rows_done += rows
            progress.rows_failed += failed
        on_progress(progress)
        return done

    async def _chunk(self, model: ModelRef, chunk: pa.Table, key: str, part: Path) -> tuple[int, int]:
        """Score one chunk and write its part; (rows, rows failed)."""
        count = chunk.num_rows
        errors: list[str | None] = [None] * count
        kept = list(range(count))
        batch, refused = await self._validated(model, chunk.to_pydict())
        if refused:
            for index, reason in refused.items():
                errors[index] = reason
            kept = [i for i in range(count) if i not in refused]
            key += ":valid"
        predictions: list[Any] = [None] * count
        classes: list[Any] | None = None
        if batch is not None:
            document = await self._scored(model, batch, key)
            if document.get("status") == "failed":
                error = document.get("error") or {}
                for i in kept:
                    errors[i] = f"{error.get('code', 'failed')}: {error.get('message', '')}"
            else:
                for i, value in zip(kept, document["predictions"], strict=True):
                    predictions[i] = value
                classes = document.get("classes")
        out = chunk.append_column("error", pa.array(errors, type=pa.string()))
        if self.output == PROBA:
            out = out.append_column("probabilities", pa.array(predictions, type=pa.list_(pa.float64())))
            if classes is not None:
                out = out.replace_schema_metadata({b"classes": orjson.dumps(classes)})
        else:
            out = out.append_column("prediction", typed_values(predictions))
        temporary = part.with_name(f".{part.name}.tmp")
        pq.write_table(out, temporary)
        temporary.replace(part)
        return count, sum(e is not None for e in errors)

    async def _validated(
        self, model: ModelRef, columns: dict[str, list[Any]]
    ) -> tuple[ValidatedBatch | None, dict[int, str]]:
        """The chunk validated against the route's signature, without the records it refuses (by row in
        the chunk, with the reason); None when it refuses them all."""
        schema = await self.submission.schema(model)
        try:
            return validated(Rows(columns=columns), schema), {}
        except InvalidRequest as exc:
            refused: dict[int, str] = {}
            for problem in exc.problems:
                if problem.record is None:  # not a record's problem: the chunk as a whole
                    raise
                refused.setdefault(problem.record, problem.message)
        kept = [i for i in range(len(next(iter(columns.values()), []))) if i not in refused]
        if not kept:
            return None, refused
        rest = {name: [values[i] for i in kept] for name, values in columns.items()}
        return validated(Rows(columns=rest), schema), refused

    async def _scored(self, model: ModelRef, batch: ValidatedBatch, key: str) -> dict[str, Any]:
        """Publish a chunk (once: its key makes a repeat return the first request) and wait for its
        result document."""
        conflict_until = time.monotonic() + CONFLICT_WAIT_S
        while True:
            try:
                accepted = await self.submission.submit_batch(
                    model, batch, None, idempotency_key=key, output=self.output
                )
                break
            except Overloaded:  # the backlog is over its limit: wait for the workers
                await asyncio.sleep(BACKLOG_WAIT_S)
            except IdempotencyConflict:  # an earlier run was stopped while publishing this chunk
                if time.monotonic() > conflict_until:
                    raise StreammlError(
                        f"a run stopped while publishing chunk key {key}: whether it was published is not "
                        "known until its idempotency record expires (STREAMML_GATEWAY_IDEMPOTENCY_TTL_S)"
                    ) from None
                await asyncio.sleep(BACKLOG_WAIT_S)
        partition = self.topology.partition_of(accepted.request_id)
        if partition is None:
            raise StreammlError(f"request id {accepted.request_id!r} names no partition of this stream")
        result_key = partition.result_key(accepted.request_id)
        deadline = time.monotonic() + self.result_timeout_s
        while time.monotonic() < deadline:
            raw = await self.redis.get(result_key)
            if raw is None:
                raise StreammlError(
                    f"the result of request {accepted.request_id} has expired; remove the idempotency "
                    "record or score the file again under another output name"
                )
            document: dict[str, Any] = orjson.loads(raw)
            if document.get("status") != "pending":
                return document
            await asyncio.sleep(POLL_S)
        raise StreammlError(
            f"request {accepted.request_id} was not predicted within {self.result_timeout_s:g} s"
        )


def parts_dir(target: Path) -> Path:
    return target.with_name(f"{target.name}.parts")


def read_chunks(source: Path, rows: int) -> Iterator[pa.Table]:
    """The file's rows in chunks of exactly ``rows`` (the last may be shorter), the same on every run."""
    buffered: list[pa.RecordBatch] = []
    held = 0
    for batch in _batches(source):
        buffered.append(batch)
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(buffered)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            buffered, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(buffered)


def join_parts(parts: Path, target: Path) -> None:
    """The parts in input order as one file (CSV or Parquet by the target's suffix), then no parts."""
    files = sorted(parts.glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({})
    temporary = target.with_name(f".{target.name}.tmp")
    if target.suffix.lower() == ".parquet":
        pq.write_table(table, temporary)
    else:
        if "probabilities" in table.column_names:  # CSV has no lists: the probabilities as JSON text
            texts = [
                None if p is None else orjson.dumps(p).decode() for p in table["probabilities"].to_pylist()
            ]
            table = table.set_column(
                table.column_names.index("probabilities"), "probabilities", pa.array(texts, pa.string())
            )
        pacsv.write_csv(table, temporary)
    temporary.replace(target)
    shutil.rmtree(parts)


def _batches(source: Path) -> Iterator[pa.RecordBatch]:
    if source.suffix.lower() == ".parquet":
        yield from pq.ParquetFile(source).iter_batches()
    else:
        yield from pacsv.open_csv(source)


def _row_count(source: Path) -> int:
    if source.suffix.lower() == ".parquet":
        return int(pq.ParquetFile(source).metadata.num_rows)
    return -1  # a CSV's rows are known once read


def _identity(source: Path, route: str, chunk_rows: int, output: str) -> str:
    """The same file, route and chunking give the same keys on every run; another file, other keys."""
    stat = source.stat()
    text = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{route}|{chunk_rows}|{output}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]
