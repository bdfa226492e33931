"""A loaded model version: validated records in, class labels out, in one predict call.

:mod:`streamml.models.dispatch` decides which records go to which loaded model and when a call runs in a
thread; this module only turns records into the model's input (the checked numpy path of
:mod:`streamml.models.fastpath`, else a frame for the scikit-learn pipeline) and calls it. ``predict``
blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from streamml.models.schema import NUMERIC_TYPES, InputSchema

if TYPE_CHECKING:
    from streamml.models.fastpath import FastPipeline


@dataclass
class LoadedModel:
    """A deserialized model version and the schema its inputs follow."""

    route: str
    name: str
    version: str
    estimator: Any
    schema: InputSchema
    fast: FastPipeline | None = None
    """The checked numpy path (:mod:`streamml.models.fastpath`), when the pipeline's steps allow one."""

    @property
    def classes(self) -> list[str]:
        """The labels the model can answer, sorted (empty if the estimator does not say)."""
        classes = getattr(self.estimator, "classes_", None)
        return sorted(str(c) for c in classes) if classes is not None else []

    def predict(self, records: Sequence[dict[str, Any]]) -> list[str]:
        """One predict call for all ``records``; absent features become NaN for the imputers."""
        if self.fast is not None:
            labels = self.fast.predict(records)
        else:
            labels = self.estimator.predict(records_to_frame(records, self.schema))
        return [str(label) for label in labels]


def records_to_frame(records: Sequence[dict[str, Any]], schema: InputSchema) -> pd.DataFrame:
    """Build the model's input frame column by column (much cheaper than per-row DataFrame work)."""
    columns: dict[str, Any] = {}
    nan = float("nan")
    for column in schema.columns:
        name = column.name
        if column.type in NUMERIC_TYPES:
            values = [record.get(name, nan) for record in records]
            columns[name] = np.asarray(values, dtype=np.float64)
        else:
            columns[name] = pd.array([record.get(name, nan) for record in records], dtype=object)
    return pd.DataFrame(columns, columns=schema.names)
