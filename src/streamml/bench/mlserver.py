"""MLServer, the strongest peer measured: the same registered model through its MLflow runtime with
adaptive batching, in a virtual environment of its own (its pins conflict with streamml's), served
the Open Inference Protocol.

The environment is created once per set of pins under ``STREAMML_BENCH_PEERS_DIR`` (default
``~/.cache/streamml/peers``) and reused. MLServer 1.7.1's inference pool dies at start with uvloop 0.22
or later ("There is no current event loop"), so uvloop is pinned below it. The model's own libraries
are pinned to the versions installed here, so both systems load the same artifact with the same code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import psutil

from streamml.local.services import ManagedProcess, free_port, wait_until_healthy

VERSION = "1.7.1"
MAX_BATCH_SIZE = 64
MAX_BATCH_TIME_S = 0.005
"""Adaptive batching as MLServer's documentation shows it: up to 64 requests, waiting at most 5 ms."""
READY_TIMEOUT_S = 180.0
INSTALL_TIMEOUT_S = 1200.0
_MODEL_LIBRARIES = ("mlflow", "scikit-learn", "lightgbm", "skops")


def pins() -> list[str]:
    """What the peer's environment installs: MLServer, its MLflow runtime, uvloop below 0.22, and the
    model's libraries at the versions streamml runs."""
    ours = [f"{name}=={metadata.version(name)}" for name in _MODEL_LIBRARIES]
    return [f"mlserver=={VERSION}", f"mlserver-mlflow=={VERSION}", "uvloop==0.21.0", *ours]


def environment(peers_dir: Path | None = None) -> Path:
    """The peer's virtual environment (its directory), created and installed on first use."""
    root = peers_dir or Path(
        os.environ.get("STREAMML_BENCH_PEERS_DIR", Path.home() / ".cache" / "streamml" / "peers")
    )
    wanted = pins()
    digest = hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:12]
    venv = root / f"mlserver-{VERSION}-{digest}"
    done = venv / "streamml-installed.txt"
    if done.exists():
        return venv
    print(f"creating MLServer {VERSION}'s environment in {venv} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    log = venv / "install.log"
    with open(log, "wb") as out:
        installed = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", *wanted],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=INSTALL_TIMEOUT_S,
            check=False,
        )
    if installed.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"installing MLServer's environment failed ({log}): {tail}")
    done.write_text("\n".join(wanted) + "\n")
    return venv


def model_settings(name: str, model_dir: str) -> dict[str, Any]:
    """The model's ``model-settings.json``: MLServer's MLflow runtime with adaptive batching on."""
    return {
        "name": name,
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "parameters": {"uri": model_dir},
        "max_batch_size": MAX_BATCH_SIZE,
        "max_batch_time": MAX_BATCH_TIME_S,
    }


def v2_body(records: list[dict[str, Any]]) -> bytes:
    """An Open Inference Protocol request with one tensor per column, decoded to a DataFrame by
    MLServer's pandas codec (``content_type: pd``): numbers as FP64, text as BYTES. streamml's V2
    endpoint takes the same body."""
    inputs: list[dict[str, Any]] = []
    for column in records[0]:
        values = [record[column] for record in records]
        tensor: dict[str, Any] = {"name": column, "shape": [len(values), 1], "datatype": "FP64"}
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            tensor |= {"datatype": "BYTES", "parameters": {"content_type": "str"}}
        inputs.append(tensor | {"data": values})
    return orjson.dumps({"parameters": {"content_type": "pd"}, "inputs": inputs})


class MLServer:
    """``mlserver start`` on a local copy of the registered model, one inference worker, adaptive
    batching; the model is served under ``name`` (the benchmark uses streamml's route, so the identical
    request has the identical path)."""

    system = "MLServer"
    protocol = "v2"

    def __init__(self, root: Path, model_dir: str, *, name: str, venv: Path) -> None:
        self.root = root
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server_settings = {
            "http_port": self.port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "parallel_workers": 1,
            # its default is .metrics in the working directory: the caller's checkout
            "metrics_dir": str(root / "metrics"),
        }
        self.model_settings = model_settings(name, model_dir)
        root.mkdir(parents=True, exist_ok=True)
        (root / "settings.json").write_text(json.dumps(self.server_settings))
        (root / name).mkdir(exist_ok=True)
        (root / name / "model-settings.json").write_text(json.dumps(self.model_settings))
        env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(root)}
        argv = [str(venv / "bin" / "mlserver"), "start", str(root)]
        self.process = ManagedProcess("mlserver", argv, root / "mlserver.log", env)

    @property
    def pids(self) -> dict[str, int]:
        return {"mlserver": self.process.pid}

    @property
    def infer_url(self) -> str:
        return f"{self.url}/v2/models/{self.name}/infer"

    def start(self) -> MLServer:
        self.process.start()
        wait_until_healthy(f"{self.url}/v2/models/{self.name}/ready", self.process, timeout_s=READY_TIMEOUT_S)
        return self

    def stop(self) -> None:
        """Stop the whole process group and wait until every process in it has gone: MLServer's inference
        pool outlives its parent for a few seconds and would take CPU from the next measurement."""
        group = [self.process.pid]
        with contextlib.suppress(psutil.Error):
            group += [child.pid for child in psutil.Process(self.process.pid).children(recursive=True)]
        self.process.stop()
        deadline = time.monotonic() + 30.0
        while any(psutil.pid_exists(pid) for pid in group) and time.monotonic() < deadline:
            time.sleep(0.2)

    def settings(self) -> dict[str, str]:
        """Its version and settings, as the report states them."""
        return {
            "mlserver": VERSION,
            "max_batch_size": str(MAX_BATCH_SIZE),
            "max_batch_time_s": str(MAX_BATCH_TIME_S),
            "parallel_workers": "1",
            "protocol": "Open Inference Protocol (V2), JSON",
        }
