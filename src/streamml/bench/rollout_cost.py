"""What watching and changing models costs a worker: the same drain writing only the CSV and the Redis
results, then adding one at a time the answers kept for feedback, drift windows, the prediction log (all
three are on by default), and a challenger shadowing every request (sample 1.0) and one in ten (0.1).

The champion and the challenger are two LightGBM versions of a model registered under a name of the
benchmark's own (trained on different generated rows), so a registry given with MLFLOW_TRACKING_URI
keeps its models where they are. Configurations alternate within each repeat (a shared machine's speed drifts
between minutes), and the median of each is reported with CPU microseconds per record.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streamml.bench.drain import drain_once
from streamml.models.inference import EstimatorModel
from streamml.models.registry import ModelRegistry
from streamml.settings import DEFAULT_TRUSTED_TYPES, Settings
from streamml.synthetic.producer import record_stream
from streamml.synthetic.profile import Profile

ROUTE = "shadowed"
REPEATS = 5


@dataclass(frozen=True)
class Config:
    name: str
    challenger: bool = False
    shadow_sample: float = 1.0
    drift: bool = True
    prediction_log: bool = True
    answers: bool = True


CONFIGS = (
    Config("CSV and Redis results only", drift=False, prediction_log=False, answers=False),
    Config("+ answers kept for feedback", drift=False, prediction_log=False),
    Config("+ drift windows", prediction_log=False),
    Config("+ prediction log (the default)"),
    Config("+ shadow, sample 1.0", challenger=True, shadow_sample=1.0),
    Config("+ shadow, sample 0.1", challenger=True, shadow_sample=0.1),
)
"""Each adds one thing to the one before; the first is what every worker writes whatever is on."""


@dataclass
class CostResult:
    config: str
    records_per_entry: int
    records: int
    records_per_s: int
    cpu_us_per_record: float
    extra_cpu_us_per_record: float
    """Over the first configuration's (CSV and Redis results only)."""
    runs_records_per_s: list[int]


def register_pair(tracking_uri: str) -> str:
    """A model of the benchmark's own: v1 champion, v2 (other rows) challenger, both with profiles."""
    import mlflow
    from mlflow import MlflowClient

    from streamml.local.demo import training_frame
    from streamml.models.drift import TRAINING_PROFILE_ARTIFACT
    from streamml.models.training import (
        build_pipelines,
        features_and_labels,
        model_signature,
        pinned_requirements,
    )
    from streamml.synthetic.profile import training_profile

    name = f"streamml-bench-shadow-{uuid.uuid4().hex[:6]}"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if client.get_experiment_by_name("bench-shadow") is None:
        root = Path(tempfile.mkdtemp(prefix="streamml-bench-artifacts-"))
        client.create_experiment("bench-shadow", artifact_location=root.as_uri())
    mlflow.set_experiment("bench-shadow")
    for seed in (1, 2):
        features, labels = features_and_labels(training_frame(None, 3000, seed)[0])
        pipeline = build_pipelines(seed)["LightGBM_Classifier"].fit(features, labels)
        with mlflow.start_run():
            mlflow.sklearn.log_model(
                pipeline,
                name="model",
                signature=model_signature(),
                registered_model_name=name,
                serialization_format="skops",
                skops_trusted_types=list(DEFAULT_TRUSTED_TYPES),
                pip_requirements=pinned_requirements("LightGBM_Classifier"),
            )
            mlflow.log_text(training_profile(features, labels).to_json(), TRAINING_PROFILE_ARTIFACT)
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    return name


def run(*, redis_url: str, tracking_uri: str, quick: bool, metrics: bool = True) -> dict[str, Any]:
    total = 2_000 if quick else 50_000  # quick: a smoke run, no figure is read from it
    repeats = 1 if quick else REPEATS
    records = [r for r, _ in zip(record_stream(Profile.load(), seed=43), range(total), strict=False)]
    name = register_pair(tracking_uri)
    registries = {
        challenger: ModelRegistry(
            tracking_uri,
            {ROUTE: f"models:/{name}@champion"},
            alias_refresh_s=3600.0,
            trusted_types=DEFAULT_TRUSTED_TYPES,
            challenger_alias="challenger" if challenger else None,
            compile_trees=Settings().mlflow.compile_trees,  # as the workers run by default
        )
        for challenger in (False, True)
    }
    for registry in registries.values():  # loads and the first alias lookups are start-up, not drain
        asyncio.run(_warm(registry))
    results = []
    with tempfile.TemporaryDirectory() as state:
        for per_entry in (1, 100):
            runs: dict[str, list[tuple[float, float]]] = {c.name: [] for c in CONFIGS}
            for _ in range(repeats):
                for config in CONFIGS:
                    seconds, cpu = asyncio.run(
                        drain_once(
                            redis_url,
                            registries[config.challenger],
                            ROUTE,
                            records,
                            per_entry,
                            Path(state),
                            metrics,
                            configure=_configure(config),
                        )
                    )
                    runs[config.name].append((seconds, cpu))
            base_cpu = statistics.median(cpu for _, cpu in runs[CONFIGS[0].name]) / total * 1e6
            for config in CONFIGS:
                seconds = statistics.median(s for s, _ in runs[config.name])
                cpu_us = statistics.median(c for _, c in runs[config.name]) / total * 1e6
                results.append(
                    CostResult(
                        config=config.name,
                        records_per_entry=per_entry,
                        records=total,
                        records_per_s=round(total / seconds),
                        cpu_us_per_record=round(cpu_us, 2),
                        extra_cpu_us_per_record=round(cpu_us - base_cpu, 2),
                        runs_records_per_s=[round(total / s) for s, _ in runs[config.name]],
                    )
                )
    return {
        "scenario": "cost of drift windows, the prediction log and shadow scoring",
        "quick": quick,
        "repeats": repeats,
        "model": f"{name} v1 (champion), v2 (challenger): LightGBM",
        "results": [asdict(r) for r in results],
    }


async def _warm(registry: ModelRegistry) -> None:
    for ref in (await registry.resolver.resolve(ROUTE), await registry.resolver.challenger(ROUTE)):
        if ref is not None:
            model = await registry.loader.load(ref)
            if isinstance(model, EstimatorModel) and model.fast is not None:
                model.fast.wait_for_trees()  # measured as served once compiled
            await registry.catalog.reference(ref)


def _configure(config: Config) -> Callable[[Settings], None]:
    def configure(settings: Settings) -> None:
        settings.rollout.shadow_sample = config.shadow_sample
        settings.drift.enabled = config.drift
        settings.prediction_log.enabled = config.prediction_log
        settings.feedback.enabled = config.answers

    return configure
