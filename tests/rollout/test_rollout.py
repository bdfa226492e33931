"""Challengers on a real stream: shadow scoring and canary answers through a real worker, Redis and a
real (sqlite) MLflow registry, with versions registered here under names of their own."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import orjson
import pytest
from mlflow import MlflowClient
from redis.asyncio import Redis
from scipy import stats

from streamml.local.demo import training_frame
from streamml.models.inference import records_to_frame
from streamml.models.refs import ModelRef
from streamml.models.registry import ModelRegistry
from streamml.models.shadow import wilson_interval
from streamml.models.traffic import in_canary
from streamml.models.training import FEATURES, build_pipelines, model_signature, pinned_requirements
from streamml.rollout.canary import CanaryStore, parse_share
from streamml.rollout.shadow_store import ShadowStore
from streamml.settings import DEFAULT_TRUSTED_TYPES, Settings
from streamml.stream.publisher import Publisher
from streamml.stream.topology import StreamTopology
from streamml.worker.loop import Worker
from tests.helpers import publisher_for, register, register_challenged


@pytest.fixture(scope="module")
def pair(tracking_uri: str) -> tuple[str, MlflowClient]:
    """LightGBM v1 (champion) and a KNN trained on other rows as v2 (challenger)."""
    name = register_challenged(tracking_uri, "Shadowed")
    return name, MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def registry_for(tracking_uri: str, name: str, tmp_path: Any) -> ModelRegistry:
    return ModelRegistry(
        tracking_uri,
        {"lc": f"models:/{name}@champion"},
        alias_refresh_s=0.0,
        trusted_types=DEFAULT_TRUSTED_TYPES,
        cache_dir=tmp_path,
        challenger_alias="challenger",
    )


def records(count: int, seed: int) -> list[dict[str, Any]]:
    frame = training_frame(None, count, seed)[0][FEATURES]
    return [{str(k): v for k, v in row.items() if v == v} for row in frame.to_dict(orient="records")]


def shadows(redis: Redis, settings: Settings) -> ShadowStore:
    return ShadowStore(redis, StreamTopology.of(settings.stream))


async def written_results(redis: Redis, settings: Settings) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The results stream's entries (id, fields)."""
    entries: Any = await redis.xrange(settings.stream.results)
    return list(entries)


