"""`streamml score` against a real Redis, registry and worker process: a 50,000-row Parquet file gets the
route's own predictions in input order, and a run interrupted half way (and one that lost the parts of
chunks it had published) run again scores nothing twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from redis import Redis

from streamml.models.registry import ModelRegistry
from streamml.settings import Settings
from streamml.stream.topology import StreamTopology
from streamml.synthetic.producer import record_stream
from streamml.synthetic.profile import Profile
from tests.helpers import load_route, process_env, start_worker

pytestmark = pytest.mark.integration

ROWS = 50_000
CHUNK = 1_000


def _records() -> list[dict[str, Any]]:
    return [r for r, _ in zip(record_stream(Profile.load(), seed=21), range(ROWS), strict=False)]


def _score_command(records: list[dict[str, Any]], directory: Path, target: Path) -> list[str]:
    """`streamml score` of ``records`` (written as Parquet in ``directory``) on lightgbm into ``target``."""
    names = sorted({name for record in records for name in record})
    source = directory / "input.parquet"
    pq.write_table(pa.table({name: [r.get(name) for r in records] for name in names}), source)
    return [sys.executable, "-m", "streamml", "score", str(source), "--route", "lightgbm", "-o", str(target)]


def test_a_file_gets_the_routes_predictions_in_order_and_an_interrupted_run_scores_nothing_twice(
    settings: Settings, shared_registry: ModelRegistry, tracking_uri: str, tmp_path: Path
) -> None:
    records = _records()
    target = tmp_path / "scored.parquet"
    command = [*_score_command(records, tmp_path, target), "--chunk-rows", str(CHUNK)]
    env = process_env(settings, tracking_uri)
    worker = start_worker(settings, tracking_uri, tmp_path / "worker.log")
    try:
        first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        parts = tmp_path / "scored.parquet.parts"
        deadline = time.monotonic() + 120
        while len(list(parts.glob("*.parquet"))) < 20:  # about half way
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the first run made no progress"
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGINT)  # Ctrl-C: the chunks in flight finish, no others start
        assert first.wait(timeout=60) == 130
        assert not target.exists()
        # As if a run had been killed after publishing three chunks and before writing their parts:
        # those chunks are not published again, their first requests' results are read.
        done = sorted(parts.glob("*.parquet"))
        assert len(done) < ROWS // CHUNK
        for part in done[-3:]:
            part.unlink()

        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "chunks kept from an earlier run" in again.stdout
    finally:
        worker.stop()

    scored = pq.read_table(target)
    assert scored.num_rows == ROWS
    assert scored.column("Sleep Hours").to_pylist() == [r.get("Sleep Hours") for r in records]  # input order
    assert scored.column("error").null_count == ROWS
    model = asyncio.run(load_route(shared_registry, "lightgbm"))
    assert scored.column("prediction").to_pylist() == model.predict(records).values
    assert not parts.exists()

    # Every record was published once: the interrupted run's chunks were not published again.
    [partition] = StreamTopology.of(settings.stream).partitions
    redis = Redis.from_url(settings.redis_url())
    try:
        assert int(redis.hget(partition.counters.accepted, "lightgbm") or 0) == ROWS
        assert int(redis.hget(partition.counters.predicted, "lightgbm") or 0) == ROWS
    finally:
        redis.close()


def test_records_the_signature_refuses_are_written_with_the_reason_and_the_rest_scored(
    settings: Settings, shared_registry: ModelRegistry, tracking_uri: str, tmp_path: Path
) -> None:
    records = _records()[:50]
    records[3] = records[3] | {"Sleep Hours": float("inf")}
    records[40] = records[40] | {"Sleep Hours": float("nan")}  # NaN in Parquet is a value, not a gap
    target = tmp_path / "scored.csv"
    command = _score_command(records, tmp_path, target)
    worker = start_worker(settings, tracking_uri, tmp_path / "worker.log")
    try:
        done = subprocess.run(
            command, env=process_env(settings, tracking_uri), capture_output=True, text=True, timeout=120
        )
    finally:
        worker.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 failed" in done.stdout
    scored = pa.csv.read_csv(target, convert_options=pa.csv.ConvertOptions(strings_can_be_null=True))
    errors = scored.column("error").to_pylist()
    assert [i for i, e in enumerate(errors) if e] == [3, 40]
    assert "record 3, field 'Sleep Hours': expected a finite number" in errors[3]
    kept = [r for i, r in enumerate(records) if i not in (3, 40)]
    model = asyncio.run(load_route(shared_registry, "lightgbm"))
    predictions = scored.column("prediction").to_pylist()
    assert [p for i, p in enumerate(predictions) if i not in (3, 40)] == model.predict(kept).values
    assert predictions[3] is None
