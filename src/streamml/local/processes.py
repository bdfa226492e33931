"""Process entry points: build collaborators from settings, run the gateway or a worker, handle signals.

The CLI calls these; they are also what `streamml up` runs as child processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from redis.asyncio import Redis

from streamml.errors import RedisUnreachable
from streamml.gateway.gateway_metrics import MULTIPROCESS_DIR
from streamml.models.refs import ModelRef
from streamml.models.registry import ModelRegistry
from streamml.settings import Settings
from streamml.stream.cluster_client import cluster_from_url
from streamml.stream.publisher import Publisher
from streamml.stream.wire import redis_from_url
from streamml.synthetic.producer import Submit
from streamml.worker.batch import WorkerStats
from streamml.worker.health import WorkerHealth, probes_and_metrics
from streamml.worker.health import serve as serve_probes
from streamml.worker.loop import Worker
from streamml.worker.worker_metrics import WorkerMetrics

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("mlflow", "urllib3", "alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def make_registry(
    settings: Settings, on_load: Callable[[ModelRef, float], None] | None = None
) -> ModelRegistry:
    cache = settings.state_dir / "model-cache"
    cache.mkdir(parents=True, exist_ok=True)
    return ModelRegistry(
        settings.tracking_uri(),
        settings.mlflow.routes,
        alias_refresh_s=settings.mlflow.alias_refresh_s,
        trusted_types=settings.mlflow.trusted_types,
        cache_dir=cache,
        fast_path=settings.mlflow.fast_path,
        compile_trees=settings.mlflow.compile_trees,
        on_load=on_load,
        challenger_alias=settings.rollout.challenger_alias,
        allow_code=settings.mlflow.allow_pickle,
        requirements=settings.mlflow.requirements,
    )


def make_redis(settings: Settings) -> Redis:
    """The client every process uses: redis-py's cluster client when ``STREAMML_REDIS_CLUSTER`` is
    set (typed as Redis: streamml sends only commands both clients have), starting from the URL's node
    and ``STREAMML_REDIS_SEEDS``. No connection is made here: the first command connects, and an
    unreachable Redis is then an error each caller's retry policy handles."""
    # Timeouts bound every call, so an unreachable Redis turns into a 503, never a hang.
    password = settings.redis_password()
    auth: dict[str, Any] = {"password": password} if password is not None else {}
    if settings.redis.cluster:
        cluster: Any = cluster_from_url(
            settings.redis_url(),
            settings.redis.seeds,
            socket_connect_timeout=2.0,
            socket_timeout=5.0,
            max_connections=settings.redis.max_connections,
            **auth,
        )
        return cast(Redis, cluster)
    return redis_from_url(
        settings.redis_url(),
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=10,
        retry_on_timeout=False,
        **auth,
    )


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def check_exposure(settings: Settings) -> str | None:
    """Refuse an open gateway on a network interface; returns a warning for an open loopback one."""
    gateway = settings.gateway
    has_keys = bool(gateway.api_keys or gateway.api_keys_file)
    if has_keys:
        return None
    if gateway.host not in LOOPBACK_HOSTS and not gateway.insecure:
        raise SystemExit(
            f"refusing to serve on {gateway.host} without API keys: set STREAMML_GATEWAY_API_KEYS (or "
            "STREAMML_GATEWAY_API_KEYS_FILE), or pass --insecure if the network in front of it is trusted"
        )
    return f"no API keys configured: anyone who can reach {gateway.host}:{gateway.port} may call the gateway"


def run_gateway(settings: Settings, *, log_level: str = "info", processes: int = 1) -> None:
    """Serve the gateway; with ``processes`` > 1, that many processes share the port (uvicorn's
    supervisor restarts one that dies). Nothing in a gateway process assumes it is alone: the rate
    limit, idempotency keys and counters live in Redis, each process has its own reply subscription,
    and ``/metrics`` sums every process's series."""
    import uvicorn

    warning = check_exposure(settings)
    if warning:
        log.warning(warning)
    options: dict[str, Any] = {
        "host": settings.gateway.host,
        "port": settings.gateway.port,
        "log_level": log_level,
        "access_log": False,  # a log line per request costs more than the request at high rates
        "timeout_graceful_shutdown": 5,
    }
    if processes > 1:
        # The children rebuild their settings from the environment: pass on what the CLI changed.
        os.environ["STREAMML_STATE_DIR"] = str(settings.state_dir)
        if settings.metrics:
            shared = Path(tempfile.mkdtemp(prefix="streamml-metrics-"))
            os.environ[MULTIPROCESS_DIR] = str(shared)
        uvicorn.run("streamml.local.processes:gateway_app", factory=True, workers=processes, **options)
        return
    app = gateway_app(settings)
    freeze_startup_heap()
    uvicorn.Server(uvicorn.Config(app, **options)).run()


