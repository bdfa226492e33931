"""Where one batched predict spends its time: building the frame, the pipeline's preprocessing, and the
model itself. Usage: ``python -m benchmarks.profile_predict [route] [rows]`` with MLFLOW_TRACKING_URI set
(e.g. to the registry `streamml up` started: ``http://127.0.0.1:5001``)."""

from __future__ import annotations

import os
import sys
import time

from streamml.inference import records_to_frame
from streamml.producer import record_stream
from streamml.profile import Profile
from streamml.registry import ModelRegistry
from streamml.settings import DEFAULT_ROUTES, DEFAULT_TRUSTED_TYPES


def main() -> None:
    route = sys.argv[1] if len(sys.argv) > 1 else "lightgbm"
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
    uri = os.environ.get("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    registry = ModelRegistry(uri, DEFAULT_ROUTES, trusted_types=DEFAULT_TRUSTED_TYPES)
    model = registry.load(registry.resolve(route))
    records = [r for r, _ in zip(record_stream(Profile.load(), seed=1), range(rows), strict=False)]
    model.predict(records)  # warm up
    preprocess = model.estimator.named_steps["preprocess"]
    estimator = model.estimator.named_steps["model"]

    def timed(label: str, call: object) -> object:
        started = time.perf_counter()
        result = call()  # type: ignore[operator]
        print(f"{label:<28} {(time.perf_counter() - started) * 1000:8.1f} ms")
        return result

    frame = timed("records -> frame", lambda: records_to_frame(records, model.schema))
    timed("whole pipeline predict", lambda: model.estimator.predict(frame))
    matrix = timed("preprocess (ColumnTransformer)", lambda: preprocess.transform(frame))
    timed(f"model predict ({type(estimator).__name__})", lambda: estimator.predict(matrix))
    print(f"{route}: {rows} rows, {model.name} v{model.version}")


if __name__ == "__main__":
    main()
