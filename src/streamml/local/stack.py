"""`streamml up`: the whole pipeline in one process tree, started in order and stopped cleanly.

Redis and MLflow are embedded unless ``REDIS_URL`` / ``MLFLOW_TRACKING_URI`` point elsewhere; the
demo models are trained if the registry lacks them; gateway, workers and producer run as child
processes in their own process groups (logs in ``<state dir>/logs``). Ctrl-C or SIGTERM stops the
producer first, then the gateway, lets the workers finish their batches, then stops MLflow and Redis.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.panel import Panel

from streamml.local.processes import check_exposure
from streamml.local.services import (
    EmbeddedMlflow,
    EmbeddedRedis,
    ManagedProcess,
    find_redis_cli,
    wait_until_healthy,
)
from streamml.settings import MLFLOW_URL_FILE, REDIS_URL_FILE, Settings

MONITOR_EVERY_S = 2.0


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

    def run(self, *, workers: int, rate: float, duration: float | None) -> int:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self._stop.set())
        self.state.mkdir(parents=True, exist_ok=True)
        try:
            warning = check_exposure(self.settings)  # before starting anything: it may refuse
            redis_url, redis_shown = self._start_redis()
            tracking_uri = self._start_mlflow()
            self._ensure_models(tracking_uri)
            env = dict(os.environ) | {
                "REDIS_URL": redis_url,
                "MLFLOW_TRACKING_URI": tracking_uri,
                "STREAMML_STATE_DIR": str(self.state.resolve()),
            }
            gateway_url = self._start_gateway(env)
            for index in range(workers):
                self._child(f"worker-{index + 1}", ["worker"], env)
            if rate > 0:
                self._child(
                    "producer",
                    ["produce", "--rate", str(rate), "--url", gateway_url, "--quiet"],
                    env,
                )
            self._announce(redis_shown, tracking_uri, gateway_url, workers, rate)
            if warning:
                self.console.print(f"[yellow]{warning}[/]")
            return self._monitor(duration)
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
        from streamml.local.demo import training_frame
        from streamml.models.training import missing_demo_models, train_and_register

        missing = missing_demo_models(tracking_uri)
        if not missing:
            return
        self.console.print(f"training demo models {', '.join(missing)} on synthetic data (about 30 s) ...")
        frame, source = training_frame(None, self.train_rows, 0)
        for model in train_and_register(
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

    def _announce(
        self, redis_shown: str, tracking_uri: str, gateway_url: str, workers: int, rate: float
    ) -> None:
        port = redis_shown.rsplit(":", 1)[-1].split("/")[0]
        lines = [
            f"gateway      {gateway_url}   (docs: {gateway_url}/docs)",
            f"MLflow       {tracking_uri}",
            f"Redis        {redis_shown}   (password in {self.state / 'redis' / 'redis.password'})",
            f"stream       {self.settings.streams.stream}, group {self.settings.streams.group}, "
            f"{workers} workers",
            f"predictions  {self.settings.predictions_csv()}",
            f"logs         {self.state / 'logs'}",
            f"producer     {f'{rate:g} records/s' if rate else 'off'}",
            "",
            f"try: curl -X POST '{gateway_url}/predict_stream?model=svm' -H 'Content-Type: application/json' "
            '-d \'{"data": [{"Designation": 1.5, "Resource_Allocation": 1.7, "Sleep_Hours": 7}]}\'',
            f'     {find_redis_cli()} -p {port} -a "$(cat {self.state / "redis" / "redis.password"})" xlen '
            f"{self.settings.streams.stream}",
        ]
        self.console.print(Panel("\n".join(lines), title="streamml is up (Ctrl-C stops everything)"))

    # -- watch ---------------------------------------------------------------------------------

    def _monitor(self, duration: float | None) -> int:
        from streamml.local.processes import make_redis
        from streamml.stream.broker import Broker

        started = time.monotonic()

        async def snapshot() -> dict[str, Any]:
            redis = make_redis(self.settings)
            try:
                report = await Broker(redis, self.settings.streams).status()
                last: Any = await redis.xrevrange(self.settings.streams.results_stream, count=1)
                report["last"] = {k.decode(): v.decode() for k, v in last[0][1].items()} if last else None
                return report
            finally:
                await redis.aclose()

        while not self._stop.wait(MONITOR_EVERY_S):
            dead = [c for c in self.children if not c.alive()]
            if dead:
                self.console.print(f"[red]{dead[0].name} exited[/]; see {dead[0].log_path}")
                return 1
            try:
                report = asyncio.run(snapshot())
            except Exception as exc:  # the monitor only reports; it never stops the stack
                self.console.print(f"[yellow]status unavailable: {exc}[/]")
                continue
            self.console.print(_status_line(report, time.monotonic() - started))
            if duration is not None and time.monotonic() - started >= duration:
                break
        return 0

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


def _status_line(report: dict[str, Any], elapsed: float) -> str:
    """One compact line per tick: what entered, what came out, what waits, and the latest result."""
    group = report["groups"][0] if report["groups"] else {"lag": 0, "pending": 0}
    line = (
        f"[dim]{elapsed:5.0f}s[/] stream {report['length']} · predicted {report['results_length']} · "
        f"lag {group['lag']} · pending {group['pending']} · dlq {report['dead_letters']}"
    )
    last = report.get("last")
    if last:
        labels = orjson.loads(last["predictions"])
        shown = ",".join(labels[:2]) + ("…" if len(labels) > 2 else "")
        line += (
            f" · {last['model_route']}→{last['model_name']} v{last['model_version']}: {shown} "
            f"({float(last['latency_ms']):.0f} ms)"
        )
    return line


def _write_private(path: Path, text: str) -> None:
    path.write_text(text + "\n")
    path.chmod(0o600)


def _without_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}" if "@" in rest else url
