"""LightGBM models saved by ``mlflow.lightgbm``: a ``Booster`` in LightGBM's own text format (no code
runs), or a scikit-learn-API model (``LGBMClassifier``...) with skops (safe) or pickle (opt-in). Each
answers as MLflow's LightGBM wrapper does: the booster's ``predict`` on the frame (probabilities for a
classifier booster, values for a regressor), the estimator's ``predict``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from streamml.models.inference import EstimatorModel, LoadedModel
from streamml.models.kinds.base import flavor, schema_of
from streamml.models.kinds.sklearn_estimator import SKOPS, load_skops
from streamml.models.refs import ModelRef

BOOSTER = "lightgbm.basic.Booster"
LIGHTGBM_TYPES = [
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRegressor",
]
"""The types a skops file of a LightGBM scikit-learn model holds beyond scikit-learn's."""


@dataclass
class BoosterModel(LoadedModel):
    booster: Any = None

    def call(self, frame: pd.DataFrame) -> Any:
        return self.booster.predict(frame)


class LightgbmNative:
    name = "LightGBM"

    def __init__(self, trusted_types: Sequence[str]) -> None:
        self.trusted_types = sorted({*trusted_types, *LIGHTGBM_TYPES})

    def claims(self, mlmodel: Any) -> bool:
        return "lightgbm" in mlmodel.flavors

    def executes_code(self, mlmodel: Any) -> bool:
        conf = flavor(mlmodel, "lightgbm")
        return conf.get("model_class", BOOSTER) != BOOSTER and conf.get("serialization_format") != SKOPS

    def load(self, directory: Path, mlmodel: Any, ref: ModelRef) -> LoadedModel:
        import lightgbm

        conf = flavor(mlmodel, "lightgbm")
        path = directory / conf["data"]
        schema = schema_of(mlmodel)
        common: dict[str, Any] = {"kind": self.name, "executes_code": self.executes_code(mlmodel)}
        if conf.get("model_class", BOOSTER) == BOOSTER:
            booster = lightgbm.Booster(model_file=str(path))
            return BoosterModel(ref.route, ref.name, ref.version, schema, **common, booster=booster)
        if conf.get("serialization_format") == SKOPS:
            estimator = load_skops(path, self.trusted_types, ref)
        else:
            import mlflow.lightgbm

            estimator = mlflow.lightgbm.load_model(str(directory))
        return EstimatorModel.of(ref, schema, estimator, **common)