def gateway_app(settings: Settings | None = None) -> FastAPI:
    """The gateway app with its Redis client and registry (uvicorn's factory in each process)."""
    from streamml.gateway.app import create_app

    settings = settings or Settings.load()
    return create_app(settings, make_publisher(settings), make_registry(settings))


def make_publisher(settings: Settings) -> Publisher:
    """The gateway's publisher on a client of the configured Redis."""
    return Publisher.of(make_redis(settings), settings.stream, cluster=settings.redis.cluster)


def freeze_startup_heap() -> None:
    """Move every object alive after start-up (mlflow, pandas, FastAPI: a large heap) out of the
    garbage collector's reach. Without this, each full collection walks them all and stalls every
    request in flight: it showed as the p99 of a busy gateway."""
    gc.collect()
    gc.freeze()


async def run_worker_async(
    settings: Settings, *, burst: bool = False, consumer: str | None = None
) -> WorkerStats:
    redis = make_redis(settings)
    metrics = WorkerMetrics(enabled=settings.metrics)
    health = WorkerHealth()
    if settings.metrics and settings.worker.metrics_port is not None:
        host, port = settings.worker.metrics_host, settings.worker.metrics_port
        serve_probes(probes_and_metrics(health, metrics.registry), host, port)
        log.info("metrics on http://%s:%d/metrics, probes on /ready and /health", host, port)

    def load_observed(ref: ModelRef, seconds: float) -> None:
        metrics.model_load.labels(ref.name, ref.version).observe(seconds)

    worker = Worker(
        redis,
        make_registry(settings, load_observed),
        settings,
        consumer=consumer,
        metrics=metrics,
        health=health,
    )
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if worker.stopping.is_set():  # a second signal: stop now, the batch stays pending
            log.warning("second %s: stopping at once", signal.Signals(signum).name)
            if task:
                task.cancel()
            return
        log.info("%s: finishing the current batch, then stopping", signal.Signals(signum).name)
        worker.stop()
        if task:
            loop.call_later(settings.worker.shutdown_grace_s, task.cancel)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await worker.run(burst=burst)
    finally:
        await redis.aclose()


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop where it is installed (as uvicorn picks it for the gateway): a worker spends much
    of a small batch in the event loop (socket writes, thread-pool wake-ups), which uvloop does in C.
    None (asyncio's own loop) elsewhere, e.g. on Windows."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


EXIT_REDIS_UNREACHABLE = 3
"""Exit status of a worker that gave up on Redis (``STREAMML_WORKER_REDIS_GIVE_UP_S``)."""


def run_worker(settings: Settings, *, burst: bool = False, consumer: str | None = None) -> WorkerStats:
    """Run a worker until it is stopped; exits with status 3 when it gives up on Redis."""
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(run_worker_async(settings, burst=burst, consumer=consumer))
    except asyncio.CancelledError:
        log.warning("worker stopped before its batch finished; it stays pending for another worker")
        return WorkerStats()
    except RedisUnreachable as exc:
        log.error("worker exits: %s", exc)
        raise SystemExit(EXIT_REDIS_UNREACHABLE) from exc


@contextlib.asynccontextmanager
async def direct_submission(settings: Settings) -> AsyncIterator[Submit]:
    """Submit to the stream without HTTP (``streamml produce --via redis``), through the service the
    gateway uses: the same validation, back-pressure and entry format."""
    from streamml.gateway.submission import BacklogGate, IdempotencyStore, Submission

    publisher = make_publisher(settings)
    gateway = settings.gateway
    submission = Submission(
        publisher,
        make_registry(settings),
        BacklogGate(publisher, gateway.max_backlog, gateway.backlog_check_s),
        IdempotencyStore(publisher.slots.redis, publisher.topology, gateway.idempotency_ttl_s),
    )

    async def submit(route: str, records: list[dict[str, Any]]) -> str:
        model = await submission.admit(route, None)
        return (await submission.submit(model, records, None)).request_id

    try:
        yield submit
    finally:
        await publisher.slots.redis.aclose()
