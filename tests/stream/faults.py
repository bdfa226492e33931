"""Helpers for the fault tests: worker processes to kill and restart, and the reconciliation of what
was sent against what came out."""

from __future__ import annotations

import csv
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import redis

from streamml import keys
from streamml.local.services import ManagedProcess
from streamml.settings import Settings

RECONCILIATIONS: list[tuple[str, dict[str, Any]]] = []
"""Filled by the fault tests, printed at the end of the pytest run (see conftest)."""


def worker_env(settings: Settings, redis_url: str, tracking_uri: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMML_")}
    return env | {
        "REDIS_URL": redis_url,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "STREAMML_STATE_DIR": str(settings.state_dir),
        "STREAMML_STREAM_NAME": settings.stream.name,
        "STREAMML_STREAM_RESULTS": settings.stream.results,
        "STREAMML_WORKER_CLAIM_IDLE_MS": "3000",
        "STREAMML_WORKER_CLAIM_INTERVAL_S": "1",
        "STREAMML_WORKER_HEARTBEAT_S": "1",
        **extra,
    }


class WorkerPool:
    """Named worker processes (``python -m streamml worker --consumer NAME``)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: dict[str, ManagedProcess] = {}
        self.kills = 0

    def start(self, name: str) -> ManagedProcess:
        argv = [sys.executable, "-m", "streamml", "worker", "--consumer", name, "--log-level", "warning"]
        process = ManagedProcess(name, argv, self.log_dir / f"{name}.log", self.env).start()
        self.processes[name] = process
        return process

    def kill9(self, name: str) -> None:
        """SIGKILL: no chance to finish, ack or deregister."""
        process = self.processes[name]
        process.signal(signal.SIGKILL)
        assert process.process is not None
        process.process.wait()
        self.kills += 1

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.stop(grace_s=20)


@dataclass
class Reconciliation:
    sent: int
    accepted: int
    predicted: int
    dead_lettered: int
    lost: int
    duplicated: int
    pending: int
    unconfirmed: int = 0
    """Records predicted whose request the client saw refused: the gateway's write reached Redis but
    its answer did not reach the client (Redis went down in between). At-least-once, not a loss."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wait_until_settled(
    client: redis.Redis, settings: Settings, expected_entries: int, timeout_s: float
) -> None:
    """Until every accepted entry was acked (or dead-lettered) and nothing is pending or unread."""
    deadline = time.monotonic() + timeout_s
    stream = settings.stream.name
    while time.monotonic() < deadline:
        done = client.xlen(settings.stream.results) + client.xlen(keys.dead_letter_stream(stream))
        info: Any = client.xinfo_groups(stream)
        if done >= expected_entries and info and info[0]["pending"] == 0:
            return
        time.sleep(0.25)
    raise AssertionError(f"not settled within {timeout_s}s: {client.xinfo_groups(stream)}")


def reconcile(
    client: Any,
    settings: Settings,
    *,
    sent: int,
    accepted: int,
    request_ids: set[str] | None = None,
    streams: Sequence[str] = (),
) -> Reconciliation:
    """Records accepted vs records with a prediction (CSV) or a dead letter; duplicates in the CSV.
    A record is (request id, record index): stream ids repeat across ``streams`` (the partitions'
    request streams; default the one stream), request ids do not."""
    streams = list(streams) or [settings.stream.name]
    rows = 0
    distinct: set[tuple[str, str]] = set()
    unconfirmed: set[tuple[str, str]] = set()
    with settings.predictions_csv().open(newline="") as handle:
        for row in csv.DictReader(handle):
            record = (row["request_id"], row["record_index"])
            if request_ids is not None and row["request_id"] not in request_ids:
                unconfirmed.add(record)
                continue
            rows += 1
            distinct.add(record)
    dead = pending = 0
    for stream in streams:
        letters: Any = client.xrange(keys.dead_letter_stream(stream))
        for _, fields in letters:
            try:
                dead += len(orjson.loads(fields[b"records"]))
            except (KeyError, orjson.JSONDecodeError):
                dead += 1
        info: Any = client.xinfo_groups(stream)
        pending += int(info[0]["pending"]) if info else 0
    return Reconciliation(
        sent=sent,
        accepted=accepted,
        predicted=len(distinct),
        dead_lettered=dead,
        lost=accepted - len(distinct) - dead,
        duplicated=rows - len(distinct),
        pending=pending,
        unconfirmed=len(unconfirmed),
    )