async def send(publisher: Publisher, rows: list[dict[str, Any]], per_request: int, prefix: str) -> list[str]:
    requests = [
        (f"{prefix}{i}", "lc", rows[i * per_request : (i + 1) * per_request])
        for i in range(len(rows) // per_request)
    ]
    await publisher.publish_many(requests)
    return [request_id for request_id, _, _ in requests]


async def test_shadow_agreement_and_flips_equal_offline_predictions_of_both_versions(
    pair: tuple[str, MlflowClient], settings: Settings, redis: Redis, tmp_path: Any, tracking_uri: str
) -> None:
    name, _ = pair
    registry = registry_for(tracking_uri, name, tmp_path)
    rows = records(1200, seed=11)
    await send(publisher_for(settings, redis), rows, per_request=4, prefix="s")
    await Worker(redis, registry, settings, consumer="shadow").run(burst=True)

    [report] = await shadows(redis, settings).reports()

    frame = records_to_frame(rows, await registry.catalog.schema(ModelRef("lc", name, "1")))
    champion = [str(x) for x in (await registry.loader.load(ModelRef("lc", name, "1"))).call(frame)]
    challenger = [str(x) for x in (await registry.loader.load(ModelRef("lc", name, "2"))).call(frame)]
    flips: dict[str, dict[str, int]] = {}
    for (a, b), n in Counter(zip(champion, challenger, strict=True)).items():
        flips.setdefault(a, {})[b] = n
    agreed = sum(a == b for a, b in zip(champion, challenger, strict=True))
    assert report.compared == len(rows)
    assert report.flips == flips
    assert report.agreed == agreed
    assert 0 < agreed < len(rows)  # the two versions do disagree: the matrix is not just its diagonal
    shown = report.as_dict()
    assert shown["agreement_95"] == [round(x, 6) for x in wilson_interval(agreed, len(rows)) or ()]
    assert shown["champion_classes"] == dict(sorted(Counter(champion).items()))
    assert shown["challenger_classes"] == dict(sorted(Counter(challenger).items()))
    assert (report.errors, report.sampled_out, report.incompatible) == (0, 0, None)
    assert shown["challenger_predict_ms_per_batch"] > 0

    # Every written result carries the challenger's labels beside the champion's, never as the answer.
    written = await written_results(redis, settings)
    assert len(written) == len(rows) // 4
    for _, fields in written:
        assert fields[b"model_version"] == b"1"
        assert fields[b"challenger_version"] == b"2"
    answered = [label for _, f in written for label in orjson.loads(f[b"predictions"])]
    shadowed = [label for _, f in written for label in orjson.loads(f[b"challenger_predictions"])]
    assert answered == champion
    assert shadowed == challenger
    csv_rows = (settings.predictions_csv()).read_text().splitlines()
    assert csv_rows[0].endswith(",challenger_version,challenger_prediction")
    assert all(line.split(",")[-2] == "2" for line in csv_rows[1:])


async def test_sampling_bounds_the_shadow_and_a_moved_champion_starts_a_new_pair(
    pair: tuple[str, MlflowClient], settings: Settings, redis: Redis, tmp_path: Any, tracking_uri: str
) -> None:
    name, client = pair
    registry = registry_for(tracking_uri, name, tmp_path)
    settings.rollout.shadow_sample = 0.25
    publisher = publisher_for(settings, redis)
    await send(publisher, records(800, seed=12), per_request=1, prefix="a")
    await Worker(redis, registry, settings, consumer="sampled").run(burst=True)
    store = shadows(redis, settings)
    [first] = await store.reports()
    assert first.compared + first.sampled_out == 800
    low, high = stats.binom.interval(0.9999, 800, 0.25)
    assert low <= first.compared <= high

    version = register(tracking_uri, name, build_pipelines(3)["LightGBM_Classifier"], model_signature())
    client.set_registered_model_alias(name, "champion", version)
    try:
        await send(publisher, records(100, seed=13), per_request=1, prefix="b")
        await Worker(redis, registry, settings, consumer="sampled").run(burst=True)
    finally:
        client.set_registered_model_alias(name, "champion", "1")
    reports = {(r.pair.champion, r.pair.challenger): r for r in await store.reports()}
    assert set(reports) == {("1", "2"), (version, "2")}
    assert reports[("1", "2")] == first  # never mixed with the new pair
    assert reports[(version, "2")].compared + reports[(version, "2")].sampled_out == 100


async def test_canary_answers_a_deterministic_share_and_every_answer_names_its_version(
    pair: tuple[str, MlflowClient], settings: Settings, redis: Redis, tmp_path: Any, tracking_uri: str
) -> None:
    name, _ = pair
    registry = registry_for(tracking_uri, name, tmp_path)
    store = shadows(redis, settings)
    canaries = CanaryStore(redis, StreamTopology.of(settings.stream))
    await canaries.set("lc", parse_share("10%"))
    assert await canaries.shares() == {"lc": 0.1}
    request_ids = await send(publisher_for(settings, redis), records(2000, seed=14), 1, "c")
    await Worker(redis, registry, settings, consumer="canary").run(burst=True)

    written = {
        f[b"request_id"].decode(): (f[b"model_version"], f.get(b"canary"))
        for _, f in await written_results(redis, settings)
    }
    assert set(written) == set(request_ids)  # every request answered once
    by_challenger = {rid for rid, (version, _) in written.items() if version == b"2"}
    low, high = stats.binom.interval(0.9999, 2000, 0.1)
    assert low <= len(by_challenger) <= high
    # Chosen by request id alone, so a retried request (same id) gets the same model.
    assert by_challenger == {rid for rid in request_ids if in_canary(rid, 0.1)}
    assert all(flag == b"1" for rid, (_, flag) in written.items() if rid in by_challenger)
    assert all(flag is None for rid, (_, flag) in written.items() if rid not in by_challenger)
    [report] = await store.reports()
    assert report.compared == 2000 - len(by_challenger)  # canary answers are not shadowed again

    await canaries.set("lc", 0)
    assert await canaries.shares() == {}


async def test_a_challenger_that_cannot_load_or_cannot_stand_in_never_touches_the_answers(
    settings: Settings, redis: Redis, tmp_path: Any, tracking_uri: str
) -> None:
    name = f"Broken-{uuid.uuid4().hex[:6]}"
    register(tracking_uri, name, build_pipelines(1)["LightGBM_Classifier"], model_signature())
    # v2 is pickled: streamml refuses to load it. v3 knows two classes only.
    import mlflow

    with mlflow.start_run():
        mlflow.sklearn.log_model(
            build_pipelines(1)["Knn_Classifier"].fit(*_fit_rows()),
            name="model",
            signature=model_signature(),
            registered_model_name=name,
            serialization_format="cloudpickle",
            pip_requirements=pinned_requirements("Knn_Classifier"),
        )
    two_classes = register(
        tracking_uri, name, build_pipelines(3)["LightGBM_Classifier"], model_signature(), merge=True
    )
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    registry = registry_for(tracking_uri, name, tmp_path)
    store = shadows(redis, settings)
    canaries = CanaryStore(redis, StreamTopology.of(settings.stream))
    await canaries.set("lc", 0.5)
    publisher = publisher_for(settings, redis)
    await send(publisher, records(200, seed=15), per_request=2, prefix="x")
    stats_broken = await Worker(redis, registry, settings, consumer="broken").run(burst=True)

    client.set_registered_model_alias(name, "challenger", two_classes)
    await send(publisher, records(200, seed=16), per_request=2, prefix="y")
    stats_other = await Worker(redis, registry, settings, consumer="other").run(burst=True)

    for stats_ in (stats_broken, stats_other):
        assert (stats_.entries, stats_.dead_lettered, stats_.failed_attempts) == (100, 0, 0)
    written = await written_results(redis, settings)
    assert {f[b"model_version"] for _, f in written} == {b"1"}  # the canary fell back to the champion
    assert not any(b"challenger_version" in f for _, f in written)
    reports = {r.pair.challenger: r for r in await store.reports()}
    assert reports["2"].errors == 200
    assert "STREAMML_MLFLOW_ALLOW_PICKLE" in (reports["2"].last_error or "")
    assert reports[two_classes].compared == 0
    assert "output classes ['High', 'Low'] differ" in (reports[two_classes].incompatible or "")

    # Deleting the challenger's version takes its alias with it: no challenger, nothing to shadow.
    client.delete_model_version(name, two_classes)
    assert await registry.resolver.challenger("lc") is None
    await send(publisher, records(20, seed=18), per_request=2, prefix="z")
    assert (await Worker(redis, registry, settings, consumer="after").run(burst=True)).entries == 10
    assert {r.pair.challenger: r.compared for r in await store.reports()} == {"2": 0, two_classes: 0}


async def test_a_route_without_challenger_has_no_shadow_work(
    shared_registry: ModelRegistry, settings: Settings, redis: Redis
) -> None:
    await send(publisher_for(settings, redis), records(40, seed=17), per_request=4, prefix="n")
    registry = ModelRegistry(
        shared_registry.tracking_uri,
        {"lc": "models:/LightGBM_Classifier@champion"},
        trusted_types=DEFAULT_TRUSTED_TYPES,
        challenger_alias="challenger",
    )
    stats_ = await Worker(redis, registry, settings, consumer="plain").run(burst=True)
    assert stats_.records == 40
    assert await registry.resolver.challenger("lc") is None
    assert await shadows(redis, settings).reports() == []


def test_shares_are_read_as_percent_or_fraction_and_refused_outside_0_to_100() -> None:
    assert [parse_share(t) for t in ("10%", "0.1", "10 %", "0")] == [0.1, 0.1, 0.1, 0.0]
    for bad in ("110%", "-0.1", "ten"):
        with pytest.raises(ValueError, match=bad.replace("%", "")):
            parse_share(bad)


def _fit_rows() -> tuple[Any, Any]:
    from streamml.models.training import features_and_labels

    return features_and_labels(training_frame(None, 400, 3)[0])
