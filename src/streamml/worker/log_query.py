"""SQL over the prediction log (:mod:`streamml.worker.prediction_log`) with DuckDB.

Two views: ``log``, every row written (finished Parquet files, and the rows of journals still being
written, so a query sees predictions seconds old), and ``predictions``, the same without the rows a
re-delivery repeated (the first of each ``request_id`` + ``record_index``). Routes whose models take
other inputs are read together by column name: a column a route does not have is null in its rows.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from streamml.worker.prediction_log import JOURNAL_DIR, JOURNAL_SUFFIX, read_journal

FILES = "route=*/date=*/hour=*/*.parquet"

DEDUPLICATED = """
CREATE VIEW predictions AS
SELECT * EXCLUDE (_copy) FROM (
    SELECT *, row_number() OVER (PARTITION BY request_id, record_index ORDER BY predicted_at) AS _copy
    FROM log
) WHERE _copy = 1
"""


def open_log(root: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the ``log`` and ``predictions`` views over ``root``."""
    connection = duckdb.connect()
    parts: list[str] = []
    if any(root.glob(FILES)):
        files = connection.read_parquet(str(root / FILES), hive_partitioning=True, union_by_name=True)
        files.create_view("finished_files")
        parts.append("SELECT * FROM finished_files")
    journals = [
        table
        for path in sorted((root / JOURNAL_DIR).glob(f"*{JOURNAL_SUFFIX}"))
        if (table := read_journal(path)) is not None and table.num_rows
    ]
    if journals:
        live = pa.concat_tables(journals, promote_options="permissive")
        at = live.column("predicted_at")
        live = live.append_column("date", pc.cast(at, pa.date32()))
        live = live.append_column("hour", pc.cast(pc.hour(at), pa.int64()))
        connection.register("live_journals", live)
        parts.append("SELECT * FROM live_journals")
    if not parts:
        raise FileNotFoundError(f"no prediction log at {root}: no worker has written one yet")
    connection.execute("CREATE VIEW log AS " + " UNION ALL BY NAME ".join(parts))
    connection.execute(DEDUPLICATED)
    return connection
