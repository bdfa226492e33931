"""Where one predict call spends its time, on the scikit-learn pipeline and on streamml's numpy fast
path, for a few batch sizes. Usage: ``python -m streamml.bench.profile_predict [route] [rows ...]`` with
MLFLOW_TRACKING_URI set (without it, demo models are trained into a temporary sqlite registry)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamml.models.inference import EstimatorModel, LoadedModel, records_to_frame
from streamml.models.registry import ModelRegistry
from streamml.settings import DEFAULT_ROUTES, DEFAULT_TRUSTED_TYPES
from streamml.synthetic.producer import record_stream
from streamml.synthetic.profile import Profile


def per_call_ms(call: Callable[[], Any], budget_s: float = 0.5) -> float:
    """Mean milliseconds per call, repeating for about ``budget_s`` after one warm-up call."""
    call()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < budget_s or calls < 3:
        call()
        calls += 1
    return (time.perf_counter() - started) * 1000.0 / calls


async def load(registry: ModelRegistry, route: str) -> LoadedModel:
    return await registry.loader.load(await registry.resolver.resolve(route))


def main() -> None:
    route = sys.argv[1] if len(sys.argv) > 1 else "lightgbm"
    sizes = [int(a) for a in sys.argv[2:]] or [1, 100, 4096]
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        from streamml.local.demo import local_demo_registry

        uri = local_demo_registry(
            Path(tempfile.mkdtemp(prefix="streamml-profile-")),
            rows=20_000,
            experiment="profile",
            trusted_types=DEFAULT_TRUSTED_TYPES,
        )
    registry = ModelRegistry(uri, DEFAULT_ROUTES, trusted_types=DEFAULT_TRUSTED_TYPES)
    model = asyncio.run(load(registry, route))
    print(f"{route}: {model.name} v{model.version}; mean ms per call")
    print(
        f"{'rows':>6} {'frame':>8} {'sklearn pipeline':>17} {'of it: preprocess':>18} {'model':>8} |"
        f" {'fast path':>9} {'of it: transform':>17}"
    )
    for size in sizes:
        print(profile_size(model, size))


def profile_size(model: LoadedModel, size: int) -> str:
    if not isinstance(model, EstimatorModel):
        raise SystemExit(f"{model.name} is a {model.kind} model: this profile is of scikit-learn pipelines")
    records = [r for r, _ in zip(record_stream(Profile.load(), seed=1), range(size), strict=False)]
    pipeline = model.estimator
    preprocess, estimator = pipeline.steps[0][1], pipeline.steps[-1][1]
    frame = records_to_frame(records, model.schema)
    matrix = preprocess.transform(frame)
    row = [
        per_call_ms(lambda: records_to_frame(records, model.schema)),
        per_call_ms(lambda: pipeline.predict(frame)),
        per_call_ms(lambda: preprocess.transform(frame)),
        per_call_ms(lambda: estimator.predict(matrix)),
    ]
    fast = model.fast
    if fast is None:
        return f"{size:>6} " + " ".join(f"{v:>8.3f}" for v in row) + " | no fast path"
    predict, transform = (
        per_call_ms(lambda: fast.predict(records)),
        per_call_ms(lambda: fast.transform(records)),
    )
    return (
        f"{size:>6} {row[0]:>8.3f} {row[1]:>17.3f} {row[2]:>18.3f} {row[3]:>8.3f} |"
        f" {predict:>9.3f} {transform:>17.3f}"
    )


if __name__ == "__main__":
    main()
