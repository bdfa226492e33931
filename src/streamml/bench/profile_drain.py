"""Where a worker's drain spends its CPU: one worker (this process) drains a pre-filled stream of
generated records three times unprofiled (their rates and CPU per record printed: a before/after check
that takes a minute), then once under cProfile.

Usage: ``python -m streamml.bench.profile_drain [records_per_entry] [records] [route] [output.prof]``
(defaults 1, 20000, lightgbm). With REDIS_URL and MLFLOW_TRACKING_URI unset it starts a private
redis-server and trains the demo models into a temporary sqlite registry. Prints the drain rate, the
worker's CPU per record, and the functions with the most time of their own; the whole profile is
written to ``output.prof`` when given (read it with ``python -m pstats``)."""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import sys
import tempfile
from pathlib import Path

from streamml.bench.drain import drain_once, served_model
from streamml.bench.harness import services
from streamml.models.registry import ModelRegistry
from streamml.settings import DEFAULT_ROUTES, DEFAULT_TRUSTED_TYPES, Settings
from streamml.synthetic.producer import record_stream
from streamml.synthetic.profile import Profile

WARM_UP_RECORDS = 2000
UNPROFILED = 3
SHOWN = 25


def main() -> None:
    per_entry = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    total = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    route = sys.argv[3] if len(sys.argv) > 3 else "lightgbm"
    output = sys.argv[4] if len(sys.argv) > 4 else None
    records = [r for r, _ in zip(record_stream(Profile.load(), seed=42), range(total), strict=False)]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        with services(root, rows=3000) as (redis_url, tracking_uri):
            registry = ModelRegistry(
                tracking_uri,
                DEFAULT_ROUTES,
                trusted_types=DEFAULT_TRUSTED_TYPES,
                compile_trees=Settings().mlflow.compile_trees,  # as the workers run by default
            )
            asyncio.run(served_model(registry, route))  # trees compiled before anything is measured
            warm = records[:WARM_UP_RECORDS]
            asyncio.run(drain_once(redis_url, registry, route, warm, per_entry, root))
            for _ in range(UNPROFILED):
                seconds, cpu = asyncio.run(drain_once(redis_url, registry, route, records, per_entry, root))
                print(
                    f"{route}, {per_entry} record(s) per entry: {total / seconds:,.0f} records/s, "
                    f"{cpu / total * 1e6:.1f} µs CPU per record",
                    flush=True,
                )
            profile = cProfile.Profile()
            seconds, cpu = asyncio.run(
                drain_once(redis_url, registry, route, records, per_entry, root, profile=profile)
            )
    print(
        f"{route}, {per_entry} record(s) per entry: {total / seconds:,.0f} records/s under the profiler, "
        f"{cpu / total * 1e6:.1f} µs CPU per record"
    )
    if output:
        profile.dump_stats(output)
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(SHOWN)
    print(text.getvalue())


if __name__ == "__main__":
    main()
