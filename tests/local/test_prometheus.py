"""The shipped Prometheus configuration, proven with the real Prometheus: it scrapes a running gateway and
worker, the PromQL total of predicted records equals the records sent, and every query of the shipped
Grafana dashboard is valid PromQL over metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from streamml.local.services import ManagedProcess, free_port, wait_until_healthy
from streamml.settings import Settings
from tests.helpers import SEED_EXAMPLE, start_worker

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = shutil.which("prometheus")
StartGateway = Callable[..., tuple[str, Settings]]


def query(url: str, promql: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert answer["status"] == "success", (promql, answer)
    return list(answer["data"]["result"])


@pytest.mark.skipif(
    PROMETHEUS is None,
    reason="no prometheus binary on PATH (Debian package 'prometheus'; .ci/run installs it)",
)
def test_prometheus_scrapes_gateway_and_worker_with_the_shipped_config(
    start_gateway: StartGateway, tmp_path: Path, tracking_uri: str
) -> None:
    assert PROMETHEUS is not None
    url, settings = start_gateway()
    gateway_port = int(url.rsplit(":", 1)[1])
    worker_port = free_port()
    worker = start_worker(settings, tracking_uri, tmp_path / "worker.log", "--metrics-port", str(worker_port))

    # The shipped configuration, its targets files written as `streamml up` writes them; only the
    # scrape interval is shortened so the test does not wait 15 s per scrape.
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "gateway.json").write_text(
        json.dumps([{"targets": [f"127.0.0.1:{gateway_port}"]}])
    )
    (tmp_path / "targets" / "workers.json").write_text(
        json.dumps([{"targets": [f"127.0.0.1:{worker_port}"]}])
    )
    prometheus_port = free_port()
    prometheus = ManagedProcess(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        tmp_path / "prometheus.log",
    ).start()
    prom = f"http://127.0.0.1:{prometheus_port}"
    try:
        wait_until_healthy(f"{prom}/-/ready", prometheus, timeout_s=60)
        sent = 0
        for route in ("svm", "knn", "lightgbm") * 4:
            response = httpx.post(f"{url}/predict_stream", params={"model": route}, json=SEED_EXAMPLE)
            assert response.status_code == 202, response.text
            sent += len(SEED_EXAMPLE["data"])

        dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "streamml.json").read_text())
        used = {
            name
            for panel in dashboard["panels"]
            for target in panel["targets"]
            for name in re.findall(r"streamml_[a-z_]+", target["expr"])
        }
        deadline = time.monotonic() + 90
        predicted = accepted = -1.0
        missing = used
        while time.monotonic() < deadline:
            result = query(prom, "sum(streamml_records_predicted_total)")
            predicted = float(result[0]["value"][1]) if result else -1.0
            result = query(prom, "sum(streamml_records_accepted_total)")
            accepted = float(result[0]["value"][1]) if result else -1.0
            names = set(httpx.get(f"{prom}/api/v1/label/__name__/values", timeout=5).json()["data"])
            missing = used - names  # series appear as scrapes happen (consumers once the worker reads)
            if predicted == sent and accepted == sent and not missing:
                break
            time.sleep(1)
        assert (accepted, predicted) == (sent, sent), worker.log_tail()
        assert not missing, f"the Grafana dashboard uses metrics nothing exports: {missing}"

        targets = httpx.get(f"{prom}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        assert sorted((t["labels"]["job"], t["health"]) for t in targets) == [
            ("streamml-gateway", "up"),
            ("streamml-worker", "up"),
        ]
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                query(prom, target["expr"])  # valid PromQL
    finally:
        prometheus.stop()
        worker.stop()
