"""`streamml bench --quick` runs every scenario, `mlflow models serve` included (a smoke test: no
timing is asserted)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_quick_benchmark_runs(redis_url: str, tracking_uri: str) -> None:
    env = dict(os.environ) | {"REDIS_URL": redis_url, "MLFLOW_TRACKING_URI": tracking_uri}
    result = subprocess.run(
        [sys.executable, "-m", "streamml", "bench", "--quick", "--routes", "lightgbm"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "worker drain" in result.stdout
    assert "end to end" in result.stdout
    assert "mlflow" in result.stdout
    assert "targets" in result.stdout
