"""Process entry points as a supervisor sees them: exit statuses and what the log says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamml.local.services import free_port

pytestmark = pytest.mark.integration


def test_a_worker_that_gives_up_on_redis_exits_3_saying_why(tmp_path: Path, tracking_uri: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    env |= {
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        "MLFLOW_TRACKING_URI": tracking_uri,
        "STREAMML_STATE_DIR": str(tmp_path),
        "STREAMML_WORKER_REDIS_GIVE_UP_S": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "streamml", "worker"], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 3, done.stderr[-3000:]  # documented: a supervisor can tell it apart
    assert "Redis unreachable for" in done.stderr
    assert "giving up" in done.stderr
