"""Worker drain benchmark: how fast one worker process empties a pre-filled stream, next to the
naive worker of the original design and to the model's own batch predict speed on the same rows.

Run it with ``streamml bench`` (``--quick`` for the CI smoke run). It starts a private redis-server
and a sqlite MLflow registry with freshly trained demo models, unless REDIS_URL / MLFLOW_TRACKING_URI
point at running ones. Results: a table on the terminal, JSON and Markdown under benchmarks/results/.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import resource
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from redis.asyncio import Redis

from streamml.bench import other_models
from streamml.local.demo import training_frame
from streamml.models.inference import EstimatorModel, LoadedModel, records_to_frame
from streamml.models.registry import ModelRegistry
from streamml.settings import DEFAULT_ROUTES, DEFAULT_TRUSTED_TYPES, Settings
from streamml.stream.publisher import Publisher
from streamml.stream.wire import redis_from_url
from streamml.synthetic.producer import record_stream
from streamml.synthetic.profile import Profile
from streamml.worker.loop import Worker


@dataclass
class DrainResult:
    route: str
    model: str
    records: int
    records_per_entry: int
    seconds: float
    records_per_s: float
    model_batch_records_per_s: float
    """The model's own predict (the whole scikit-learn pipeline on a frame)."""
    ceiling_records_per_s: float
    """The faster of the model's own predict and streamml's inference path on the same rows: what the
    share is of (``ModelSpeed.ceiling``)."""
    share_of_model_speed: float
    classifier_records_per_s: float
    """The classifier alone on the matrix its pipeline prepared (no imputing, scaling, encoding): the
    higher figure a plain ``predict`` of, say, a LightGBM model gives; not a ceiling for records."""
    compiled_classifier_records_per_s: float | None
    """The same, its trees compiled (None when they are not)."""
    inference_records_per_s: float
    naive_records_per_s: float
    speedup_vs_naive: float
    cpu_s: float
    peak_rss_mb: float
    shares_of_all_runs: list[float]


async def _fill(publisher: Publisher, route: str, records: list[dict[str, Any]], per_entry: int) -> None:
    """The stream filled beforehand, through the publisher (the entry format is its)."""
    topology = publisher.topology
    requests = [
        (topology.new_request_id(topology.partition_for(None)), route, records[start : start + per_entry])
        for start in range(0, len(records), per_entry)
    ]
    for start in range(0, len(requests), FILL_CHUNK):
        await publisher.publish_many(requests[start : start + FILL_CHUNK])


FILL_CHUNK = 1000
"""Entries per MULTI while filling."""


