"""End-to-end benchmarks through the gateway, side by side with `mlflow models serve` on the same model,
the same records and the same load generator (scenarios 2-4 and the steady-memory run).

For streamml a request counts once its prediction is written: the gateway stamps ``accepted_ms`` on the
stream entry, the worker stamps the moment it hands the batch to Redis (after the CSV rows are written)
and puts the difference in the results stream's ``latency_ms``. Throughput runs from the first request
sent to the last prediction written. For `mlflow models serve` the prediction is in the response, so a
request counts when it is answered.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson
from redis.asyncio import Redis

from streamml import keys
from streamml.bench import loadgen, wrk
from streamml.bench.mlserver import v2_body
from streamml.bench.usage import Meter, usage
from streamml.local.services import ManagedProcess, free_port, wait_until_healthy
from streamml.pacing import percentiles

READY_TIMEOUT_S = 90.0
RESULT_TTL_S = 3600
"""How long the benchmarked gateway keeps each result document (the default)."""
WRITTEN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Shape:
    """One scenario: how many records per request and how the load is offered."""

    key: str
    """Stable identifier the report looks the scenario up by."""
    name: str
    records_per_request: int
    concurrency: int = 0
    """Closed loop with this many clients (0: open loop at ``rate``)."""
    rate: float = 0.0
    """Open loop: requests per second."""
    synchronous: bool = False
    """streamml: ``POST /predict`` (answers with the predictions), not ``POST /predict_stream``."""
    identical: str | None = None
    """The protocol of a request every system gets identically (``invocations``: MLflow's scoring
    protocol, which streamml serves on its default route; ``v2``: Open Inference Protocol infer on the
    route's name), each measured as request -> answer with the predictions; only the peers that speak it
    run the scenario. None: streamml gets its own ``/predict_stream`` (or ``/predict``), each peer its
    own protocol."""


@dataclass
class Outcome:
    key: str
    scenario: str
    system: str
    requests: int
    records: int
    failed: int
    seconds: float
    requests_per_s: float
    records_per_s: float
    latency_ms: dict[str, float | None]
    latency_measured: str
    load_generator_cores: float
    processes: dict[str, dict[str, float]] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    load_generator: str = "aiohttp"
    """``wrk`` (C) for the closed loops where it is installed, else the asyncio/aiohttp generator."""
    client_latency_ms: dict[str, float | None] = field(default_factory=dict)
    """What the load generator saw: request sent -> response (p50, p99)."""

    @property
    def cpu_ms_per_request(self) -> dict[str, float]:
        """Each measured process's CPU time per request answered (or written), in milliseconds."""
        return {
            name: round(v["cpu_s"] * 1000 / max(self.requests, 1), 3) for name, v in self.processes.items()
        }

    @property
    def cpu_us_per_record(self) -> dict[str, float]:
        return {name: round(v["cpu_s"] * 1e6 / max(self.records, 1), 2) for name, v in self.processes.items()}


def _path() -> str:
    """This interpreter's bin first (its `mlflow`), then the caller's PATH (mlflow runs `bash`)."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


class StreammlStack:
    """A gateway and ``workers`` worker processes on a stream of their own."""

    def __init__(
        self,
        root: Path,
        redis_url: str,
        tracking_uri: str,
        *,
        workers: int,
        metrics: bool = True,
        default_route: str = "lightgbm",
    ) -> None:
        self.root = root
        self.redis_url = redis_url
        self.stream = f"bench-e2e-{uuid.uuid4().hex[:8]}"
        self.results_stream = f"{self.stream}:predictions"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            "REDIS_URL": redis_url,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "STREAMML_STATE_DIR": str(root / "state"),
            "STREAMML_STREAM_NAME": self.stream,
            "STREAMML_STREAM_RESULTS": self.results_stream,
            # Every result of a run must still be in the results stream when it is read back.
            "STREAMML_STREAM_RESULTS_MAXLEN": "5000000",
            "STREAMML_STREAM_RESULT_TTL_S": str(RESULT_TTL_S),
            "STREAMML_METRICS": "true" if metrics else "false",
            # One client sends everything here; the per-client limit is for the internet, not for this.
            "STREAMML_GATEWAY_RATE_LIMIT_PER_S": "0",
            # POST /invocations (MLflow's protocol) serves this route: the identical-request scenario.
            "STREAMML_GATEWAY_DEFAULT_ROUTE": default_route,
            "PATH": _path(),
        }
        cli = [sys.executable, "-m", "streamml"]
        self.gateway = ManagedProcess(
            "gateway",
            [*cli, "api", "--port", str(self.port), "--log-level", "warning"],
            root / "gateway.log",
            env,
        )
        self.workers = [
            ManagedProcess(
                f"worker-{i + 1}", [*cli, "worker", "--log-level", "warning"], root / f"w{i}.log", env
            )
            for i in range(workers)
        ]

    @property
    def pids(self) -> dict[str, int]:
        return {p.name: p.pid for p in [self.gateway, *self.workers]}

    def start(self) -> StreammlStack:
        for process in [self.gateway, *self.workers]:
            process.start()
        wait_until_healthy(f"{self.url}/health", self.gateway, timeout_s=READY_TIMEOUT_S)
        return self

    def stop(self) -> None:
        for process in [self.gateway, *self.workers]:
            process.stop()

    def predict_url(self, route: str, *, synchronous: bool = False) -> str:
        return f"{self.url}/{'predict' if synchronous else 'predict_stream'}?model={route}"

    def identical_url(self, route: str, protocol: str) -> str:
        """Where the identical request of ``protocol`` (see :attr:`Shape.identical`) goes."""
        path = "/invocations" if protocol == "invocations" else f"/v2/models/{route}/infer"
        return self.url + path

    async def last_result_id(self) -> str:
        async with Redis.from_url(self.redis_url) as redis:
            last: Any = await redis.xrevrange(self.results_stream, count=1)
            return last[0][0].decode() if last else "0-0"

    async def accepted_requests(self, records_per_request: int) -> int:
        """Requests the gateway has accepted on this stack's stream so far (its counter, in records)."""
        async with Redis.from_url(self.redis_url) as redis:
            counted: Any = await redis.hvals(keys.counter_keys(self.stream).accepted)
        return sum(int(v) for v in counted) // records_per_request

    async def written_count(self, count: int, after: str) -> tuple[list[float], str, float]:
        """Wait until ``count`` results follow ``after`` in the results stream; returns their latencies
        (acceptance to written, ms), the last result's id and its time (epoch ms)."""
        latencies: list[float] = []
        last_id, last_written = after, 0.0
        deadline = time.monotonic() + WRITTEN_TIMEOUT_S
        async with Redis.from_url(self.redis_url) as redis:
            while len(latencies) < count and time.monotonic() < deadline:
                entries: Any = await redis.xrange(self.results_stream, min=f"({last_id}", count=10_000)
                if not entries:
                    await asyncio.sleep(0.1)
                    continue
                for entry_id, fields in entries:
                    latencies.append(float(fields[b"latency_ms"]))
                    last_written = max(last_written, float(entry_id.split(b"-")[0]))
                last_id = entries[-1][0].decode()
        if len(latencies) < count:
            raise RuntimeError(f"{count - len(latencies)} accepted requests have no prediction written")
        return latencies, last_id, last_written

    async def written(self, request_ids: list[str], after: str) -> tuple[list[float], float]:
        """Wait until every request's prediction is in the results stream; returns the latencies
        (acceptance to written, ms) and the time of the last write (epoch ms, from the entry id)."""
        wanted = set(request_ids)
        latencies: list[float] = []
        last_written = 0.0
        deadline = time.monotonic() + WRITTEN_TIMEOUT_S
        async with Redis.from_url(self.redis_url) as redis:
            while wanted and time.monotonic() < deadline:
                entries: Any = await redis.xrange(self.results_stream, min=f"({after}", count=10_000)
                if not entries:
                    await asyncio.sleep(0.2)
                    continue
                for entry_id, fields in entries:
                    request_id = fields[b"request_id"].decode()
                    if request_id in wanted:
                        wanted.discard(request_id)
                        latencies.append(float(fields[b"latency_ms"]))
                        last_written = max(last_written, float(entry_id.split(b"-")[0]))
                after = entries[-1][0].decode()
        if wanted:
            raise RuntimeError(f"{len(wanted)} accepted requests have no prediction written")
        return latencies, last_written


class Peer(Protocol):
    """A system streamml is measured against, answering each request with its predictions."""

    system: str
    protocol: str
    """The protocol it is measured with (``invocations`` or ``v2``), see :attr:`Shape.identical`."""
    root: Path

    @property
    def pids(self) -> dict[str, int]: ...

    @property
    def infer_url(self) -> str: ...

    def settings(self) -> dict[str, str]:
        """Its version and settings, as the report states them."""
        ...

    def stop(self) -> None: ...


class MlflowServe:
    """`mlflow models serve` on a local copy of the registered model, ``workers`` uvicorn workers."""

    system = "mlflow models serve"
    protocol = "invocations"

    def __init__(self, root: Path, model_dir: str, *, workers: int) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            *[sys.executable, "-m", "mlflow", "models", "serve"],
            *["-m", model_dir, "-p", str(self.port), "-h", "127.0.0.1"],
            *["--env-manager", "local", "-w", str(workers)],
        ]
        env = {"PATH": _path(), "HOME": str(root)}
        self.process = ManagedProcess("mlflow-serve", argv, root / "mlflow-serve.log", env)
        self.workers = workers

    def settings(self) -> dict[str, str]:
        return {"mlflow": metadata.version("mlflow"), "workers": str(self.workers), "env_manager": "local"}

    @property
    def pids(self) -> dict[str, int]:
        return {"mlflow-serve": self.process.pid}

    @property
    def infer_url(self) -> str:
        return f"{self.url}/invocations"

    def start(self) -> MlflowServe:
        self.process.start()
        wait_until_healthy(f"{self.url}/ping", self.process, timeout_s=READY_TIMEOUT_S)
        return self

    def stop(self) -> None:
        self.process.stop()


