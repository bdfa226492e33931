"""Operating the dead-letter stream, and removing re-delivery duplicates from the CSV sink."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from streamml import keys
from streamml.errors import FailureReason
from streamml.models.registry import ModelRegistry
from streamml.settings import DEFAULT_TRUSTED_TYPES, Settings
from streamml.stream.deadletters import REASON, SCAN_PAGE, DeadLetters
from streamml.worker.sinks import CSV_COLUMNS, dedup_csv
from tests.helpers import drain, publisher_for


def dead_letters(settings: Settings, redis: Redis) -> DeadLetters:
    publisher = publisher_for(settings, redis)
    return DeadLetters(redis, publisher.topology, publisher)


GOOD = orjson.dumps([{"Designation": 2.0, "Mental Fatigue Score": 4.0}])


async def test_list_replay_and_purge(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    stream = settings.stream.name
    # Dead-lettered because the route is unknown to this configuration...
    await redis.xadd(stream, {"v": "1", "request_id": "late-route", "route": "knn2", "records": GOOD})
    await redis.xadd(stream, {"v": "1", "request_id": "garbage", "route": "knn", "records": b"{"})
    await drain(settings, redis, shared_registry)
    dlq = dead_letters(settings, redis)
    letters = await dlq.entries()
    assert {letter.fields["dlq_reason"] for letter in letters} == {"unknown_model", "invalid_payload"}
    assert [letter.summary()["request_id"] for letter in await dlq.entries(reason="unknown_model")] == [
        "late-route"
    ]

    # ...which the operator then adds, and replays: the letter becomes a prediction.
    settings.mlflow.routes = {**settings.mlflow.routes, "knn2": "models:/Knn_Classifier@champion"}
    registry = ModelRegistry(
        shared_registry.tracking_uri, settings.mlflow.routes, trusted_types=DEFAULT_TRUSTED_TYPES
    )
    assert await dlq.replay(reason="unknown_model") == 1
    await drain(settings, redis, registry)
    result: Any = await redis.get(keys.result_key(stream, "late-route"))
    assert orjson.loads(result)["status"] == "done"

    remaining = await dlq.entries()
    assert [letter.fields["request_id"] for letter in remaining] == ["garbage"]
    shown = await dlq.show(remaining[0].letter_id)
    assert shown is not None
    assert shown.fields["dlq_error_class"] == "InvalidEntry"
    assert await dlq.purge([remaining[0].letter_id]) == 1
    assert await redis.xlen(keys.dead_letter_stream(stream)) == 0


async def test_reason_filters_every_letter_not_only_the_first_page(settings: Settings, redis: Redis) -> None:
    """The matches past the first page of letters are found, and --reason narrows a list of ids too."""
    dlq = dead_letters(settings, redis)
    letters_stream = dlq.topology.partitions[0].dead_letters
    async with redis.pipeline(transaction=False) as pipe:
        for index in range(SCAN_PAGE + 500):
            pipe.xadd(letters_stream, {"request_id": f"old{index}", REASON: "prediction_failed"})
        await pipe.execute()
    late: list[Any] = [
        await redis.xadd(letters_stream, {"request_id": f"late{i}", REASON: "unknown_model"})
        for i in range(3)
    ]

    found = await dlq.entries(reason=FailureReason.UNKNOWN_MODEL, limit=10)
    assert [letter.fields["request_id"] for letter in found] == ["late0", "late1", "late2"]
    assert len(await dlq.entries(limit=SCAN_PAGE + 10)) == SCAN_PAGE + 10

    first_old = (await dlq.entries(limit=1))[0].letter_id
    chosen = await dlq.select([first_old, late[0].decode()], FailureReason.UNKNOWN_MODEL)
    assert [letter.fields["request_id"] for letter in chosen] == ["late0"]
    assert await dlq.purge([first_old, late[1].decode()], reason=FailureReason.UNKNOWN_MODEL) == 1
    assert await dlq.show(first_old) is not None


def test_dedup_keeps_the_first_row_of_each_record(tmp_path: Path) -> None:
    source, target = tmp_path / "p.csv", tmp_path / "dedup.csv"
    rows = [
        ["t1", "r1", "1-0", "0", "svm", "SVC", "1", "Low", "1.0", "{}"],
        ["t1", "r1", "1-0", "1", "svm", "SVC", "1", "High", "1.0", "{}"],
        ["t2", "r1", "1-0", "0", "svm", "SVC", "1", "Low", "9.0", "{}"],  # re-delivered
        ["t3", "r2", "2-0", "0", "knn", "Knn_Classifier", "1", "Medium", "2.0", "{}"],
    ]
    with source.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    assert dedup_csv(source, target) == (3, 1)
    with target.open() as handle:
        kept = list(csv.DictReader(handle))
    assert [(r["stream_id"], r["record_index"], r["timestamp"]) for r in kept] == [
        ("1-0", "0", "t1"),
        ("1-0", "1", "t1"),
        ("2-0", "0", "t3"),
    ]
