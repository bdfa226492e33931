"""The Parquet prediction log: typed columns a DuckDB query reads, journals that survive a crash, files
that are never half-written, rotation, retention and the deduplicated view."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow.parquet as pq
from redis.asyncio import Redis
from typer.testing import CliRunner

from streamml.cli.main import app
from streamml.models.dispatch import Scored
from streamml.models.refs import ModelRef
from streamml.models.registry import ModelRegistry
from streamml.models.schema import Column, InputSchema
from streamml.output_kinds import PROBA
from streamml.rows import Rows
from streamml.settings import PredictionLogSettings, Settings
from streamml.stream.entry import Entry
from streamml.worker.log_query import open_log
from streamml.worker.prediction_log import JOURNAL_DIR, PredictionLog
from streamml.worker.sinks import Result
from tests.helpers import drain, gateway_client

SCHEMA = InputSchema(
    [
        Column("Sleep Hours", "double", False),
        Column("Gender", "string", False),
        Column("route", "long", False),
    ]
)
"""A feature named like one of the log's own columns is written as ``input_route``."""
REF = ModelRef("svm", "SVC", "3")
HOUR_MS = 3_600_000.0


def result(request_id: str, count: int, predicted_ms: float = 1_764_590_400_000.0, **entry: Any) -> Result:
    columns: dict[str, list[Any]] = {
        "Sleep Hours": [7.0 + i for i in range(count)],
        "Gender": ["F"] * count,
        "route": [1] * count,
    }
    request = Entry(
        f"{request_id}-0",
        request_id,
        "svm",
        Rows(columns=columns),
        accepted_ms=predicted_ms - 5,
        reply=False,
        **entry,
    )
    return Scored(
        request, REF, [f"label-{i}" for i in range(count)], predicted_ms, predict_ms=1.5, categorical=True
    )


def log_at(root: Path, now_s: float = 1_764_590_400.0, **settings: Any) -> PredictionLog:
    return PredictionLog(
        PredictionLogSettings(**settings), root, "w1", lambda ref: SCHEMA, clock=lambda: now_s
    )


