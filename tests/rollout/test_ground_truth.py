"""Ground truth joined with what the workers answered: confusion matrices equal to those computed offline,
feedback counted once, unmatched ids reported, wrong label types refused, McNemar's test as scipy has it,
and the promotion rule that reads it. Against a real Redis, registry, gateway and worker."""

from __future__ import annotations

import asyncio
import itertools
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from mlflow import MlflowClient
from redis.asyncio import Redis
from scipy.stats import binomtest

from streamml.models.dispatch import Scored, ShadowLabels
from streamml.models.refs import ModelRef
from streamml.models.registry import ModelRegistry
from streamml.rollout.ground_truth import Feedback, FeedbackStore, challenger_is_better, stage_answers
from streamml.rows import Rows
from streamml.settings import DEFAULT_TRUSTED_TYPES, Settings
from streamml.stream.entry import Entry
from streamml.stream.topology import StreamTopology
from streamml.synthetic.producer import record_stream
from streamml.synthetic.profile import Profile
from tests.helpers import drain, gateway_client, process_env, publisher_for, register_challenged


async def test_feedback_gives_the_confusion_matrix_computed_offline_from_the_predictions_and_labels(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    records = [r for r, _ in zip(record_stream(Profile.load(), seed=5), range(2000), strict=False)]
    async with gateway_client(settings, redis, shared_registry) as client:
        ids = []
        for start in range(0, 2000, 100):
            response = await client.post(
                "/predict_stream?model=svm", json={"data": records[start : start + 100]}
            )
            ids.append(response.json()["request_id"])
        await drain(settings, redis, shared_registry)
        predicted = {rid: (await client.get(f"/predictions/{rid}")).json()["predictions"] for rid in ids}
        classes = sorted({label for labels in predicted.values() for label in labels})
        rng = random.Random(3)
        feedback: list[dict[str, Any]] = []
        truth: Counter[tuple[str, str]] = Counter()
        for rid, labels in itertools.islice(predicted.items(), 15):  # 1,500 of the 2,000 records
            for index, label in enumerate(labels):
                true = label if rng.random() < 0.8 else rng.choice([c for c in classes if c != label])
                feedback.append({"request_id": rid, "record_index": index, "label": true})
                truth[(true, label)] += 1

        sent = await client.post("/feedback", json={"feedback": feedback})
        assert sent.status_code == 200, sent.text
        assert sent.json() | {"unmatched_records": []} == {
            "received": 1500,
            "recorded": 1500,
            "repeated": 0,
            "unmatched": 0,
            "unmatched_records": [],
        }
        again = (await client.post("/feedback", json={"feedback": feedback[:10]})).json()
        assert (again["recorded"], again["repeated"]) == (0, 10)  # the same feedback twice counts once

        report = (await client.get("/accuracy?route=svm")).json()
    [version] = report["versions"]
    assert version["version"] == "1"
    assert version["route_predicted"] == 2000  # beside the 1,500 with feedback
    for summary in (version["total"], version["window"]):
        assert summary["records"] == 1500
        confusion = {(c["label"], c["predicted"]): c["records"] for c in summary["confusion"]}
        assert confusion == dict(truth)
        assert summary["accuracy"] == pytest.approx(sum(n for (t, p), n in truth.items() if t == p) / 1500)
    for label in classes:
        hits = truth[(label, label)]
        predicted_as = sum(n for (_, p), n in truth.items() if p == label)
        assert version["total"]["classes"][label]["precision"] == pytest.approx(hits / predicted_as)


async def test_unknown_ids_are_listed_and_a_label_of_the_wrong_type_is_refused_naming_it(
    settings: Settings, redis: Redis, shared_registry: ModelRegistry
) -> None:
    async with gateway_client(settings, redis, shared_registry) as client:
        rid = (await client.post("/predict_stream?model=knn", json={"data": [{"Designation": 2.0}]})).json()[
            "request_id"
        ]
        await drain(settings, redis, shared_registry)
        unmatched = await client.post(
            "/feedback",
            json={
                "feedback": [
                    {"request_id": "0" * 32, "label": "High"},
                    {"request_id": rid, "record_index": 5, "label": "High"},
                ]
            },
        )
        assert unmatched.status_code == 200
        assert [(u["index"], u["reason"]) for u in unmatched.json()["unmatched_records"]] == [
            (0, "no answer is kept for this request id (unknown, or older than the feedback TTL)"),
            (1, "the request has 1 records"),
        ]
        wrong = await client.post("/feedback", json={"feedback": [{"request_id": rid, "label": 3}]})
        assert wrong.status_code == 422
        assert wrong.json()["error"]["problems"][0]["field"] == "feedback[0].label"
        assert "text labels, got int 3" in wrong.json()["error"]["problems"][0]["message"]
        malformed = await client.post("/feedback", json={"feedback": [{"record_index": -1, "label": [1]}]})
        assert [e["field"] for e in malformed.json()["error"]["problems"]] == [
            "feedback[0].request_id",
            "feedback[0].record_index",
            "feedback[0].label",
        ]


def _shadowed(rid: str, champion: list[str], challenger: list[str]) -> Scored[Entry]:
    entry = Entry("1-0", rid, "svm", Rows(records=[{}] * len(champion)), accepted_ms=1.0, reply=False)
    shadow = ShadowLabels(ModelRef("svm", "SVC", "2"), challenger)
    return Scored(entry, ModelRef("svm", "SVC", "1"), champion, 2.0, 1.0, shadow=shadow, categorical=True)


async def _pair_after(
    settings: Settings, redis: Redis, truth: list[str], champion: list[str], challenger: list[str]
) -> dict[str, Any]:
    topology = StreamTopology.of(settings.stream)
    [partition] = topology.partitions
    rid = topology.new_request_id(partition)
    async with redis.pipeline(transaction=True) as tx:
        stage_answers(tx, partition, [_shadowed(rid, champion, challenger)], 60)
        await tx.execute()
    store = FeedbackStore(redis, topology, settings.feedback)
    outcome = await store.record([Feedback(rid, i, label) for i, label in enumerate(truth)])
    assert outcome.recorded == len(truth)
    [pair] = [r for r in await store.reports("svm") if "challenger" in r]
    return pair


async def test_a_shadow_pairs_accuracies_and_mcnemar_p_are_scipys_on_the_same_records(
    settings: Settings, redis: Redis
) -> None:
    rng = random.Random(8)
    truth = [rng.choice("ab") for _ in range(300)]
    champion = [t if rng.random() < 0.70 else ("b" if t == "a" else "a") for t in truth]
    challenger = [t if rng.random() < 0.85 else ("b" if t == "a" else "a") for t in truth]
    pair = await _pair_after(settings, redis, truth, champion, challenger)

    champion_only = sum(c == t != h for t, c, h in zip(truth, champion, challenger, strict=True))
    challenger_only = sum(h == t != c for t, c, h in zip(truth, champion, challenger, strict=True))
    assert pair["records"] == 300
    assert pair["champion_accuracy"] == pytest.approx(sum(map(str.__eq__, truth, champion)) / 300)
    assert pair["challenger_accuracy"] == pytest.approx(sum(map(str.__eq__, truth, challenger)) / 300)
    assert pair["mcnemar_p"] == pytest.approx(
        binomtest(champion_only, champion_only + challenger_only).pvalue
    )
    better, why = challenger_is_better(pair, 0.05)
    assert better, why


async def test_promotion_if_better_refuses_a_challenger_no_better_and_says_why(
    settings: Settings, redis: Redis
) -> None:
    truth = ["a", "b"] * 50
    pair = await _pair_after(settings, redis, truth, champion=truth, challenger=["a"] * 100)
    better, why = challenger_is_better(pair, 0.05)
    assert not better
    assert "the challenger is not more accurate" in why
    close = {**pair, "champion_accuracy": 0.50, "challenger_accuracy": 0.52, "mcnemar_p": 0.4}
    better, why = challenger_is_better(close, 0.05)
    assert not better
    assert "not significant at 0.05" in why
    assert challenger_is_better(None, 0.05)[0] is False


async def test_regressor_feedback_gives_mae_and_rmse(settings: Settings, redis: Redis) -> None:
    topology = StreamTopology.of(settings.stream)
    [partition] = topology.partitions
    rid = topology.new_request_id(partition)
    entry = Entry("1-0", rid, "reg", Rows(records=[{}] * 3), accepted_ms=1.0, reply=False)
    async with redis.pipeline(transaction=True) as tx:
        stage_answers(
            tx, partition, [Scored(entry, ModelRef("reg", "R", "4"), [1.0, 2.0, 4.0], 2.0, 1.0)], 60
        )
        await tx.execute()
    store = FeedbackStore(redis, topology, settings.feedback)
    await store.record([Feedback(rid, 0, 2.0), Feedback(rid, 1, 2.0), Feedback(rid, 2, 1)])
    [report] = await store.reports("reg")
    assert report["total"] == {
        "records": 3,
        "mae": pytest.approx(4 / 3),
        "rmse": pytest.approx((10 / 3) ** 0.5),
    }
    assert orjson.loads(orjson.dumps(report))["version"] == "4"


async def test_promote_if_better_refuses_a_worse_challenger_then_promotes_a_better_one(
    settings: Settings, redis: Redis, tracking_uri: str, tmp_path: Path
) -> None:
    """A real worker shadows every request; labels first side with the champion (the command refuses and
    moves nothing), then, on more records, with the challenger (it promotes). ``streamml promote`` runs
    as a process, as an operator runs it."""
    name = register_challenged(tracking_uri, "IfBetter")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    settings.mlflow.routes = {"lc": f"models:/{name}@champion"}
    registry = ModelRegistry(
        tracking_uri,
        settings.mlflow.routes,
        alias_refresh_s=0.0,
        trusted_types=DEFAULT_TRUSTED_TYPES,
        cache_dir=tmp_path,
        challenger_alias="challenger",
    )
    publisher = publisher_for(settings, redis)
    stream = [r for r, _ in zip(record_stream(Profile.load(), seed=9), range(1200), strict=False)]
    store = FeedbackStore(redis, StreamTopology.of(settings.stream), settings.feedback)
    env = process_env(settings, tracking_uri, STREAMML_ROUTES=orjson.dumps(settings.mlflow.routes).decode())

    async def label(records: list[dict[str, Any]], prefix: str, side_with: str) -> None:
        """Predict ``records`` (100 per request), then send as truth what ``side_with`` answered."""
        ids = [f"{prefix}{i}" for i in range(len(records) // 100)]
        await publisher.publish_many(
            [(rid, "lc", records[i * 100 : (i + 1) * 100]) for i, rid in enumerate(ids)]
        )
        await drain(settings, redis, registry)
        results: Any = await redis.xrange(settings.stream.results)
        answers = {f[b"request_id"].decode(): f for _, f in results}
        feedback = [
            Feedback(rid, index, label)
            for rid in ids
            for index, label in enumerate(orjson.loads(answers[rid][side_with.encode()]))
        ]
        await store.record(feedback)

    def promote() -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "streamml", "promote", "lc", "--if-better"]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)

    await label(stream[:300], "a", side_with="predictions")
    refused = await asyncio.to_thread(promote)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "not promoted" in refused.stdout
    assert "not more accurate" in " ".join(refused.stdout.split())
    assert client.get_registered_model(name).aliases == {"champion": 1, "challenger": 2}

    await label(stream[300:], "b", side_with="challenger_predictions")
    promoted = await asyncio.to_thread(promote)
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert client.get_registered_model(name).aliases == {"champion": 2, "previous": 1}