def streamml_body(records: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"data": records})


def mlflow_body(records: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"dataframe_records": records})


BODIES: dict[str, Callable[[list[dict[str, Any]]], bytes]] = {"invocations": mlflow_body, "v2": v2_body}
"""Each protocol's request body for a list of records."""


def bodies(
    records: list[dict[str, Any]], per_request: int, encode: Callable[[list[Any]], bytes]
) -> list[bytes]:
    return [
        encode(records[i : i + per_request]) for i in range(0, len(records) - per_request + 1, per_request)
    ]


async def _load(
    url: str, payloads: list[bytes], shape: Shape, duration_s: float, expect: int, collect_ids: bool
) -> loadgen.LoadResult:
    if shape.concurrency:
        return await loadgen.closed_loop(
            url,
            payloads,
            concurrency=shape.concurrency,
            duration_s=duration_s,
            expect=expect,
            collect_ids=collect_ids,
        )
    return await loadgen.open_loop(
        url, payloads, rate=shape.rate, duration_s=duration_s, expect=expect, collect_ids=collect_ids
    )


async def run_streamml(
    stack: StreammlStack, route: str, records: list[dict[str, Any]], shape: Shape, duration_s: float
) -> Outcome:
    if shape.identical:
        url, encode = stack.identical_url(route, shape.identical), BODIES[shape.identical]
        return await run_answered("streamml", url, stack.pids, stack.root, records, shape, duration_s, encode)
    payloads = bodies(records, shape.records_per_request, streamml_body)
    url = stack.predict_url(route, synchronous=shape.synchronous)
    if shape.concurrency and wrk.available():
        return await _streamml_with_wrk(stack, url, payloads, shape, duration_s)
    expect = 200 if shape.synchronous else 202
    before_warm_up = await stack.last_result_id()
    warm_up = await _load(url, payloads, shape, min(2.0, duration_s), expect, True)
    await stack.written(warm_up.request_ids, before_warm_up)  # start measuring with an empty backlog
    after = await stack.last_result_id()
    meter = Meter(stack.pids)
    meter.start()
    load = await _load(url, payloads, shape, duration_s, expect, True)
    latencies, last_written_ms = await stack.written(load.request_ids, after)
    processes = meter.stop()
    seconds = max((last_written_ms - load.first_sent_ms) / 1000.0, load.seconds)
    return _outcome(
        shape,
        "streamml",
        requests=len(latencies),
        seconds=seconds,
        latency_ms=percentiles(latencies),
        measured="gateway acceptance -> prediction written",
        processes=processes,
        load=_aiohttp_load(load),
    )


