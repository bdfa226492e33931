"""Prometheus metrics from the gateway and a worker add up exactly to what was sent, refused, predicted
and dead-lettered — read over HTTP from ``/metrics`` on each."""

from __future__ import annotations

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from streamml.local.services import free_port
from streamml.models.registry import ModelRegistry
from streamml.settings import Settings
from streamml.worker.health import WorkerHealth, probes_and_metrics, serve
from streamml.worker.loop import Worker
from streamml.worker.worker_metrics import WorkerMetrics
from tests.helpers import gateway_client

RECORDS = [{"Designation": 2.0, "Mental Fatigue Score": 6.5}, {"Sleep Hours": 6.0}, {"Gender": "Male"}]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in values.items() if n == name and labels.items() <= dict(ls).items())


async def test_gateway_and_worker_metrics_add_up_to_what_happened(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    settings.gateway.max_backlog = 3  # the fourth request finds 3 entries queued: 429
    settings.gateway.backlog_check_s = 0
    settings.worker.max_deliveries = 1
    async with gateway_client(settings, redis, shared_registry) as client:
        statuses = [
            (await client.post(f"/predict_stream?model={route}", json={"data": RECORDS})).status_code
            for route in ("svm", "lightgbm", "lightgbm", "knn")
        ]
        invalid = await client.post("/predict_stream?model=knn", json={"data": [{"Designation": "high"}]})
        # A poison entry straight into the stream: it passes decoding and fails inside the model.
        poison = {
            "v": "1",
            "request_id": "poison",
            "route": "knn",
            "records": orjson.dumps([{"Designation": "x"}]),
        }
        await redis.xadd(settings.stream.name, poison)  # type: ignore[arg-type]

        port = free_port()
        metrics = WorkerMetrics()
        served = serve(probes_and_metrics(WorkerHealth(), metrics.registry), "127.0.0.1", port)
        stats = await Worker(redis, shared_registry, settings, consumer="counted", metrics=metrics).run(
            burst=True
        )

        gateway = samples((await client.get("/metrics")).text)
    async with httpx.AsyncClient() as http:
        worker = samples((await http.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text)
    served.shutdown()

    assert statuses == [202, 202, 202, 429]
    assert invalid.status_code == 422
    assert stats.records == 9
    # gateway
    assert total(gateway, "streamml_records_accepted_total") == 9
    assert total(gateway, "streamml_records_accepted_total", route="lightgbm") == 6
    assert total(gateway, "streamml_requests_accepted_total") == 3
    assert total(gateway, "streamml_requests_refused_total", reason="backlog") == 1
    assert total(gateway, "streamml_validation_failures_total", route="knn") == 1
    assert total(gateway, "streamml_http_requests_total", handler="/predict_stream", status="202") == 3
    assert total(gateway, "streamml_http_requests_total", handler="/predict_stream", status="429") == 1
    assert total(gateway, "streamml_http_request_duration_seconds_count", handler="/predict_stream") == 5
    assert total(gateway, "streamml_model_info", route="svm", model="SVC", version="1", alias="champion") == 1
    # worker
    assert total(worker, "streamml_records_predicted_total") == 9
    assert (
        total(worker, "streamml_records_predicted_total", route="lightgbm", model="LightGBM_Classifier") == 6
    )
    assert total(worker, "streamml_requests_predicted_total") == 3
    assert total(worker, "streamml_end_to_end_latency_seconds_count") == 3
    assert total(worker, "streamml_predictions_total") == 9  # every record's class counted once
    assert total(worker, "streamml_dead_letters_total", reason="prediction_failed") == 1
    assert total(worker, "streamml_dead_letters_total") == 1
    assert total(worker, "streamml_build_info", role="worker") == 1


async def test_metrics_never_show_request_ids_or_features(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    async with gateway_client(settings, redis, shared_registry) as client:
        accepted = (await client.post("/predict_stream?model=svm", json={"data": RECORDS})).json()
        await client.post("/predict_stream?model=no-such-route", json={"data": RECORDS})
        text = (await client.get("/metrics")).text
    assert accepted["request_id"] not in text
    assert "Mental Fatigue" not in text
    assert "no-such-route" not in text  # a client's route name is not a label value


async def test_metrics_need_a_key_when_keys_are_configured_and_a_read_only_one_will_do(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    settings.gateway.api_keys = '[{"name": "prometheus", "key": "sk-scrape", "read_only": true}]'
    async with gateway_client(settings, redis, shared_registry) as client:
        anonymous = await client.get("/metrics")
        scraped = await client.get("/metrics", headers={"Authorization": "Bearer sk-scrape"})
    assert anonymous.status_code == 401
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert "streamml_http_requests_total" in scraped.text
