"""`streamml bench`: start what the benchmarks need, run them, record the results."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks import drain


def main(*, quick: bool, routes: list[str], record: bool, console: Console) -> dict[str, object]:
    from streamml.services import EmbeddedRedis
    from streamml.settings import DEFAULT_TRUSTED_TYPES
    from streamml.training import local_demo_registry

    with tempfile.TemporaryDirectory(prefix="streamml-bench-") as scratch:
        root = Path(scratch)
        server = None
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            server = EmbeddedRedis(root / "redis").start()
            redis_url = server.url
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not tracking_uri:
            console.print("training the demo models for the benchmark ...")
            tracking_uri = local_demo_registry(
                root, rows=3000 if quick else 20_000, experiment="bench", trusted_types=DEFAULT_TRUSTED_TYPES
            )
        try:
            report = drain.run(redis_url=redis_url, tracking_uri=tracking_uri, quick=quick, routes=routes)
        finally:
            if server:
                server.stop()
    table = Table(
        "route",
        "per entry",
        "records/s",
        "model batch/s",
        "share",
        "naive/s",
        "× naive",
        title="worker drain",
    )
    for r in report["results"]:
        table.add_row(
            r["route"],
            str(r["records_per_entry"]),
            f"{r['records_per_s']:,}",
            f"{r['model_batch_records_per_s']:,}",
            f"{r['share_of_model_speed']:.0%}",
            str(r["naive_records_per_s"]),
            f"{r['speedup_vs_naive']:,}",
        )
    console.print(table)
    if record:
        drain.RESULTS.mkdir(parents=True, exist_ok=True)
        command = "streamml bench" + (" --quick" if quick else "")
        (drain.RESULTS / "drain.json").write_text(json.dumps(report, indent=2) + "\n")
        (drain.RESULTS / "drain.md").write_text(drain.to_markdown(report, command))
        console.print(f"recorded in {drain.RESULTS}")
    return report
