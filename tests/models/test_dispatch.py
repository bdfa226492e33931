"""Batch dispatch against the session's real sqlite registry: requests are plain objects here, since
dispatch knows nothing of Redis."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamml.errors import FailureReason
from streamml.models.dispatch import predict_batch
from streamml.models.inference import EstimatorModel, records_to_frame
from streamml.models.registry import ModelRegistry
from streamml.output_kinds import PREDICT
from streamml.rows import Rows
from streamml.settings import DEFAULT_TRUSTED_TYPES
from tests.helpers import load_route


@dataclass(frozen=True)
class Request:
    route: str
    records: list[dict[str, Any]] = field(default_factory=list)
    request_id: str = ""
    output: str = PREDICT

    @property
    def rows(self) -> Rows:
        return Rows(records=self.records)


GOOD: list[dict[str, Any]] = [
    {"Designation": 2.0, "Mental Fatigue Score": 6.5},
    {"Sleep Hours": 7.0, "Gender": "Male"},
]


async def test_one_predict_per_model_version_and_labels_in_request_order(
    shared_registry: ModelRegistry,
) -> None:
    requests = [Request(("svm", "lightgbm")[i % 2], GOOD, f"r{i}") for i in range(6)]
    dispatched = await predict_batch(requests, shared_registry)
    scored, failed = dispatched.scored, dispatched.unscored

    assert failed == []
    assert [s.request.request_id for s in sorted(scored, key=lambda s: s.request.request_id)] == [
        f"r{i}" for i in range(6)
    ]
    by_model = {s.model.name: s for s in scored}
    assert set(by_model) == {"SVC", "LightGBM_Classifier"}
    for name in by_model:
        group = [s for s in scored if s.model.name == name]
        # one call per version: every request of the group carries the same call's timings
        assert len({(s.predicted_ms, s.predict_ms) for s in group}) == 1
    model = await load_route(shared_registry, "svm")
    assert isinstance(model, EstimatorModel)
    expected = [str(x) for x in model.estimator.predict(records_to_frame(GOOD, model.schema))]
    assert all(s.labels == expected for s in scored if s.model.name == "SVC")


async def test_poison_is_isolated_and_the_rest_is_scored(shared_registry: ModelRegistry) -> None:
    poison = Request("knn", [{"Designation": "very high"}], "poison")  # no imputer takes a string here
    requests = [Request("knn", GOOD, f"good{i}") for i in range(5)]
    requests.insert(3, poison)

    dispatched = await predict_batch(requests, shared_registry)
    scored, failed = dispatched.scored, dispatched.unscored

    assert sorted(s.request.request_id for s in scored) == [f"good{i}" for i in range(5)]
    assert [(f.request.request_id, f.reason) for f in failed] == [("poison", FailureReason.PREDICTION_FAILED)]


async def test_unknown_routes_and_unresolvable_models_say_why(tracking_uri: str) -> None:
    registry = ModelRegistry(
        tracking_uri,
        {"knn": "models:/Knn_Classifier@champion", "ghost": "models:/Ghost@champion"},
        trusted_types=DEFAULT_TRUSTED_TYPES,
    )
    requests = [
        Request("xgboost", GOOD, "unknown"),
        Request("ghost", GOOD, "ghost"),
        Request("knn", GOOD, "ok"),
    ]

    dispatched = await predict_batch(requests, registry)
    scored, failed = dispatched.scored, dispatched.unscored

    assert [s.request.request_id for s in scored] == ["ok"]
    assert {f.request.request_id: f.reason for f in failed} == {
        "unknown": FailureReason.UNKNOWN_MODEL,
        "ghost": FailureReason.MODEL_LOAD_FAILED,
    }
    assert "Ghost" in str(next(f.error for f in failed if f.request.request_id == "ghost"))


async def test_a_canary_never_fails_a_request_the_champion_can_answer(
    tracking_uri: str, tmp_path: Path
) -> None:
    """The challenger (no imputer) cannot score records with a missing feature; at a 100 % canary those
    requests are answered by the champion, the complete ones by the challenger, and none fails."""
    from mlflow import MlflowClient
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from streamml.local.demo import training_frame
    from streamml.models.traffic import Rollout
    from streamml.models.training import (
        CATEGORICAL_FEATURES,
        FEATURES,
        NUMERIC_FEATURES,
        build_pipelines,
        model_signature,
    )
    from tests.helpers import register

    name = f"Canary-{uuid.uuid4().hex[:6]}"
    register(tracking_uri, name, build_pipelines(1)["LightGBM_Classifier"], model_signature())
    no_imputer = Pipeline(
        [
            (
                "pre",
                ColumnTransformer(
                    [
                        ("n", StandardScaler(), NUMERIC_FEATURES),
                        ("c", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL_FEATURES),
                    ]
                ),
            ),
            ("model", LogisticRegression(max_iter=500)),
        ]
    )
    register(tracking_uri, name, no_imputer, model_signature(), complete_rows=True)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    registry = ModelRegistry(
        tracking_uri,
        {"c": f"models:/{name}@champion"},
        trusted_types=DEFAULT_TRUSTED_TYPES,
        cache_dir=tmp_path,
        challenger_alias="challenger",
    )
    rows = training_frame(None, 40, 5)[0][FEATURES].dropna().to_dict(orient="records")[:10]
    complete = [Request("c", [{str(k): v for k, v in row.items()}], f"full{i}") for i, row in enumerate(rows)]
    partial = [Request("c", [{"Designation": 2.0}], f"part{i}") for i in range(5)]

    dispatched = await predict_batch(complete + partial, registry, Rollout(canary={"c": 1.0}))

    assert dispatched.unscored == []
    versions = {s.request.request_id: (s.model.version, s.canary) for s in dispatched.scored}
    assert {versions[r.request_id] for r in complete} == {("2", True)}
    assert {versions[r.request_id] for r in partial} == {("1", False)}
