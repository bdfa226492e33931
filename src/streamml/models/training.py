"""The demo models: three scikit-learn Pipelines trained on employee burn-out data and registered in
MLflow as ``SVC``, ``Knn_Classifier`` and ``LightGBM_Classifier`` with alias ``champion``.

Preprocessing lives inside each model (imputation, scaling, one-hot), so every feature is optional in
the signature: a client may omit any of them and the pipeline imputes. Where the training rows come
from (the real CSV, or rows generated from the shipped profile) is the caller's choice:
:mod:`streamml.local.demo`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from streamml.models.drift import TRAINING_PROFILE_ARTIFACT

log = logging.getLogger(__name__)

NUMERIC_FEATURES = [
    "Designation",
    "Resource Allocation",
    "Mental Fatigue Score",
    "Work Hours per Week",
    "Sleep Hours",
    "Work-Life Balance Score",
    "Manager Support Score",
    "Deadline Pressure Score",
    "Team Size",
    "Recognition Frequency",
]
"""The ten numeric features. "Years in Company" is left out: it is 16 or 17 for everyone (every
employee joined in 2008), so it carries no signal and would only be one more field to send."""
CATEGORICAL_FEATURES = ["Gender", "Company Type", "WFH Setup Available"]
FEATURES = NUMERIC_FEATURES + CATEGORICAL_FEATURES
TARGET = "Burn Rate"
LABELS = ("Low", "Medium", "High")

DEMO_MODELS = {"svm": "SVC", "knn": "Knn_Classifier", "lightgbm": "LightGBM_Classifier"}
CHAMPION = "champion"
SVC_MAX_ROWS = 6000
"""SVC training is quadratic in rows; a stratified sample of this size keeps `make demo` quick
(and SVC's predict cost, which grows with its support vectors, reasonable)."""


def burn_rate_label(rate: pd.Series) -> pd.Series:
    """Burn Rate < 0.33 -> Low, < 0.66 -> Medium, else High (the original project's bins)."""
    labels = np.where(rate < 0.33, "Low", np.where(rate < 0.66, "Medium", "High"))
    return pd.Series(labels, index=rate.index, name="label")


def features_and_labels(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Model inputs with the signature's dtypes, and labels; rows without a Burn Rate are dropped."""
    missing = [c for c in [*FEATURES, TARGET] if c not in frame.columns]
    if missing:
        raise ValueError(f"training data lacks columns {missing}")
    frame = frame[frame[TARGET].notna()]
    features = frame[FEATURES].copy()
    for name in NUMERIC_FEATURES:
        features[name] = features[name].astype("float64")
    for name in CATEGORICAL_FEATURES:
        features[name] = features[name].astype(object)
    return features.reset_index(drop=True), burn_rate_label(frame[TARGET]).reset_index(drop=True)


def build_pipelines(seed: int = 0) -> dict[str, Any]:
    from lightgbm import LGBMClassifier
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.svm import SVC

    def preprocess() -> ColumnTransformer:
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        categorical = Pipeline(
            [
                ("impute", SimpleImputer(strategy="most_frequent")),
                ("onehot", OneHotEncoder(handle_unknown="ignore")),
            ]
        )
        return ColumnTransformer(
            [
                ("numeric", numeric, NUMERIC_FEATURES),
                ("categorical", categorical, CATEGORICAL_FEATURES),
            ]
        )

    return {
        "SVC": Pipeline([("preprocess", preprocess()), ("model", SVC(C=1.0, random_state=seed))]),
        "Knn_Classifier": Pipeline(
            [("preprocess", preprocess()), ("model", KNeighborsClassifier(n_neighbors=15))]
        ),
        # One thread: a worker process per core scales better than threads fighting inside one.
        # 50 shallow trees per class: on the real data's holdout this scores a higher macro-F1 than
        # 200 trees of 31 leaves (0.847 vs 0.839) and predicts 6-10x faster (benchmarks/model_size.py).
        "LightGBM_Classifier": Pipeline(
            [
                ("preprocess", preprocess()),
                (
                    "model",
                    LGBMClassifier(
                        n_estimators=50,
                        learning_rate=0.1,
                        num_leaves=7,
                        n_jobs=1,
                        random_state=seed,
                        verbose=-1,
                    ),
                ),
            ]
        ),
    }


@dataclass(frozen=True)
class TrainedModel:
    name: str
    version: str
    macro_f1: float
    accuracy: float
    rows: int


def train_and_register(
    frame: pd.DataFrame,
    *,
    tracking_uri: str,
    experiment: str,
    trusted_types: Sequence[str],
    source: str,
    seed: int = 0,
    models: Sequence[str] | None = None,
    artifact_location: str | None = None,
    describe: Callable[[pd.DataFrame, pd.Series], str] | None = None,
) -> list[TrainedModel]:
    """Fit each demo pipeline, log it with signature and holdout metrics, register it and point the
    ``champion`` alias at the new version. ``artifact_location`` applies when the experiment is
    created (a server with proxied artifacts needs none; a sqlite URI would otherwise use ./mlruns).
    ``describe(x_train, y_train)``, when given, is the training data's profile, logged in each model's run
    at ``TRAINING_PROFILE_ARTIFACT``: the reference drift is measured against."""
    import mlflow
    from mlflow import MlflowClient
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import train_test_split

    features, labels = features_and_labels(frame)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.2, stratify=labels, random_state=seed
    )
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment, artifact_location=artifact_location)
    mlflow.set_experiment(experiment)
    signature = model_signature()
    example = x_train.dropna().head(3)
    profile = describe(x_train, y_train) if describe is not None else None
    trained = []
    for name, pipeline in build_pipelines(seed).items():
        if models is not None and name not in models:
            continue
        fit_x, fit_y = x_train, y_train
        if name == "SVC" and len(fit_x) > SVC_MAX_ROWS:
            fit_x, _, fit_y, _ = train_test_split(
                x_train, y_train, train_size=SVC_MAX_ROWS, stratify=y_train, random_state=seed
            )
        with mlflow.start_run(run_name=f"{name}-{source}"):
            pipeline.fit(fit_x, fit_y)
            predicted = pipeline.predict(x_test)
            metrics = {
                "holdout_macro_f1": float(f1_score(y_test, predicted, average="macro")),
                "holdout_accuracy": float(accuracy_score(y_test, predicted)),
            }
            mlflow.log_params({"training_data": source, "train_rows": len(fit_x), "seed": seed})
            mlflow.log_metrics(metrics)
            info = mlflow.sklearn.log_model(
                pipeline,
                name="model",
                signature=signature,
                input_example=example,
                registered_model_name=name,
                serialization_format="skops",
                skops_trusted_types=list(trusted_types),
                pip_requirements=pinned_requirements(name),
            )
            if profile is not None:
                mlflow.log_text(profile, TRAINING_PROFILE_ARTIFACT)
        version = str(info.registered_model_version)
        client.set_registered_model_alias(name, CHAMPION, version)
        log.info("registered %s v%s (macro-F1 %.3f)", name, version, metrics["holdout_macro_f1"])
        trained.append(
            TrainedModel(name, version, metrics["holdout_macro_f1"], metrics["holdout_accuracy"], len(fit_x))
        )
    return trained


def pinned_requirements(name: str) -> list[str]:
    """What a demo pipeline needs to load, pinned to the versions it was trained with. Stated rather than
    inferred: MLflow infers requirements by loading the model in a subprocess, 8 s per model here."""
    from importlib import metadata

    packages = ["scikit-learn", "skops", "numpy", "pandas", "scipy"]
    if name == DEMO_MODELS["lightgbm"]:
        packages.append("lightgbm")
    return [f"{package}=={metadata.version(package)}" for package in packages]


def model_signature() -> Any:
    """Every feature optional (``required=False``): the pipeline imputes what a client omits."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    columns: list[ColSpec | TensorSpec] = [
        ColSpec("double", name, required=False) for name in NUMERIC_FEATURES
    ]
    columns += [ColSpec("string", name, required=False) for name in CATEGORICAL_FEATURES]
    outputs: list[ColSpec | TensorSpec] = [ColSpec("string")]
    return ModelSignature(inputs=Schema(columns), outputs=Schema(outputs))


def missing_demo_models(tracking_uri: str) -> list[str]:
    """Demo models that have no ``champion`` version in the registry yet."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    missing = []
    for name in DEMO_MODELS.values():
        try:
            client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:
            missing.append(name)
    return missing