async def _streamml_with_wrk(
    stack: StreammlStack, url: str, payloads: list[bytes], shape: Shape, duration_s: float
) -> Outcome:
    """A closed loop under wrk. wrk cannot collect request ids, so a run counts what the gateway
    accepted (its counter) and waits for that many results after the run's first result id."""
    scratch, per_request = stack.root / "wrk", shape.records_per_request
    after = await stack.last_result_id()
    before = await stack.accepted_requests(per_request)
    warm_up = min(2.0, duration_s)
    await asyncio.to_thread(
        wrk.run, url, payloads, connections=shape.concurrency, duration_s=warm_up, scratch=scratch
    )
    warmed = await stack.accepted_requests(per_request) - before
    _, after, _ = await stack.written_count(warmed, after)  # start measuring with an empty backlog
    accepted_before = await stack.accepted_requests(per_request)
    meter = Meter(stack.pids)
    meter.start()
    run = await asyncio.to_thread(
        wrk.run, url, payloads, connections=shape.concurrency, duration_s=duration_s, scratch=scratch
    )
    requests = await stack.accepted_requests(shape.records_per_request) - accepted_before
    latencies, _, last_written_ms = await stack.written_count(requests, after)
    processes = meter.stop()
    seconds = max((last_written_ms - run.started_ms) / 1000.0, run.seconds)
    return _outcome(
        shape,
        "streamml",
        requests=requests,
        seconds=seconds,
        latency_ms=percentiles(latencies),
        measured="gateway acceptance -> prediction written",
        processes=processes,
        load=_wrk_load(run),
    )


