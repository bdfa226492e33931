"""Two gateway processes behind one port (``streamml api --processes 2``), under load: both serve,
nothing is lost, synchronous answers reach whichever process waits for them, and ``/metrics`` counts
every process's requests whichever process a scrape reaches."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import httpx
import pytest

from streamml.local.services import ManagedProcess, free_port, wait_until_healthy
from streamml.settings import Settings
from tests.helpers import SEED_EXAMPLE, process_env, start_worker

pytestmark = pytest.mark.integration

REQUESTS = 600


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def command_line(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


async def test_two_gateway_processes_share_one_port_under_load(
    settings: Settings, tracking_uri: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable,
        "-m",
        "streamml",
        "api",
        "--processes",
        "2",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    gateway = ManagedProcess(
        "gateway", argv, tmp_path / "gateway.log", process_env(settings, tracking_uri)
    ).start()
    worker = start_worker(settings, tracking_uri, tmp_path / "worker.log")
    try:
        await asyncio.to_thread(wait_until_healthy, f"{url}/ready", gateway, timeout_s=90)
        processes = [p for p in children(gateway.pid) if b"spawn_main" in command_line(p)]
        assert len(processes) == 2, gateway.log_tail()
        before = {p: cpu_ticks(p) for p in processes}
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=0)  # new connections: both accept
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            answers = await asyncio.gather(
                *(client.post("/predict_stream?model=svm", json=SEED_EXAMPLE) for _ in range(REQUESTS))
            )
            synchronous = await asyncio.gather(
                *(client.post("/predict?model=knn", json=SEED_EXAMPLE) for _ in range(40))
            )
            assert [a.status_code for a in answers] == [202] * REQUESTS
            assert [s.status_code for s in synchronous] == [200] * 40
            assert {s.json()["model"]["name"] for s in synchronous} == {"Knn_Classifier"}
            for answer in answers[:: REQUESTS // 20]:
                for _ in range(100):
                    result = (await client.get(answer.json()["status_url"])).json()
                    if result["status"] == "done":
                        break
                    await asyncio.sleep(0.1)
                assert result["status"] == "done"
            scrapes = [(await client.get("/metrics")).text for _ in range(6)]
        used = [p for p in processes if cpu_ticks(p) - before[p] > 10]
        assert len(used) == 2  # both processes served part of the load
        for text in scrapes:
            svm = re.search(r'streamml_records_accepted_total\{route="svm"\} (\S+)', text)
            assert svm is not None
            assert float(svm.group(1)) == REQUESTS
    finally:
        worker.stop()
        gateway.stop()
