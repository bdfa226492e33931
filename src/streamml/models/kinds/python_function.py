"""Any other MLflow model, through MLflow's own ``python_function`` loader: a custom ``PythonModel`` with
its pre- and post-processing, a flavor streamml has no loader of its own for. Loading one runs code from
the artifact (its cloudpickled class, its code paths), as ``mlflow models serve`` does, so it is served
only where the operator opted in; it is called once per batch on the batch's frame, like every other kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from streamml.models.inference import LoadedModel
from streamml.models.kinds.base import schema_of
from streamml.models.refs import ModelRef


@dataclass
class PythonFunctionModel(LoadedModel):
    model: Any = None

    def call(self, frame: pd.DataFrame) -> Any:
        return self.model.predict(frame)


class PythonFunction:
    name = "python_function"

    def claims(self, mlmodel: Any) -> bool:
        return "python_function" in mlmodel.flavors

    def executes_code(self, mlmodel: Any) -> bool:
        return True

    def load(self, directory: Path, mlmodel: Any, ref: ModelRef) -> LoadedModel:
        import mlflow.pyfunc

        model = mlflow.pyfunc.load_model(str(directory))
        return PythonFunctionModel(
            ref.route,
            ref.name,
            ref.version,
            schema_of(mlmodel),
            kind=self.name,
            executes_code=True,
            model=model,
        )
