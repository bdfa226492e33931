"""Models of other kinds than the demo's scikit-learn pipelines, for the drain benchmark: a LightGBM
booster logged natively with ``mlflow.lightgbm`` (loaded by default), and a custom ``PythonModel`` with
its own pre- and post-processing around the same kind of booster (opt-in: it runs code when loaded).
Each drains beside its own batch predict, the ceiling it is judged against."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from streamml.models.training import CHAMPION, NUMERIC_FEATURES, features_and_labels, pinned_requirements

ROUTES = {
    "booster": "models:/Bench_LightGBM_Booster@champion",
    "pyfunc": "models:/Bench_PythonModel@champion",
}
RUNS_CODE = ["pyfunc"]
LABELS = np.array(["High", "Low", "Medium"])


def register(tracking_uri: str, frame: pd.DataFrame) -> dict[str, str]:
    """Both models (trained on ``frame``'s numeric features), registered under ``champion`` unless
    the registry has them already. Returns their routes."""
    import lightgbm
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.models import infer_signature

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        for uri in ROUTES.values():
            name = uri.removeprefix("models:/").split("@")[0]
            client.get_model_version_by_alias(name, CHAMPION)
        return dict(ROUTES)
    except MlflowException:
        pass
    features, labels = features_and_labels(frame)
    numeric = features[NUMERIC_FEATURES]
    target = np.searchsorted(LABELS, labels.to_numpy())
    params = {"objective": "multiclass", "num_class": 3, "num_leaves": 7, "verbose": -1, "seed": 0}
    booster = lightgbm.train(params, lightgbm.Dataset(numeric, label=target), num_boost_round=50)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment("bench-kinds")
    with mlflow.start_run():
        info = mlflow.lightgbm.log_model(
            booster,
            name="model",
            signature=infer_signature(numeric, booster.predict(numeric)),
            registered_model_name="Bench_LightGBM_Booster",
            pip_requirements=pinned_requirements("LightGBM_Classifier"),
        )
    client.set_registered_model_alias("Bench_LightGBM_Booster", CHAMPION, str(info.registered_model_version))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "booster.txt"
        booster.save_model(str(path))
        model = BoostedLabels(medians={str(name): float(value) for name, value in numeric.median().items()})
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=model,
                artifacts={"booster": str(path)},
                signature=infer_signature(numeric, model.labels(booster, numeric)),
                registered_model_name="Bench_PythonModel",
                pip_requirements=pinned_requirements("LightGBM_Classifier"),
            )
    client.set_registered_model_alias("Bench_PythonModel", CHAMPION, str(info.registered_model_version))
    return dict(ROUTES)


class BoostedLabels(PythonModel):
    """A custom model as teams write them: fill missing values with the training medians, clip a
    feature, score with a LightGBM booster, answer the class label."""

    def __init__(self, medians: dict[str, float]) -> None:
        self.medians = medians
        self.booster: Any = None

    def load_context(self, context: Any) -> None:
        import lightgbm

        self.booster = lightgbm.Booster(model_file=context.artifacts["booster"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        return self.labels(self.booster, model_input)

    def labels(self, booster: Any, frame: pd.DataFrame) -> np.ndarray:
        prepared = frame.fillna(self.medians)
        prepared["Mental Fatigue Score"] = prepared["Mental Fatigue Score"].clip(0, 10)
        return np.asarray(LABELS[np.argmax(booster.predict(prepared), axis=1)])
