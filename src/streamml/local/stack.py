"""`streamml up`: the whole pipeline in one process tree, started in order and stopped cleanly.

Redis and MLflow are embedded unless ``REDIS_URL`` / ``MLFLOW_TRACKING_URI`` point elsewhere; the
demo models are trained if the registry lacks them; gateway, workers and producer run as child
processes in their own process groups (logs in ``<state dir>/logs``). Ctrl-C or SIGTERM stops the
producer first, then the gateway, lets the workers finish their batches, then stops MLflow and Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from streamml.local.processes import check_exposure
from streamml.local.services import (
    EmbeddedMlflow,
    EmbeddedRedis,
    ManagedProcess,
    find_redis_cli,
    free_port,
    wait_until_healthy,
)
from streamml.settings import DEFAULT_ROUTES, MLFLOW_URL_FILE, REDIS_URL_FILE, Settings

MONITOR_EVERY_S = 2.0
"""A status line this often when the output is a log (``--plain``, or not a terminal)."""
LIVE_EVERY_S = 1.0
"""The live panel's refresh."""
PROMETHEUS_CONFIG = (resources.files("streamml.local") / "prometheus.yml").read_text("utf-8")
"""deploy/prometheus.yml, shipped in the package so `streamml up` works from a wheel."""


class Stack:
    def __init__(self, settings: Settings, console: Console, *, train_rows: int = 20_000) -> None:
        self.settings = settings
        self.train_rows = train_rows
        self.console = console
        self.state = settings.state_dir
        self.children: list[ManagedProcess] = []
        self.redis: EmbeddedRedis | None = None
        self.mlflow: EmbeddedMlflow | None = None
        self._stop = threading.Event()

    def run(
        self, *, workers: int, rate: float, duration: float | None, plain: bool = False, serving: bool = False
    ) -> int:
        """Start everything and watch it until stopped. ``serving``: the routes' models come from an
        existing registry (``streamml serve``): nothing is trained or written to it, and it must be
        given (``MLFLOW_TRACKING_URI``). Otherwise the demo models are trained when the routes are the
        demo's and a version is missing. ``rate`` > 0 runs the producer."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self._stop.set())
        self.state.mkdir(parents=True, exist_ok=True)
        try:
            warning = check_exposure(self.settings)  # before starting anything: it may refuse
            if serving and not self.settings.mlflow.tracking_uri:
                raise RuntimeError(
                    "serving a registered model needs the registry that holds it: set MLFLOW_TRACKING_URI"
                )
            redis_url, redis_shown = self._start_redis()
            tracking_uri = self._start_mlflow()
            if not serving and self.settings.mlflow.routes == DEFAULT_ROUTES:
                self._ensure_models(tracking_uri)
            env = dict(os.environ) | {
                "REDIS_URL": redis_url,
                "MLFLOW_TRACKING_URI": tracking_uri,
                "STREAMML_STATE_DIR": str(self.state.resolve()),
                "STREAMML_MLFLOW_ROUTES": json.dumps(self.settings.mlflow.routes),
            }
            gateway_url = self._start_gateway(env)
            metrics_ports = [free_port() for _ in range(workers)]
            for index, port in enumerate(metrics_ports):
                self._child(f"worker-{index + 1}", ["worker", "--metrics-port", str(port)], env)
            targets = self._write_prometheus_targets(gateway_url, metrics_ports)
            if rate > 0:
                self._child(
                    "producer",
                    ["produce", "--rate", str(rate), "--url", gateway_url, "--quiet"],
                    env,
                )
            self._announce(redis_shown, tracking_uri, gateway_url, metrics_ports, targets, rate)
            if warning:
                self.console.print(f"[yellow]{warning}[/]")
            return self._monitor(duration, plain)
        except RuntimeError as exc:
            self.console.print(f"[red]cannot start the stack:[/] {exc}")
            return 1
        finally:
            self._shutdown()

    # -- start ---------------------------------------------------------------------------------

    def _start_redis(self) -> tuple[str, str]:
        if self.settings.redis.url:
            return self.settings.redis.url, _without_password(self.settings.redis.url)
        self.console.print("starting Redis ...")
        self.redis = EmbeddedRedis(
            self.state / "redis",
            port=self.settings.redis.port,
            appendfsync=self.settings.redis.appendfsync,
        ).start()
        _write_private(self.state / REDIS_URL_FILE, self.redis.url)
        return self.redis.url, self.redis.display_url

    def _start_mlflow(self) -> str:
        if self.settings.mlflow.tracking_uri:
            return self.settings.mlflow.tracking_uri
        self.console.print("starting MLflow server (about 10 s) ...")
        self.mlflow = EmbeddedMlflow(
            self.state / "mlflow", host=self.settings.mlflow.host, port=self.settings.mlflow.port
        ).start()
        _write_private(self.state / MLFLOW_URL_FILE, self.mlflow.url)
        return self.mlflow.url

    def _ensure_models(self, tracking_uri: str) -> None:
        from streamml.local.demo import train_demo_models, training_frame
        from streamml.models.training import missing_demo_models

        missing = missing_demo_models(tracking_uri)
        if not missing:
            return
        self.console.print(f"training demo models {', '.join(missing)} on synthetic data (about 30 s) ...")
        frame, source = training_frame(None, self.train_rows, 0)
        for model in train_demo_models(
            frame,
            tracking_uri=tracking_uri,
            experiment=self.settings.mlflow.experiment,
            trusted_types=self.settings.mlflow.trusted_types,
            source=source,
            models=missing,
        ):
            self.console.print(f"  {model.name} v{model.version}: holdout macro-F1 {model.macro_f1:.3f}")

    def _child(self, name: str, args: list[str], env: dict[str, str]) -> ManagedProcess:
        argv = [sys.executable, "-m", "streamml", *args]
        process = ManagedProcess(name, argv, self.state / "logs" / f"{name}.log", env).start()
        self.children.append(process)
        return process

    def _start_gateway(self, env: dict[str, str]) -> str:
        gateway = self.settings.gateway
        args = ["api", "--host", gateway.host, "--port", str(gateway.port)]
        self._child("gateway", [*args, "--insecure"] if gateway.insecure else args, env)
        url = f"http://{gateway.host}:{gateway.port}"
        wait_until_healthy(f"{url}/health", self.children[-1], cancelled=self._stop.is_set)
        return url

    def _write_prometheus_targets(self, gateway_url: str, metrics_ports: list[int]) -> Path:
        """deploy/prometheus.yml's target files for this stack, beside a copy of the configuration:
        ``prometheus --config.file=<state dir>/prometheus/prometheus.yml`` scrapes it."""
        folder = self.state / "prometheus"
        (folder / "targets").mkdir(parents=True, exist_ok=True)
        gateway = gateway_url.removeprefix("http://")
        workers = [f"127.0.0.1:{port}" for port in metrics_ports]
        (folder / "targets" / "gateway.json").write_text(json.dumps([{"targets": [gateway]}]) + "\n")
        (folder / "targets" / "workers.json").write_text(json.dumps([{"targets": workers}]) + "\n")
        (folder / "prometheus.yml").write_text(PROMETHEUS_CONFIG)
        return folder / "prometheus.yml"

    def _announce(
        self,
        redis_shown: str,
        tracking_uri: str,
        gateway_url: str,
        metrics_ports: list[int],
        prometheus_config: Path,
        rate: float,
    ) -> None:
        port = redis_shown.rsplit(":", 1)[-1].split("/")[0]
        password = self.state / "redis" / "redis.password"
        lines = [
            f"gateway      {gateway_url}   (docs: {gateway_url}/docs)",
            f"dashboard    {gateway_url}/dashboard",
            f"metrics      {gateway_url}/metrics, workers "
            + ", ".join(f"127.0.0.1:{p}/metrics" for p in metrics_ports),
            f"Prometheus   prometheus --config.file={prometheus_config}",
            f"MLflow       {tracking_uri}",
            f"Redis        {redis_shown}   (password in {password})",
            f"stream       {self.settings.stream.name}, group {self.settings.stream.group}, "
            f"{len(metrics_ports)} workers",
            f"predictions  {self.settings.predictions_csv()}",
            f"logs         {self.state / 'logs'}",
            f"producer     {f'{rate:g} records/s' if rate else 'off'}",
            "routes       " + ", ".join(f"{r} -> {uri}" for r, uri in self.settings.mlflow.routes.items()),
            "",
            *self._try_lines(gateway_url),
            f'     {find_redis_cli()} -p {port} -a "$(cat {password})" xlen {self.settings.stream.name}',
        ]
        self.console.print(Panel("\n".join(lines), title="streamml is up (Ctrl-C stops everything)"))

    def _try_lines(self, gateway_url: str) -> list[str]:
        """The first request to send: the demo's example, or a look at what a served model takes."""
        if self.settings.mlflow.routes == DEFAULT_ROUTES:
            return [
                f"try: curl -X POST '{gateway_url}/predict_stream?model=svm' -H 'Content-Type: "
                'application/json\' -d \'{"data": [{"Designation": 1.5, "Resource_Allocation": 1.7, '
                '"Sleep_Hours": 7}]}\''
            ]
        route = next(iter(self.settings.mlflow.routes))
        return [
            f"try: curl {gateway_url}/models    (each route's version and the columns it takes)",
            f"     curl -X POST '{gateway_url}/predict?model={route}' -H 'Content-Type: application/json' "
            "-d '{\"data\": [{...}]}'",
        ]

    # -- watch ---------------------------------------------------------------------------------

    def _monitor(self, duration: float | None, plain: bool) -> int:
        """The live panel (or a line per interval) until Ctrl-C, ``duration``, or a child's exit."""
        from streamml.local.live import watch

        def stop(elapsed_s: float) -> int | None:
            dead = [c for c in self.children if not c.alive()]
            if dead:
                self.console.print(f"[red]{dead[0].name} exited[/]; see {dead[0].log_path}")
                return 1
            if self._stop.is_set() or (duration is not None and elapsed_s >= duration):
                return 0
            return None

        every_s = MONITOR_EVERY_S if plain or not self.console.is_terminal else LIVE_EVERY_S
        return asyncio.run(watch(self.settings, self.console, plain=plain, every_s=every_s, stop=stop))

    # -- stop ----------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        if self.children:
            self.console.print("stopping ...")
        # Producer and gateway first (no new work), then workers finish and ack their batches.
        order = sorted(
            self.children,
            key=lambda c: (not c.name.startswith("producer"), c.name.startswith("worker")),
        )
        for child in order:
            child.stop(
                grace_s=self.settings.worker.shutdown_grace_s if child.name.startswith("worker") else 10
            )
        if self.mlflow:
            self.mlflow.stop()
        if self.redis:
            self.redis.stop()
        self.children.clear()


def _write_private(path: Path, text: str) -> None:
    path.write_text(text + "\n")
    path.chmod(0o600)


def _without_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}" if "@" in rest else url
