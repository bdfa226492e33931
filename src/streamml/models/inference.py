"""A loaded model version: validated records in, one prediction per record out, in one call.

:mod:`streamml.models.dispatch` decides which records go to which loaded model and when a call runs in a
thread; a :class:`LoadedModel` turns records into the model's input (a frame with the signature's column
types, or the checked numpy path of :mod:`streamml.models.fastpath`) and calls it. Each kind of model
(:mod:`streamml.models.kinds`) answers as MLflow's own ``python_function`` wrapper of that kind answers,
so a served prediction equals ``mlflow.pyfunc.load_model(uri).predict`` on the same frame. ``predict``
blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from streamml.errors import UnsupportedOutput
from streamml.models.outputs import Outputs, from_model_output
from streamml.models.refs import ModelRef
from streamml.models.schema import InputSchema
from streamml.output_kinds import PROBA
from streamml.rows import Rows, RowsLike

if TYPE_CHECKING:
    from streamml.models.fastpath import FastPipeline

DTYPES = {"double": np.float64, "float": np.float32, "long": np.int64, "integer": np.int32}
"""An MLflow column type -> the numpy type a frame holds it as (as MLflow's schema enforcement does)."""


@dataclass
class LoadedModel:
    """A model version ready to predict. Subclasses call the model as its kind's MLflow wrapper does."""

    route: str
    name: str
    version: str
    schema: InputSchema | None
    """The signature's inputs; None for a model logged without one (records are taken as they come)."""
    kind: str = ""
    """The kind of artifact it was loaded from (``streamml.models.kinds``), for logs and load states."""
    executes_code: bool = False
    """Loading it ran code from the artifact (pickle, a custom python_function): allowed per route only."""
    classes: list[Any] | None = field(default=None)
    """The labels a classifier answers, in the order of its probabilities; None when it does not say."""

    def frame(self, records: RowsLike) -> pd.DataFrame:
        return records_to_frame(records, self.schema)

    def predict(self, records: RowsLike) -> Outputs:
        """One predict call for all ``records``: one value per record."""
        rows = Rows.of(records)
        return from_model_output(self.call(self.frame(rows)), len(rows))

    def call(self, frame: pd.DataFrame) -> Any:
        """The model's own predict on a frame, returned as the model returns it."""
        raise NotImplementedError

    @property
    def has_proba(self) -> bool:
        return False

    def predict_proba(self, records: RowsLike) -> Outputs:
        """Class probabilities, one list per record, with the classes they stand for."""
        raise UnsupportedOutput(f"{self.name} v{self.version} has no predict_proba: ask for its predictions")

    def outputs(self, records: RowsLike, output: str) -> Outputs:
        return self.predict_proba(records) if output == PROBA else self.predict(records)

    @property
    def labels(self) -> list[str]:
        """The classes as text, sorted: what a challenger must share with its champion."""
        return sorted(str(c) for c in self.classes) if self.classes is not None else []


@dataclass
class EstimatorModel(LoadedModel):
    """A scikit-learn-API estimator (a scikit-learn pipeline, an LGBM or XGB classifier or regressor):
    ``predict`` on a frame, ``predict_proba`` where it has one."""

    estimator: Any = None
    fast: FastPipeline | None = None
    """The checked numpy path (:mod:`streamml.models.fastpath`), when the pipeline's steps allow one."""

    @classmethod
    def of(
        cls,
        ref: ModelRef,
        schema: InputSchema | None,
        estimator: Any,
        *,
        kind: str,
        executes_code: bool = False,
        fast: FastPipeline | None = None,
    ) -> EstimatorModel:
        """``estimator`` loaded for ``ref``, with the classes it was fitted on (``classes_``), if any."""
        classes = getattr(estimator, "classes_", None)
        return cls(
            ref.route,
            ref.name,
            ref.version,
            schema,
            kind=kind,
            executes_code=executes_code,
            classes=list(classes) if classes is not None else None,
            estimator=estimator,
            fast=fast,
        )

    def predict(self, records: RowsLike) -> Outputs:
        if self.fast is not None:
            rows = Rows.of(records)
            return from_model_output(self.fast.predict(rows), len(rows))
        return super().predict(records)

    def call(self, frame: pd.DataFrame) -> Any:
        return self.estimator.predict(frame)

    @property
    def has_proba(self) -> bool:
        return callable(getattr(self.estimator, "predict_proba", None))

    def predict_proba(self, records: RowsLike) -> Outputs:
        if not self.has_proba:
            return super().predict_proba(records)
        rows = Rows.of(records)
        probabilities = from_model_output(self.estimator.predict_proba(self.frame(rows)), len(rows))
        return Outputs(probabilities.values, classes=[_plain_class(c) for c in self.classes or []])


def _plain_class(label: Any) -> Any:
    return label.item() if isinstance(label, np.generic) else label


def records_to_frame(records: RowsLike, schema: InputSchema | None) -> pd.DataFrame:
    """The model's input frame, built column by column (much cheaper than per-row DataFrame work) with
    the signature's types: numbers as their numpy type (NaN where absent; an integer column with a gap
    stays float, as pandas keeps it), booleans, datetimes parsed from ISO 8601, strings as objects.
    Without a schema: the records' own columns, as pandas reads them."""
    rows = Rows.of(records)
    if schema is None:
        return pd.DataFrame.from_records(rows.records)
    columns: dict[str, Any] = {}
    nan = float("nan")
    for column in schema.columns:
        name = column.name
        given = rows.column(name)
        if column.type in DTYPES:
            dtype = DTYPES[column.type]
            try:
                columns[name] = np.asarray(given, dtype=dtype)
            except (TypeError, ValueError):  # an integer column with a gap: NaN needs a float
                columns[name] = np.asarray(given, dtype=np.float64)  # None -> NaN
            continue
        values = [nan if v is None else v for v in given]
        if column.type == "boolean" and all(isinstance(v, bool) for v in values):
            columns[name] = np.asarray(values, dtype=bool)
        elif column.type == "datetime":
            present = [None if v is nan else v for v in values]
            columns[name] = pd.to_datetime(pd.Series(present, dtype=object), format="ISO8601").to_numpy()
        else:
            columns[name] = pd.array(values, dtype=object)
    return pd.DataFrame(columns, columns=schema.names)
