"""The gateway app under uvicorn and under granian (a Rust HTTP server), on the same stream with the same
worker: accepted single-record requests per second, and the gateway process's CPU per request, under wrk
(16 connections, 10 s after a 2 s warm-up), the two servers alternated twice.

Usage (granian is not a streamml dependency; wrk is Debian's)::

    pip install granian && python benchmarks/server_choice.py

The recorded output is in results/server_choice.txt.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from streamml.bench import wrk
from streamml.bench.e2e_run import complete_records
from streamml.bench.endtoend import StreammlStack, bodies, streamml_body
from streamml.bench.usage import usage
from streamml.local.demo import local_demo_registry
from streamml.local.services import EmbeddedRedis, ManagedProcess, free_port, wait_until_healthy
from streamml.settings import DEFAULT_TRUSTED_TYPES

SECONDS = 10


def granian(stack: StreammlStack, root: Path) -> tuple[ManagedProcess, str]:
    """granian serving the same app factory, with the uvicorn gateway's environment."""
    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "granian"),
        *["--interface", "asgi", "--factory", "--host", "127.0.0.1", "--port", str(port)],
        *["--workers", "1", "--loop", "uvloop", "--log-level", "warning"],
        "streamml.local.processes:gateway_app",
    ]
    env = dict(stack.gateway.env or {}) | {"STREAMML_GATEWAY_PORT": str(port)}
    process = ManagedProcess("granian", argv, root / "granian.log", env).start()
    wait_until_healthy(f"http://127.0.0.1:{port}/health", process, timeout_s=60)
    return process, f"http://127.0.0.1:{port}/predict_stream?model=lightgbm"


def measure(stack: StreammlStack, url: str, pid: int, payloads: list[bytes], scratch: Path) -> str:
    wrk.run(url, payloads, connections=16, duration_s=2, scratch=scratch)
    before, cpu_before = asyncio.run(stack.accepted_requests(1)), usage(pid).cpu_s
    run = wrk.run(url, payloads, connections=16, duration_s=SECONDS, scratch=scratch)
    cpu = usage(pid).cpu_s - cpu_before
    accepted = asyncio.run(stack.accepted_requests(1)) - before
    return (
        f"{accepted / SECONDS:,.0f} accepted/s, gateway {cpu * 1000 / max(accepted, 1):.3f} ms CPU/request, "
        f"non-2xx {run.non_2xx}"
    )


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="streamml-servers-"))
    server = EmbeddedRedis(root / "redis").start()
    uri = local_demo_registry(root, rows=3000, experiment="servers", trusted_types=DEFAULT_TRUSTED_TYPES)
    stack = StreammlStack(root / "stack", server.url, uri, workers=1).start()
    other, other_url = granian(stack, root)
    payloads = bodies(complete_records(5000), 1, streamml_body)
    servers = [
        ("uvicorn", stack.predict_url("lightgbm"), stack.gateway.pid),
        ("granian", other_url, other.pid),
    ]
    try:
        for _ in range(2):
            for name, url, pid in servers:
                print(f"{name}: {measure(stack, url, pid, payloads, root / 'wrk')}", flush=True)
    finally:
        other.stop()
        stack.stop()
        server.stop()


if __name__ == "__main__":
    main()
