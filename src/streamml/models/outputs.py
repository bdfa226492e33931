"""What a model answered, as JSON keeps it: one value per record, with the model's own types.

Whatever a model's predict returns — a numpy array, a pandas DataFrame or Series, a dict of arrays, a
list — is turned into one JSON-ready value per record the way MLflow's scoring server turns a whole
answer into JSON (``mlflow.pyfunc.scoring_server.predictions_to_json``): numbers stay numbers, booleans
booleans, strings strings; a DataFrame row becomes an object with the frame's column names; a row of a
2-D array a list. A batch's answer is split by record, so a request's share of it is what the model
answers for that request alone; :meth:`Outputs.answer` lays a request's values out again as MLflow's
protocol does (a dict of arrays as one object of lists).
"""

from __future__ import annotations

import base64
import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


class OutputMismatch(ValueError):
    """The model answered for another number of records than it was given."""


@dataclass(frozen=True)
class Outputs:
    """A batch's predictions, one JSON-ready value per record."""

    values: list[Any]
    columns: list[str] | None = None
    """Set when the model answered a dict of arrays: a request's answer is then ``{column: [values]}``
    in MLflow's protocol (one object per record everywhere else)."""
    classes: list[Any] | None = None
    """For probabilities: the class each position of a record's list stands for."""

    def __len__(self) -> int:
        return len(self.values)

    def slice(self, start: int, stop: int) -> Outputs:
        return Outputs(self.values[start:stop], self.columns, self.classes)

    def answer(self, values: Sequence[Any]) -> Any:
        """A request's values laid out as MLflow's scoring protocol answers them."""
        if self.columns is None:
            return list(values)
        return {column: [value[column] for value in values] for column in self.columns}

    @property
    def categorical(self) -> bool:
        """Every value is a label (a string, an integer or a boolean): counted by class."""
        return all(isinstance(v, str | bool | int) and not isinstance(v, float) for v in self.values)


def from_model_output(raw: Any, records: int) -> Outputs:
    """One value per record of whatever the model's predict returned for ``records`` records."""
    columns = None
    if isinstance(raw, pd.DataFrame):
        values = [_plain(row) for row in raw.to_dict(orient="records")]
    elif isinstance(raw, pd.Series):
        values = [_plain(row) for row in pd.DataFrame(raw).to_dict(orient="records")]
    elif isinstance(raw, dict):
        arrays = {str(name): _rows(array) for name, array in raw.items()}
        lengths = {len(rows) for rows in arrays.values()}
        if lengths != {records}:
            raise OutputMismatch(
                f"the model answered columns of {sorted(lengths)} rows for {records} records"
            )
        columns = list(arrays)
        values = [{name: arrays[name][i] for name in columns} for i in range(records)]
    else:
        values = _rows(raw)
    if len(values) != records:
        raise OutputMismatch(f"the model answered {len(values)} values for {records} records")
    return Outputs(values, columns)


def _rows(raw: Any) -> list[Any]:
    if isinstance(raw, np.ndarray):
        return [_plain(value) for value in (raw.tolist() if raw.dtype != object else list(raw))]
    if isinstance(raw, list | tuple):
        return [_plain(value) for value in raw]
    return [_plain(value) for value in np.asarray(raw).tolist()]


def _plain(value: Any) -> Any:
    """A JSON-ready value, converted as MLflow's ``NumpyEncoder`` converts it."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in (value.tolist() if value.dtype != object else list(value))]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, bytes | bytearray):
        return base64.encodebytes(bytes(value)).decode("ascii")
    if isinstance(value, pd.Timestamp | datetime.date | datetime.datetime | datetime.time):
        return value.isoformat()
    return value