async def drain_once(
    redis_url: str,
    registry: ModelRegistry,
    route: str,
    records: list[dict[str, Any]],
    per_entry: int,
    state_dir: Path,
    metrics: bool = True,
    configure: Callable[[Settings], None] | None = None,
    profile: cProfile.Profile | None = None,
) -> tuple[float, float]:
    """Seconds and CPU seconds for one worker (this process) to drain the pre-filled stream
    (``configure`` adjusts the worker's settings; ``profile`` is enabled while the worker runs)."""
    settings = Settings.load(state_dir)
    settings.general.metrics = metrics
    if configure is not None:
        configure(settings)
    settings.stream.name = f"bench-{uuid.uuid4().hex[:8]}"
    settings.stream.results = f"{settings.stream.name}:predictions"
    settings.worker.batch_entries = max(1, 4096 // per_entry)
    redis = redis_from_url(redis_url)  # the client the product's processes use
    try:
        worker = Worker(redis, registry, settings, consumer="bench")
        await worker.consumer.ensure_groups()
        await _fill(Publisher.of(redis, settings.stream), route, records, per_entry)
        cpu_before = time.process_time()
        started = time.perf_counter()
        if profile is not None:
            profile.enable()
        stats = await worker.run(burst=True)
        if profile is not None:
            profile.disable()
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        assert stats.records == len(records), (stats.records, len(records))
        await redis.delete(settings.stream.name, settings.stream.results)
        return seconds, cpu
    finally:
        await redis.aclose()


async def naive_rate(
    redis_url: str, registry: ModelRegistry, route: str, records: list[dict[str, Any]]
) -> float:
    """The original design: one entry at a time, the model loaded from the registry per entry."""
    stream = f"bench-naive-{uuid.uuid4().hex[:8]}"
    redis = Redis.from_url(redis_url)
    try:
        for record in records:
            await redis.xadd(stream, {"route": route, "records": json.dumps([record])})
        await redis.xgroup_create(stream, "naive", id="0")
        ref = await registry.resolver.resolve(route)
        started = time.perf_counter()
        done = 0
        while True:
            reply: Any = await redis.xreadgroup("naive", "c", {stream: ">"}, count=1)
            if not reply:
                break
            entry_id, fields = reply[0][1][0]
            model = await registry.loader.load_fresh(ref)  # per entry, as it was
            model.predict(json.loads(fields[b"records"]))
            await redis.xack(stream, "naive", entry_id)
            done += 1
        rate = done / (time.perf_counter() - started)
        await redis.delete(stream)
        return rate
    finally:
        await redis.aclose()


@dataclass(frozen=True)
class ModelSpeed:
    """Records/s on the same rows in batches of 4,096, each after a warm-up call."""

    pipeline: float
    """The model's own predict: the scikit-learn pipeline on a frame, as its MLflow flavour runs it.
    The ceiling a worker is measured against."""
    classifier: float
    """Only the pipeline's last step, on the matrix its earlier steps prepared (the pipeline itself
    when it is not one)."""
    inference: float
    """streamml's inference path (the checked numpy path where there is one, with its trees compiled
    where they are)."""
    compiled_classifier: float | None
    """The pipeline's last step as compiled trees, on the same matrix as ``classifier``: the bare
    model's speed with compilation (None when its trees are not compiled)."""

    @property
    def ceiling(self) -> float:
        """What a drain is measured against: the faster way to predict these rows in one call, the
        model's own predict or streamml's inference path (which, with compiled trees, is the faster)."""
        return max(self.pipeline, self.inference)


def model_speed(registry: ModelRegistry, route: str, records: list[dict[str, Any]]) -> ModelSpeed:
    """The model's speeds. A first call is not timed (its first pass was a third slower: lazy
    initialisation and cold caches), which the harness's ceiling did not do before."""
    model = asyncio.run(served_model(registry, route))
    batches = [records[start : start + 4096] for start in range(0, len(records), 4096)]
    frames = [records_to_frame(batch, model.schema) for batch in batches]
    own = _rate(model.call, frames, len(records))  # the model's predict, as its MLflow flavor calls it
    classifier, compiled = own, None
    steps = getattr(model.estimator, "steps", None) if isinstance(model, EstimatorModel) else None
    if steps and len(steps) == 2:  # a pipeline: its last step alone, on the matrix its first prepared
        prepare, last = steps[0][1], steps[-1][1]
        matrices = [np.asarray(prepare.transform(f), dtype=np.float64) for f in frames]
        classifier = _rate(last.predict, matrices, len(records))
        fast = model.fast if isinstance(model, EstimatorModel) else None
        if fast is not None and fast.trees_compiled:
            compiled = _rate(fast.classify, matrices, len(records))
    return ModelSpeed(
        pipeline=own,
        classifier=classifier,
        inference=_rate(model.predict, batches, len(records)),
        compiled_classifier=compiled,
    )


async def served_model(registry: ModelRegistry, route: str) -> LoadedModel:
    """The route's model, with its trees compiled if they are to be (a worker serves with the booster
    while they compile; the benchmark measures what it serves after)."""
    model = await registry.loader.load(await registry.resolver.resolve(route))
    if isinstance(model, EstimatorModel) and model.fast is not None:
        model.fast.wait_for_trees()
    return model


def _rate(predict: Callable[[Any], Any], batches: list[Any], records: int) -> float:
    predict(batches[0])  # warm-up, not timed
    started = time.perf_counter()
    for batch in batches:
        predict(batch)
    return records / (time.perf_counter() - started)


REPEATS = 3
"""Each drain runs this many times, each right after a measurement of the model's own speed, and the
median pair is reported: a shared machine's speed drifts by up to 2x between minutes, so a drain
is compared with a ceiling taken at the same time, never with one from another minute."""


def run(
    *, redis_url: str, tracking_uri: str, quick: bool, routes: list[str], metrics: bool = True
) -> dict[str, Any]:
    total = 2_000 if quick else 50_000  # quick: a smoke run, no figure is read from it
    repeats = 1 if quick else REPEATS
    naive_n = 20 if quick else 100
    records = [r for r, _ in zip(record_stream(Profile.load(), seed=42), range(total), strict=False)]
    others: dict[str, str] = {}
    if set(routes) & set(other_models.ROUTES):  # the other kinds of model, beside the demo's pipelines
        others = other_models.register(tracking_uri, training_frame(None, 3000 if quick else 20_000, 0)[0])

    def registry_for(*, compile_trees: bool) -> ModelRegistry:
        return ModelRegistry(
            tracking_uri,
            DEFAULT_ROUTES | others,
            trusted_types=DEFAULT_TRUSTED_TYPES,
            allow_code=other_models.RUNS_CODE,
            compile_trees=compile_trees,
        )

    registry = registry_for(compile_trees=Settings().mlflow.compile_trees)  # as the workers run by default
    # The naive worker loads the model for every entry, as the original design did: without compiling
    # its trees each time (that would make the baseline slower than the design it stands for).
    original = registry_for(compile_trees=False)
    results = []
    with tempfile.TemporaryDirectory() as state:
        for route in routes:
            loaded = asyncio.run(served_model(registry, route))  # loading is start-up cost, not drain time
            naive = asyncio.run(naive_rate(redis_url, original, route, records[:naive_n]))
            for per_entry in (1, 100):
                runs = []
                for _ in range(repeats):
                    speed = model_speed(registry, route, records)
                    seconds, cpu = asyncio.run(
                        drain_once(redis_url, registry, route, records, per_entry, Path(state), metrics)
                    )
                    runs.append((total / seconds / speed.ceiling, seconds, cpu, speed))
                share, seconds, cpu, speed = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
                rate = total / seconds
                results.append(
                    DrainResult(
                        route=route,
                        model=f"{loaded.name} v{loaded.version}",
                        records=total,
                        records_per_entry=per_entry,
                        seconds=round(seconds, 3),
                        records_per_s=round(rate),
                        model_batch_records_per_s=round(speed.pipeline),
                        ceiling_records_per_s=round(speed.ceiling),
                        share_of_model_speed=round(share, 3),
                        classifier_records_per_s=round(speed.classifier),
                        compiled_classifier_records_per_s=(
                            round(speed.compiled_classifier) if speed.compiled_classifier else None
                        ),
                        inference_records_per_s=round(speed.inference),
                        naive_records_per_s=round(naive, 1),
                        speedup_vs_naive=round(rate / naive, 1),
                        cpu_s=round(cpu, 2),
                        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                        shares_of_all_runs=[round(r[0], 3) for r in runs],
                    )
                )
    return {
        "scenario": "worker drain",
        "quick": quick,
        "repeats": repeats,
        "results": [asdict(r) for r in results],
    }
