"""`streamml score`'s rate against the drain rate, on the same route and records.

First one worker (this process) drains the records pre-filled as entries of 100, as ``streamml bench``'s
drain does; then a worker process serves ``streamml score`` of the same records written as a Parquet file,
the command run as a user runs it (its own process), timed from start to the output written.

Usage: ``python -m streamml.bench.score_rate [records] [route] [chunk_rows]`` (defaults 1,000,000,
lightgbm, 5,000: the command's default). With
REDIS_URL and MLFLOW_TRACKING_URI unset it starts a private redis-server and trains the demo models into a
temporary sqlite registry.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from streamml.bench.drain import drain_once, served_model
from streamml.bench.harness import services
from streamml.local.services import ManagedProcess
from streamml.models.registry import ModelRegistry
from streamml.settings import DEFAULT_ROUTES, DEFAULT_TRUSTED_TYPES, Settings
from streamml.synthetic.producer import record_stream
from streamml.synthetic.profile import Profile

WARM_UP_ROWS = 20_000


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    route = sys.argv[2] if len(sys.argv) > 2 else "lightgbm"
    chunk_rows = sys.argv[3] if len(sys.argv) > 3 else "5000"
    records = [r for r, _ in zip(record_stream(Profile.load(), seed=44), range(total), strict=False)]
    names = sorted({name for record in records for name in record})
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        with services(root, rows=3000) as (redis_url, tracking_uri):
            registry = ModelRegistry(
                tracking_uri,
                DEFAULT_ROUTES,
                trusted_types=DEFAULT_TRUSTED_TYPES,
                compile_trees=Settings().mlflow.compile_trees,  # as the workers run by default
            )
            asyncio.run(served_model(registry, route))
            seconds, _ = asyncio.run(drain_once(redis_url, registry, route, records, 100, root))
            drain_rate = total / seconds
            print(f"drain, 100 records per entry: {drain_rate:,.0f} records/s", flush=True)

            source = root / "input.parquet"
            pq.write_table(pa.table({n: [r.get(n) for r in records] for n in names}), source)
            pq.write_table(pq.read_table(source).slice(0, WARM_UP_ROWS), root / "warm.parquet")
            stream = f"bench-score-{uuid.uuid4().hex[:8]}"
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")},
                "REDIS_URL": redis_url,
                "MLFLOW_TRACKING_URI": tracking_uri,
                "STREAMML_STATE_DIR": str(root / "state"),
                "STREAMML_STREAM_NAME": stream,
                "STREAMML_STREAM_RESULTS": f"{stream}:predictions",
            }
            cli = [sys.executable, "-m", "streamml"]
            worker = ManagedProcess(
                "worker", [*cli, "worker", "--log-level", "warning"], root / "worker.log", env
            ).start()
            try:
                score = [*cli, "score", "--route", route, "--chunk-rows", chunk_rows]
                subprocess.run(
                    [*score, str(root / "warm.parquet"), "-o", str(root / "warm-out.parquet")],
                    env=env,
                    check=True,
                    capture_output=True,
                )  # the worker has loaded its model
                started = time.perf_counter()
                subprocess.run(
                    [*score, str(source), "-o", str(root / "out.parquet")],
                    env=env,
                    check=True,
                    capture_output=True,
                )
                seconds = time.perf_counter() - started
            finally:
                worker.stop()
            rows = pq.ParquetFile(root / "out.parquet").metadata.num_rows
            assert rows == total, (rows, total)
    score_rate = total / seconds
    took = f"{seconds:.1f} s for {total:,} records"
    print(f"streamml score, chunks of {int(chunk_rows):,}: {score_rate:,.0f} records/s ({took})")
    print(f"score / drain: {score_rate / drain_rate:.0%}")


if __name__ == "__main__":
    main()
