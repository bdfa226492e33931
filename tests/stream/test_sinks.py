"""The CSV sink writes what csv.writer would, and files read back with the csv module."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson

from streamml.models.dispatch import Scored
from streamml.models.registry import ModelRef
from streamml.stream.entry import Entry
from streamml.stream.sinks import CSV_COLUMNS, CsvSink, Result, dedup_csv


def _result(
    stream_id: str, route: str, name: str, labels: list[str], records: list[dict[str, object]]
) -> Result:
    entry = Entry(stream_id, "req", route, records, accepted_ms=1_000.0, reply=False)
    return Scored(entry, ModelRef(route, name, "3"), labels, predicted_ms=1_004.5, predict_ms=0.5)


def test_rows_match_csv_writer_even_with_commas_quotes_and_newlines(tmp_path: Path) -> None:
    records: list[dict[str, object]] = [
        {"Gender": 'Fe"male', "Sleep Hours": 7.5},
        {"Company Type": "a,b\nc"},
        {},
    ]
    results = [
        _result("1-0", "svm", "SVC", ["Low", 'Hi,"gh"', "Medium\r\n"], records),
        _result("2-0", "my,route", 'name "quoted"', ["x"], [{"k": 1}]),
    ]
    sink = CsvSink(tmp_path / "p.csv")
    sink.write(results)
    sink.close()

    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for result in results:
        e = result.request
        for index, (label, record) in enumerate(zip(result.labels, e.records, strict=True)):
            writer.writerow(
                [
                    "1970-01-01T00:00:01.004+00:00",
                    e.request_id,
                    e.stream_id,
                    index,
                    e.route,
                    result.model.name,
                    result.model.version,
                    label,
                    "4.500",
                    orjson.dumps(record).decode(),
                ]
            )
    assert (tmp_path / "p.csv").read_bytes() == expected.getvalue().encode()
    with (tmp_path / "p.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["prediction"] for r in rows] == ["Low", 'Hi,"gh"', "Medium\r\n", "x"]
    assert orjson.loads(rows[1]["features"]) == {"Company Type": "a,b\nc"}
    assert dedup_csv(tmp_path / "p.csv", tmp_path / "d.csv") == (4, 0)
