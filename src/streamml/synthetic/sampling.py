"""A column's marginal distribution, and drawing rows from marginals joined by a Gaussian copula.

The primitives that both :mod:`~streamml.synthetic.profile` (fitting, calibration) and
:mod:`~streamml.synthetic.synth` (generation, drift) use; neither of those imports the other for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

Kind = Literal["numeric", "categorical", "date", "identifier"]


@dataclass
class ColumnProfile:
    name: str
    kind: Kind
    null_rate: float = 0.0
    integer: bool = False
    decimals: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    std: float | None = None
    values: list[Any] = field(default_factory=list)
    """Discrete support (numeric/date offsets), categories, or quantile values."""
    probs: list[float] = field(default_factory=list)
    """Probabilities of ``values`` (discrete, categorical) or quantile levels (continuous)."""
    marginal: Literal["discrete", "quantiles", "none"] = "none"
    date_origin: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "null_rate": round_sig(self.null_rate),
        }
        if self.kind == "numeric":
            out |= {
                "integer": self.integer,
                "decimals": self.decimals,
                "min": self.minimum,
                "max": self.maximum,
                "mean": round_sig(self.mean),
                "std": round_sig(self.std),
            }
        if self.kind == "date":
            out["origin"] = self.date_origin
        if self.kind != "identifier":
            out["marginal"] = {
                "type": self.marginal,
                "values": self.values,
                "probs": [round_sig(p) for p in self.probs],
            }
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColumnProfile:
        marginal = data.get("marginal", {})
        return cls(
            name=data["name"],
            kind=data["kind"],
            null_rate=data.get("null_rate", 0.0),
            integer=data.get("integer", False),
            decimals=data.get("decimals"),
            minimum=data.get("min"),
            maximum=data.get("max"),
            mean=data.get("mean"),
            std=data.get("std"),
            values=marginal.get("values", []),
            probs=marginal.get("probs", []),
            marginal=marginal.get("type", "none"),
            date_origin=data.get("origin"),
        )

    @property
    def modelled(self) -> bool:
        return self.kind != "identifier"


def discrete_cdf(column: ColumnProfile) -> tuple[np.ndarray, np.ndarray]:
    """Support and cumulative probabilities of a discrete marginal (normalised to end at 1)."""
    probs = np.asarray(column.probs, dtype=float)
    cumulative = np.cumsum(probs / probs.sum())
    return np.asarray(column.values, dtype=object if column.kind == "categorical" else float), cumulative


def draw_latent(correlation: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    """``rows`` draws of correlated standard normals (Cholesky of the copula matrix)."""
    cholesky = np.linalg.cholesky(correlation)
    return rng.standard_normal((rows, len(correlation))) @ cholesky.T


def generate_modelled(
    columns: Sequence[ColumnProfile], correlation: np.ndarray, rows: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Rows through the copula and each column's marginal, before drift and nulls."""
    uniform = stats.norm.cdf(draw_latent(correlation, rows, rng))
    return pd.DataFrame({c.name: _from_uniform(uniform[:, j], c) for j, c in enumerate(columns)})


def _discrete_index(u: np.ndarray, cumulative: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cumulative, u, side="right"), len(cumulative) - 1)


def _from_uniform(u: np.ndarray, column: ColumnProfile) -> np.ndarray:
    if column.marginal == "discrete":
        support, cumulative = discrete_cdf(column)
        values = support[_discrete_index(u, cumulative)]
        if column.kind == "date":
            origin = np.datetime64(column.date_origin, "D")
            dates = np.datetime_as_string(origin + values.astype("timedelta64[D]"), unit="D")
            return np.asarray(dates, dtype=object)
        return np.asarray(values)
    values = np.interp(u, np.asarray(column.probs), np.asarray(column.values))
    return rounded(values, column)


def rounded(values: np.ndarray, column: ColumnProfile) -> np.ndarray:
    if column.minimum is not None and column.maximum is not None:
        values = np.clip(values, column.minimum, column.maximum)
    if column.integer:
        return np.round(values)
    if column.decimals is not None:
        return np.round(values, column.decimals)
    return values


def round_sig(x: float | None, digits: int = 6) -> float | None:
    return None if x is None else float(f"{x:.{digits}g}")