def runs(peer: Peer, shape: Shape) -> bool:
    """Whether ``peer`` takes part in ``shape``: its own protocol, or the identical request if it
    speaks that one."""
    return shape.identical in (None, peer.protocol)


async def run_peer(peer: Peer, records: list[dict[str, Any]], shape: Shape, duration_s: float) -> Outcome:
    encode = BODIES[peer.protocol]
    return await run_answered(
        peer.system, peer.infer_url, peer.pids, peer.root, records, shape, duration_s, encode
    )


async def run_answered(
    system: str,
    url: str,
    pids: dict[str, int],
    root: Path,
    records: list[dict[str, Any]],
    shape: Shape,
    duration_s: float,
    encode: Callable[[list[dict[str, Any]]], bytes],
) -> Outcome:
    """A system whose answer is the prediction, measured from the client: answers with a 2xx per
    second, request -> response latency; bodies made by ``encode``."""
    payloads = bodies(records, shape.records_per_request, encode)
    if shape.concurrency and wrk.available():
        scratch, warm_up = root / "wrk", min(2.0, duration_s)
        await asyncio.to_thread(
            wrk.run, url, payloads, connections=shape.concurrency, duration_s=warm_up, scratch=scratch
        )
        meter = Meter(pids)
        meter.start()
        run = await asyncio.to_thread(
            wrk.run, url, payloads, connections=shape.concurrency, duration_s=duration_s, scratch=scratch
        )
        processes = meter.stop()
        return _outcome(
            shape,
            system,
            requests=run.ok,
            seconds=run.seconds,
            latency_ms={
                "p50": run.latency_ms.get("p50"),
                "p95": None,
                "p99": run.latency_ms.get("p99"),
                "max": None,
            },
            measured="client (wrk): request -> response",
            processes=processes,
            load=_wrk_load(run),
        )
    await _load(url, payloads, shape, min(2.0, duration_s), 200, False)
    meter = Meter(pids)
    meter.start()
    load = await _load(url, payloads, shape, duration_s, 200, False)
    processes = meter.stop()
    return _outcome(
        shape,
        system,
        requests=len(load.response_ms),
        seconds=load.seconds,
        latency_ms=percentiles(load.response_ms),
        measured="client: request -> response",
        processes=processes,
        load=_aiohttp_load(load),
    )