async def test_every_prediction_is_logged_with_its_inputs_as_typed_columns_and_queries_with_duckdb(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    records = [
        {"Designation": 2.0, "Gender": "Female", "Sleep Hours": 6.5},
        {"Designation": 4.0, "Company Type": "Product"},
        {"Designation": 1.0, "Mental Fatigue Score": 3.0},
    ]
    async with gateway_client(settings, redis, shared_registry) as client:
        accepted = {}
        for route in ("svm", "lightgbm"):
            response = await client.post(f"/predict_stream?model={route}", json={"data": records})
            accepted[route] = response.json()["request_id"]
        stats = await drain(settings, redis, shared_registry)
        documents = {
            route: (await client.get(f"/predictions/{request_id}")).json()
            for route, request_id in accepted.items()
        }

    log = open_log(settings.prediction_log_dir())
    assert not list((settings.prediction_log_dir() / JOURNAL_DIR).glob("*.arrows"))  # all sealed at stop
    count = log.execute("SELECT count(*) FROM predictions").fetchone()
    assert count == (stats.records,)
    for route, document in documents.items():
        rows = log.execute(
            'SELECT record_index, prediction, model_version, "Sleep Hours", Gender, "Company Type" '
            "FROM predictions WHERE route = ? ORDER BY record_index",
            [route],
        ).fetchall()
        assert [row[1] for row in rows] == document["predictions"]
        assert {row[2] for row in rows} == {document["model"]["version"]}
        assert [(row[3], row[4], row[5]) for row in rows] == [
            (6.5, "Female", None),
            (None, None, "Product"),
            (None, None, None),
        ]
    types = dict(log.execute("SELECT column_name, column_type FROM (DESCRIBE predictions)").fetchall())
    assert types["Sleep Hours"] == "DOUBLE"
    assert types["Designation"] == "DOUBLE"
    assert types["Gender"] == "VARCHAR"
    assert types["predicted_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["record_index"] == "INTEGER"
    # pandas reads a route's files the same way, the route from the path
    frame = pd.read_parquet(settings.prediction_log_dir() / "route=svm")
    assert sorted(frame["Sleep Hours"].dropna()) == [6.5]


async def test_dead_lettered_requests_are_logged_as_failures_with_their_inputs_and_error(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    """A real worker dead-letters a request for a route no model serves and an unreadable entry; the
    ``failures`` view has each record's inputs and the reason, beside the predictions of a good one."""
    stream = settings.stream.name
    records = [{"Designation": 2.0}, {"Designation": 3.0}]
    await redis.xadd(
        stream,
        {"v": "1", "request_id": "no-model", "route": "nosuch", "records": orjson.dumps(records)},
    )
    await redis.xadd(stream, {"v": "1", "request_id": "garbled", "route": "knn", "records": "{not json"})
    await redis.xadd(
        stream, {"v": "1", "request_id": "good", "route": "knn", "records": orjson.dumps(records)}
    )
    await drain(settings, redis, shared_registry)

    log = open_log(settings.prediction_log_dir())
    failures = log.execute(
        "SELECT request_id, record_index, route, error_code, inputs_json FROM failures "
        "ORDER BY request_id, record_index"
    ).fetchall()
    assert failures == [
        ("garbled", None, "knn", "invalid_payload", "{not json"),
        ("no-model", 0, "nosuch", "unknown_model", '{"Designation":2.0}'),
        ("no-model", 1, "nosuch", "unknown_model", '{"Designation":3.0}'),
    ]
    assert log.execute("SELECT request_id, count(*) FROM predictions GROUP BY ALL").fetchall() == [
        ("good", 2)
    ]
    [(message,)] = log.execute("SELECT error_message FROM failures WHERE record_index = 0").fetchall()
    assert "nosuch" in message


def test_a_worker_killed_mid_write_leaves_every_file_readable_and_its_journal_sealed_by_the_next(
    tmp_path: Path,
) -> None:
    """A real process appends batches of 50 records until SIGKILL; the next worker to start seals its
    journal: whole batches only, every finished file readable, no temporary file left."""
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from pathlib import Path
        from tests.worker.test_prediction_log import log_at, result
        log = log_at(Path({str(tmp_path)!r}), rotate_mb=0.02)
        n = 0
        while True:
            n += 1
            log.write([result(f"r{{n}}", 50)])
            print(n, flush=True)
        """
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None
    while int(writer.stdout.readline() or 0) < 40:  # some files finished, one journal open
        assert writer.poll() is None
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert list((tmp_path / JOURNAL_DIR).glob("*.arrows")), "the killed writer had a journal open"

    log_at(tmp_path).close()  # a worker starts (and stops): it seals the orphan

    assert not list((tmp_path / JOURNAL_DIR).iterdir())
    files = sorted(tmp_path.glob("route=*/date=*/hour=*/*"))
    assert files
    assert all(f.suffix == ".parquet" and not f.name.startswith(".") for f in files)
    counts = [pq.read_table(f).num_rows for f in files]
    assert all(count % 50 == 0 for count in counts)  # never part of a batch
    assert sum(counts) >= 40 * 50


def test_a_batch_delivered_twice_is_one_row_in_predictions_and_two_in_log(tmp_path: Path) -> None:
    log = log_at(tmp_path)
    log.write([result("r1", 3), result("r2", 2)])
    log.write([result("r1", 3)])  # re-delivered after a crash before its acknowledgement
    log.close()
    query = open_log(tmp_path)
    assert query.execute("SELECT count(*) FROM log").fetchone() == (8,)
    assert query.execute("SELECT count(*) FROM predictions").fetchone() == (5,)


def test_rows_of_a_journal_still_being_written_are_queried_with_the_finished_ones(tmp_path: Path) -> None:
    log = log_at(tmp_path)
    log.write([result("r1", 3)])
    assert list((tmp_path / JOURNAL_DIR).glob("*.arrows"))
    query = open_log(tmp_path)
    assert query.execute("SELECT count(*), min(hour), min(route) FROM predictions").fetchone() == (
        3,
        12,
        "svm",
    )
    log.close()


def test_a_feature_named_like_a_log_column_keeps_its_value_under_input_and_its_name(tmp_path: Path) -> None:
    log = log_at(tmp_path)
    log.write([result("r1", 2)])
    log.close()
    assert open_log(tmp_path).execute("SELECT route, input_route FROM predictions").fetchall() == [
        ("svm", 1),
        ("svm", 1),
    ]


def test_probabilities_are_logged_as_lists_with_their_classes(tmp_path: Path) -> None:
    log = log_at(tmp_path)
    proba = result("r1", 2, output=PROBA)
    log.write(
        [Scored(proba.request, REF, [[0.25, 0.75], [1.0, 0.0]], proba.predicted_ms, 1.0, classes=["a", "b"])]
    )
    log.close()
    assert open_log(tmp_path).execute(
        "SELECT prediction, probabilities, classes FROM predictions"
    ).fetchall() == [
        (None, [0.25, 0.75], ["a", "b"]),
        (None, [1.0, 0.0], ["a", "b"]),
    ]


def test_files_rotate_by_size_and_by_the_hour(tmp_path: Path) -> None:
    log = log_at(tmp_path, rotate_mb=0.001)
    for n in range(5):
        log.write([result(f"r{n}", 20)])
    log.write([result("late", 1, predicted_ms=1_764_590_400_000.0 + HOUR_MS)])
    log.close()
    hours = sorted(p.name for p in tmp_path.glob("route=svm/date=*/hour=*"))
    assert hours == ["hour=12", "hour=13"]
    assert len(list(tmp_path.glob("route=svm/date=*/hour=12/*.parquet"))) == 5


def test_hours_past_the_retention_are_deleted(tmp_path: Path) -> None:
    old = log_at(tmp_path)
    old.write([result("old", 1)])
    old.close()
    later = log_at(tmp_path, now_s=1_764_590_400.0 + 3 * 3600, retention_h=2)
    later.write([result("new", 1, predicted_ms=1_764_590_400_000.0 + 3 * HOUR_MS)])
    later.close()
    assert sorted(p.name for p in tmp_path.glob("route=svm/date=*/hour=*")) == ["hour=15"]


def test_log_query_prints_what_the_sql_selects(tmp_path: Path) -> None:
    log = log_at(tmp_path)
    log.write([result("r1", 3), result("r2", 1)])
    log.close()
    runner = CliRunner()
    answer = runner.invoke(
        app,
        [
            "log",
            "query",
            "SELECT request_id, count(*) AS n FROM predictions GROUP BY ALL ORDER BY 1",
            "--json",
            "--dir",
            str(tmp_path),
        ],
    )
    assert answer.exit_code == 0, answer.output
    assert answer.output.strip() == '[{"request_id": "r1", "n": 3}, {"request_id": "r2", "n": 1}]'
    failed = runner.invoke(app, ["log", "query", "SELECT nope FROM predictions", "--dir", str(tmp_path)])
    assert failed.exit_code == 2
    assert "nope" in failed.output
