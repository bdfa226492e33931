"""SQL over the prediction log (:mod:`streamml.worker.prediction_log`) with DuckDB.

Three views: ``log``, every row written (finished Parquet files, and the rows of journals still being
written, so a query sees predictions seconds old); ``predictions``, the same without the rows a
re-delivery repeated (the first of each ``request_id`` + ``record_index``); and ``failures``, the records
of dead-lettered requests with the error and their inputs as JSON. Routes whose models take other inputs
are read together by column name: a column a route does not have is null in its rows.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from streamml.worker.prediction_log import (
    FAILURE_SCHEMA,
    FAILURES_DIR,
    JOURNAL_DIR,
    JOURNAL_SUFFIX,
    is_failure_table,
    read_journal,
)

FILES = "route=*/date=*/hour=*/*.parquet"

DEDUPLICATED = """
CREATE VIEW predictions AS
SELECT * EXCLUDE (_copy) FROM (
    SELECT *, row_number() OVER (PARTITION BY request_id, record_index ORDER BY predicted_at) AS _copy
    FROM log
) WHERE _copy = 1
"""


def open_log(root: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the ``log``, ``predictions`` and ``failures`` views over
    ``root``."""
    connection = duckdb.connect()
    journals = [
        table
        for path in sorted((root / JOURNAL_DIR).glob(f"*{JOURNAL_SUFFIX}"))
        if (table := read_journal(path)) is not None and table.num_rows
    ]
    live_failures = [t for t in journals if is_failure_table(t)]
    live = [t for t in journals if not is_failure_table(t)]
    predicted = _view(connection, "log", root, live, "predicted_at")
    failed = _view(connection, "failures", root / FAILURES_DIR, live_failures, "failed_at")
    if not predicted and not failed:
        raise FileNotFoundError(f"no prediction log at {root}: no worker has written one yet")
    if not predicted:
        connection.execute(
            "CREATE VIEW log AS SELECT NULL AS request_id, NULL AS record_index, NULL AS predicted_at "
            "WHERE false"
        )
    if not failed:
        connection.register("no_failures", FAILURE_SCHEMA.empty_table())
        connection.execute("CREATE VIEW failures AS SELECT * FROM no_failures")
    connection.execute(DEDUPLICATED)
    return connection


def _view(
    connection: duckdb.DuckDBPyConnection, name: str, root: Path, journals: list[pa.Table], time_column: str
) -> bool:
    """Create the view ``name`` over the finished files under ``root`` and the live journals' rows;
    False when there is neither."""
    parts: list[str] = []
    if any(root.glob(FILES)):
        files = connection.read_parquet(str(root / FILES), hive_partitioning=True, union_by_name=True)
        files.create_view(f"{name}_files")
        parts.append(f"SELECT * FROM {name}_files")  # noqa: S608 - names of this module's own views
    if journals:
        live = pa.concat_tables(journals, promote_options="permissive")
        at = live.column(time_column)
        live = live.append_column("date", pc.cast(at, pa.date32()))
        live = live.append_column("hour", pc.cast(pc.hour(at), pa.int64()))
        connection.register(f"{name}_journals", live)
        parts.append(f"SELECT * FROM {name}_journals")  # noqa: S608 - names of this module's own views
    if parts:
        connection.execute(f"CREATE VIEW {name} AS " + " UNION ALL BY NAME ".join(parts))
    return bool(parts)
