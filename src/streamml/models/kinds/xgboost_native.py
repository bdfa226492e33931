"""XGBoost models saved by ``mlflow.xgboost``, in XGBoost's own formats (JSON, UBJSON, its binary): no
code runs to load them. The class the flavor names is taken only from XGBoost's own; each answers as
MLflow's XGBoost wrapper does (a booster on a ``DMatrix`` of the frame, an estimator's ``predict``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from streamml.errors import ModelLoadError
from streamml.models.inference import EstimatorModel, LoadedModel
from streamml.models.kinds.base import flavor, schema_of
from streamml.models.refs import ModelRef

BOOSTER = "xgboost.core.Booster"
CLASSES = {
    BOOSTER: ("xgboost", "Booster"),
    "xgboost.sklearn.XGBClassifier": ("xgboost", "XGBClassifier"),
    "xgboost.sklearn.XGBRegressor": ("xgboost", "XGBRegressor"),
    "xgboost.sklearn.XGBRanker": ("xgboost", "XGBRanker"),
    "xgboost.sklearn.XGBRFClassifier": ("xgboost", "XGBRFClassifier"),
    "xgboost.sklearn.XGBRFRegressor": ("xgboost", "XGBRFRegressor"),
}
"""The flavor's ``model_class`` -> XGBoost's class: an artifact cannot name any other to instantiate."""


@dataclass
class XgboostBoosterModel(LoadedModel):
    booster: Any = None

    def call(self, frame: pd.DataFrame) -> Any:
        import xgboost

        return self.booster.predict(xgboost.DMatrix(frame), validate_features=True)


class XgboostNative:
    name = "XGBoost"

    def claims(self, mlmodel: Any) -> bool:
        return "xgboost" in mlmodel.flavors

    def executes_code(self, mlmodel: Any) -> bool:
        return False

    def load(self, directory: Path, mlmodel: Any, ref: ModelRef) -> LoadedModel:
        conf = flavor(mlmodel, "xgboost")
        model_class = conf.get("model_class", BOOSTER)
        if model_class not in CLASSES:
            raise ModelLoadError(f"{ref.uri} names the XGBoost class {model_class!r}, which is not XGBoost's")
        try:
            import xgboost
        except ImportError:
            raise ModelLoadError(
                f"{ref.uri} is an XGBoost model and xgboost is not installed in the worker's environment "
                "(pip install 'streamml[xgboost]')"
            ) from None
        model = getattr(xgboost, CLASSES[model_class][1])()
        model.load_model(str(directory / conf["data"]))
        schema = schema_of(mlmodel)
        if model_class == BOOSTER:
            return XgboostBoosterModel(
                ref.route, ref.name, ref.version, schema, kind=self.name, booster=model
            )
        return EstimatorModel.of(ref, schema, model, kind=self.name)
