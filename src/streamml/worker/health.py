"""What a worker's ``/ready`` and ``/health`` answer on its metrics port, for an orchestrator's probes.

Ready: it has loaded every route's current model version (once after warm-up, then at every heartbeat)
and its last Redis call succeeded. A worker that is not ready keeps running and retrying: readiness is
what a rolling update waits for and what a disruption budget counts, not a reason to restart it.
Alive (``/health``): the process answers, which is all a liveness probe should ask — a worker waiting
for Redis is not helped by a restart.

The state is written by the worker's event loop and read by the HTTP server's thread: plain attribute
reads and writes of immutable values, so no lock is needed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import CollectorRegistry, make_wsgi_app

from streamml.monitoring.model_states import LOADED, RouteLoad
from streamml.worker.reconnect import Reconnect


class WorkerHealth:
    """A worker's readiness, as its loop last saw it."""

    def __init__(self) -> None:
        self.reconnect: Reconnect | None = None
        """The worker's outage policy: Redis is reachable when it is not counting an outage."""
        self.unloaded: dict[str, str] | None = None
        """Route -> why its current model is not loaded; None until the warm-up is done."""

    def observe(self, loads: Iterable[RouteLoad]) -> None:
        self.unloaded = {load.route: load.error or load.state for load in loads if load.state != LOADED}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """(ready, why): the answer of ``/ready``."""
        redis_down = self.reconnect is not None and self.reconnect.down_since is not None
        unloaded = self.unloaded
        ready = unloaded is not None and not unloaded and not redis_down
        return ready, {
            "ready": ready,
            "models": "loading" if unloaded is None else ({"not_loaded": unloaded} if unloaded else "loaded"),
            "redis": "unreachable" if redis_down else "reachable",
        }


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in flight never holds the process open at exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # probes every few seconds would fill the log


def probes_and_metrics(health: WorkerHealth, registry: CollectorRegistry) -> Callable[..., Iterable[bytes]]:
    """One WSGI app: ``/ready`` and ``/health`` from ``health``, anything else Prometheus' metrics."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/health":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b'{"status":"alive"}']
        if path == "/ready":
            ready, why = health.readiness()
            status = "200 OK" if ready else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [orjson.dumps(why)]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    return app


def serve(app: Callable[..., Iterable[bytes]], host: str, port: int) -> WSGIServer:
    """Serve ``app`` from a daemon thread of this process (as Prometheus' own ``start_http_server``)."""
    server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-and-probes", daemon=True).start()
    return server
