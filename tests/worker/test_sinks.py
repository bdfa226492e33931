"""The CSV sink writes what csv.writer would, and files read back with the csv module."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import orjson

from streamml.models.dispatch import Scored, ShadowLabels
from streamml.models.refs import ModelRef
from streamml.rows import Rows
from streamml.stream.entry import Entry
from streamml.worker.sinks import CSV_COLUMNS, CsvSink, Result, dedup_csv


def _result(
    stream_id: str,
    route: str,
    name: str,
    labels: list[str],
    records: list[dict[str, object]],
    shadow: list[str] | None = None,
) -> Result:
    entry = Entry(stream_id, "req", route, Rows(records=records), accepted_ms=1_000.0, reply=False)
    challenger = ShadowLabels(ModelRef(route, name, "4"), shadow) if shadow is not None else None
    return Scored(
        entry, ModelRef(route, name, "3"), labels, predicted_ms=1_004.5, predict_ms=0.5, shadow=challenger
    )


def test_rows_match_csv_writer_even_with_commas_quotes_and_newlines(tmp_path: Path) -> None:
    records: list[dict[str, object]] = [
        {"Gender": 'Fe"male', "Sleep Hours": 7.5},
        {"Company Type": "a,b\nc"},
        {},
    ]
    results = [
        _result("1-0", "svm", "SVC", ["Low", 'Hi,"gh"', "Medium\r\n"], records),
        _result("2-0", "my,route", 'name "quoted"', ["x"], [{"k": 1}]),
        _result("3-0", "svm", "SVC", ["Low", "High"], [{}, {}], shadow=["Low", 'Me,"d"']),
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
                    "4" if result.shadow else "",
                    result.shadow.labels[index] if result.shadow else "",
                ]
            )
    assert (tmp_path / "p.csv").read_bytes() == expected.getvalue().encode()
    with (tmp_path / "p.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["prediction"] for r in rows] == ["Low", 'Hi,"gh"', "Medium\r\n", "x", "Low", "High"]
    assert [r["challenger_prediction"] for r in rows][-2:] == ["Low", 'Me,"d"']
    assert orjson.loads(rows[1]["features"]) == {"Company Type": "a,b\nc"}
    assert dedup_csv(tmp_path / "p.csv", tmp_path / "d.csv") == (6, 0)


def test_a_csv_with_other_columns_is_set_aside_not_appended_to(tmp_path: Path) -> None:
    old = tmp_path / "p.csv"
    old.write_text("timestamp,request_id,prediction\n2026-01-01,r1,Low\n")
    sink = CsvSink(old)
    sink.write([_result("1-0", "svm", "SVC", ["High"], [{}])])
    sink.close()

    [aside] = [p for p in tmp_path.iterdir() if p.name != "p.csv"]
    assert aside.read_text() == "timestamp,request_id,prediction\n2026-01-01,r1,Low\n"
    with old.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["prediction"] for r in rows] == ["High"]
    assert list(rows[0]) == CSV_COLUMNS
