"""A small model zoo, registered in a real MLflow registry: the kinds of model registries hold, each logged
the way its library's MLflow flavor logs it, on generated rows of typed columns (integers, doubles,
floats, strings, booleans, datetimes).

=============  =================================================  =====================  ============
route          model                                              loaded                 answers
=============  =================================================  =====================  ============
pickled        scikit-learn classifier, cloudpickle (MLflow 2.x)  opt-in (runs code)     labels
regressor      scikit-learn regressor, skops                      by default             numbers
booster        LightGBM booster via mlflow.lightgbm               by default             probabilities
xgboost        XGBoost classifier via mlflow.xgboost              by default             integer labels
onnx           scikit-learn regressor converted with skl2onnx     by default             rows {variable}
custom         a PythonModel that preprocesses, 2-column frame    opt-in (runs code)     rows {band, score}
nosignature    scikit-learn classifier logged without signature   by default             labels
intclasses     scikit-learn classifier with integer classes       by default             integer labels
mixed          a PythonModel of boolean and datetime inputs       opt-in (runs code)     numbers
=============  =================================================  =====================  ============
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel

from streamml.models.training import pinned_requirements

ROUTES = (
    "pickled",
    "regressor",
    "booster",
    "xgboost",
    "onnx",
    "custom",
    "nosignature",
    "intclasses",
    "mixed",
)
RUNS_CODE = ("pickled", "custom", "mixed")
"""The routes whose artifact runs code when loaded: served only with the opt-in."""
CLASSIFIERS = ("pickled", "xgboost", "nosignature", "intclasses")
"""The routes whose model has predict_proba."""


def rows(count: int, seed: int = 0) -> pd.DataFrame:
    """Typed columns, as a client's records are read with a signature: every kind the zoo needs."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, count).astype(np.int64),
            "income": rng.normal(50_000, 15_000, count).round(2),
            "score": rng.uniform(0, 1, count).astype(np.float32),
            "city": rng.choice(["Lyon", "Oslo", "Lima"], count),
            "member": rng.integers(0, 2, count).astype(bool),
            "signup": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 700, count), unit="D"),
        }
    )


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as a client sends them: datetimes in ISO 8601, numbers as JSON numbers."""
    out = frame.copy()
    if "signup" in out:
        out["signup"] = out["signup"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    return [
        {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for row in out.to_dict(orient="records")
    ]


@dataclass(frozen=True)
class Zoo:
    tracking_uri: str
    routes: dict[str, str]
    """Route -> models:/Name/1."""
    columns: dict[str, list[str]]
    """Route -> the columns its model takes."""

    def frame(self, route: str, count: int, seed: int = 1) -> pd.DataFrame:
        return rows(count, seed)[self.columns[route]]


def _label(frame: pd.DataFrame) -> np.ndarray:
    return np.where(frame["income"] + 400 * frame["age"] > 70_000, "yes", "no")


def register_zoo(tracking_uri: str) -> Zoo:
    """Every model of the zoo as version 1 of a model of its own (names unique to this registry)."""
    import mlflow

    # The custom models are pickled with their code (not as a reference to this test module), as a
    # model built in a notebook is: a worker loads them without the tests on its path.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    mlflow.set_experiment("zoo")
    suffix = uuid.uuid4().hex[:6]
    train = rows(600, seed=0)
    columns = {
        "pickled": ["income", "age"],
        "regressor": ["income", "age", "score"],
        "booster": ["income", "age", "score"],
        "xgboost": ["income", "age"],
        "onnx": ["income", "age"],
        "custom": ["income", "age", "city"],
        "nosignature": ["income", "age"],
        "intclasses": ["income", "age", "score"],
        "mixed": ["income", "member", "signup"],
    }
    loggers: dict[str, Callable[[pd.DataFrame, str], None]] = {
        "pickled": _pickled,
        "regressor": _regressor,
        "booster": _booster,
        "xgboost": _xgboost,
        "onnx": _onnx,
        "custom": partial(_python_model, Banded()),
        "nosignature": _nosignature,
        "intclasses": _intclasses,
        "mixed": partial(_python_model, Tenure()),
    }
    routes = {}
    for route, log in loggers.items():
        name = f"zoo-{route}-{suffix}"
        with mlflow.start_run():
            log(train[columns[route]], name)
        routes[route] = f"models:/{name}/1"
    return Zoo(tracking_uri, routes, columns)


def _sklearn(model: Any, frame: pd.DataFrame, target: Any, name: str, **options: Any) -> None:
    import mlflow
    from mlflow.models import infer_signature

    model.fit(frame, target)
    signature = infer_signature(frame, model.predict(frame)) if options.pop("signature", True) else False
    mlflow.sklearn.log_model(
        model,
        name="model",
        signature=signature,
        registered_model_name=name,
        pip_requirements=pinned_requirements("SVC"),
        **options,
    )


def _pickled(frame: pd.DataFrame, name: str) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(StandardScaler(), LogisticRegression())
    _sklearn(pipeline, frame, _label(frame), name, serialization_format="cloudpickle")


def _regressor(frame: pd.DataFrame, name: str) -> None:
    from sklearn.linear_model import Ridge

    target = frame["income"] / 1000 + frame["age"] * 0.5 + frame["score"].astype(float)
    _sklearn(Ridge(), frame, target, name, serialization_format="skops")


def _nosignature(frame: pd.DataFrame, name: str) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression())
    _sklearn(model, frame, _label(frame), name, serialization_format="skops", signature=False)


def _intclasses(frame: pd.DataFrame, name: str) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    target = (frame["age"] // 30).astype(int).to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression())
    _sklearn(model, frame, target, name, serialization_format="skops")


def _booster(frame: pd.DataFrame, name: str) -> None:
    import lightgbm
    import mlflow
    from mlflow.models import infer_signature

    target = (frame["age"] // 30).astype(int)
    data = lightgbm.Dataset(frame, label=target)
    params = {"objective": "multiclass", "num_class": 3, "num_leaves": 7, "verbose": -1, "seed": 0}
    booster = lightgbm.train(params, data, num_boost_round=20)
    mlflow.lightgbm.log_model(
        booster,
        name="model",
        signature=infer_signature(frame, booster.predict(frame)),
        registered_model_name=name,
        pip_requirements=pinned_requirements("LightGBM_Classifier"),
    )


def _xgboost(frame: pd.DataFrame, name: str) -> None:
    import mlflow
    import xgboost
    from mlflow.models import infer_signature

    model = xgboost.XGBClassifier(n_estimators=20, max_depth=3, random_state=0)
    model.fit(frame, (_label(frame) == "yes").astype(int))
    mlflow.xgboost.log_model(
        model,
        name="model",
        signature=infer_signature(frame, model.predict(frame)),
        registered_model_name=name,
        pip_requirements=[*pinned_requirements("SVC"), "xgboost-cpu"],
    )


def _onnx(frame: pd.DataFrame, name: str) -> None:
    import mlflow
    from mlflow.models import infer_signature
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit(frame.to_numpy(np.float32), frame["income"] / 1000 + frame["age"])
    converted = to_onnx(model, frame.to_numpy(np.float32)[:1], target_opset=17)
    mlflow.onnx.log_model(
        converted,
        name="model",
        signature=infer_signature(frame, model.predict(frame.to_numpy(np.float32))),
        registered_model_name=name,
        pip_requirements=["onnx", "onnxruntime"],
    )


def _python_model(model: Any, frame: pd.DataFrame, name: str) -> None:
    """A custom ``PythonModel``, cloudpickled as ``mlflow.pyfunc`` logs one (served only with the opt-in)."""
    import mlflow
    from mlflow.models import infer_signature

    mlflow.pyfunc.log_model(
        name="model",
        python_model=model,
        signature=infer_signature(frame, model.predict(None, frame)),
        registered_model_name=name,
        pip_requirements=pinned_requirements("SVC"),
    )


class Banded(PythonModel):
    """Preprocesses (income in thousands, a city weight) and answers a two-column frame."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        weight = model_input["city"].map({"Lyon": 1.0, "Oslo": 1.5, "Lima": 0.8}).fillna(1.0)
        score = (model_input["income"] / 1000 * weight + model_input["age"]).astype(float)
        band = np.where(score > 90, "high", np.where(score > 60, "mid", "low"))
        return pd.DataFrame({"band": band, "score": score.round(6)})


class Tenure(PythonModel):
    """Numbers from a boolean and a datetime column: days since signup, doubled for members."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        days = (pd.Timestamp("2026-01-01") - pd.to_datetime(model_input["signup"])).dt.days.astype(float)
        factor = np.where(model_input["member"].astype(bool), 2.0, 1.0)
        return np.asarray(days * factor + model_input["income"] / 1e4, dtype=float)