@dataclass(frozen=True)
class LoadSummary:
    """What the load generator says of a run, whichever generator it was."""

    name: str
    failed: int
    cores: float
    statuses: dict[str, int]
    latency_ms: dict[str, float | None]
    """Request sent -> response, as the generator saw it."""


def _wrk_load(run: wrk.WrkRun) -> LoadSummary:
    return LoadSummary(
        "wrk",
        run.non_2xx,
        round(run.cpu_s / run.seconds, 3),
        {"2xx": run.ok, "other": run.non_2xx},
        {"p50": run.latency_ms.get("p50"), "p99": run.latency_ms.get("p99")},
    )


def _aiohttp_load(load: loadgen.LoadResult) -> LoadSummary:
    statuses = {str(k): v for k, v in sorted(load.statuses.items())} | dict(load.errors)
    cores = round(load.cpu_s / load.seconds, 2) if load.seconds else 0.0
    seen = percentiles(load.response_ms)
    return LoadSummary("aiohttp", load.failed, cores, statuses, {"p50": seen["p50"], "p99": seen["p99"]})


def _outcome(
    shape: Shape,
    system: str,
    *,
    requests: int,
    seconds: float,
    latency_ms: dict[str, float | None],
    measured: str,
    processes: dict[str, dict[str, float]],
    load: LoadSummary,
) -> Outcome:
    return Outcome(
        key=shape.key,
        scenario=shape.name,
        system=system,
        requests=requests,
        records=requests * shape.records_per_request,
        failed=load.failed,
        seconds=round(seconds, 2),
        requests_per_s=round(requests / seconds, 1),
        records_per_s=round(requests * shape.records_per_request / seconds, 1),
        latency_ms=latency_ms,
        latency_measured=measured,
        load_generator_cores=load.cores,
        processes=processes,
        statuses=load.statuses,
        load_generator=load.name,
        client_latency_ms=load.latency_ms,
    )


async def soak(
    stack: StreammlStack,
    route: str,
    records: list[dict[str, Any]],
    rate: float,
    duration_s: float,
    every_s: float,
) -> dict[str, Any]:
    """Constant open-loop load for ``duration_s``; RSS of every process sampled every ``every_s``."""
    payloads = bodies(records, 1, streamml_body)
    samples: list[dict[str, float]] = []
    redis = Redis.from_url(stack.redis_url)

    async def row(t_s: float) -> dict[str, float]:
        memory: Any = await redis.info("memory")
        values = {"t_s": round(t_s, 1)} | {n: round(usage(p).rss_mb, 2) for n, p in stack.pids.items()}
        return values | {"redis_used_memory": round(memory["used_memory"] / 2**20, 2)}

    async def sample() -> None:
        started = time.monotonic()
        while True:
            samples.append(await row(time.monotonic() - started))
            await asyncio.sleep(every_s)

    sampler = asyncio.create_task(sample())
    dashboard = DashboardWatch(f"{stack.url}/dashboard/events")
    watcher = asyncio.create_task(dashboard.run())
    load = await loadgen.open_loop(
        stack.predict_url(route), payloads, rate=rate, duration_s=duration_s, expect=202
    )
    sampler.cancel()
    watcher.cancel()
    [stopped] = await asyncio.gather(watcher, return_exceptions=True)
    if not isinstance(stopped, asyncio.CancelledError):  # it ended by itself: the run did not hold it open
        raise RuntimeError(f"the dashboard's event stream ended during the run: {stopped!r}")
    samples.append(await row(load.seconds))
    await redis.aclose()
    warm_s = min(60.0, duration_s / 5)
    warm = next(sample for sample in samples if sample["t_s"] >= warm_s)
    return {
        "rate": rate,
        "seconds": round(load.seconds, 1),
        "sent": load.sent,
        "accepted": load.ok,
        "every_s": every_s,
        "warm_s": warm_s,
        "samples": samples,
        "rss_warm_end_mb": {name: [warm[name], samples[-1][name]] for name in stack.pids},
        "dashboard_events": dashboard.events,
    }


class DashboardWatch:
    """The live dashboard open for a whole run, as a browser holds it: its event stream, read."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events = 0

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session, session.get(self.url) as response:
            response.raise_for_status()
            async for line in response.content:
                self.events += line.startswith(b"data:")
