"""A dataset's statistical profile: per-column marginals, null rates and a Gaussian copula.

``streamml profile data.csv -o profile.json`` writes one; the generator in :mod:`streamml.synthetic.synth`
draws rows from it. The employee burn-out profile ships as package data, so nothing needs the real
CSV at run time.

How columns are modelled:
- identifier: unique per row (e.g. an employee ID): recorded, never generated;
- categorical: category shares (the copula sees the category's interval of the CDF);
- numeric with few distinct values (<= ``DISCRETE_MAX_VALUES``): the exact value frequencies, which
  keeps integers integral and a one-decimal score on its grid;
- numeric otherwise: ``QUANTILES`` quantiles, linearly interpolated;
- date: day offsets from the first date, as a discrete numeric.
The dependence between all non-identifier columns is a Gaussian copula: the correlation matrix of
the columns' normal scores (mid-CDF of each value), calibrated so that generated data reproduces the
real Pearson correlations despite discretisation.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from streamml.models.drift import LABEL_COLUMN, TRAINING_PROFILE_ARTIFACT
from streamml.synthetic.sampling import ColumnProfile, discrete_cdf, generate_modelled, round_sig

PROFILE_FORMAT = "streamml-profile"
PROFILE_VERSION = 1
DISCRETE_MAX_VALUES = 400
QUANTILES = 1001
SHIPPED_PROFILE = "employee_burnout.profile.json"
_FLAT_LIST = re.compile(r"\[[^\[\]{}]*\]")


@dataclass
class Profile:
    columns: list[ColumnProfile]
    correlation: np.ndarray
    """Copula correlation over the modelled columns, in their order."""
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def modelled(self) -> list[ColumnProfile]:
        return [c for c in self.columns if c.modelled]

    def column(self, name: str) -> ColumnProfile:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"no column {name!r} in the profile; columns: {[c.name for c in self.columns]}")

    def to_json(self) -> str:
        document = {
            "format": PROFILE_FORMAT,
            "version": PROFILE_VERSION,
            "source": self.source,
            "columns": [c.as_dict() for c in self.columns],
            "copula": {
                "columns": [c.name for c in self.modelled],
                "correlation": [[round_sig(x, 5) for x in row] for row in self.correlation.tolist()],
            },
        }
        text = json.dumps(document, indent=1, ensure_ascii=False)
        # One line per flat list (a marginal, a correlation row) keeps the file short and diffable.
        return _FLAT_LIST.sub(lambda m: json.dumps(json.loads(m.group(0)), ensure_ascii=False), text) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Profile:
        data = json.loads(text)
        if data.get("format") != PROFILE_FORMAT or data.get("version") != PROFILE_VERSION:
            raise ValueError(f"not a {PROFILE_FORMAT} v{PROFILE_VERSION} file")
        columns = [ColumnProfile.from_dict(c) for c in data["columns"]]
        return cls(columns, np.asarray(data["copula"]["correlation"], dtype=float), data.get("source", {}))

    @classmethod
    def load(cls, path: Path | None = None) -> Profile:
        """A profile file, or the shipped employee burn-out profile when ``path`` is None."""
        if path is None:
            text = resources.files("streamml.data").joinpath(SHIPPED_PROFILE).read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        return cls.from_json(text)


def profile_csv(path: Path, *, seed: int = 0) -> Profile:
    frame = pd.read_csv(path)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    profile = profile_frame(frame, seed=seed)
    profile.source = {"file": Path(path).name, "rows": len(frame), "sha256": digest}
    return profile


def profile_frame(frame: pd.DataFrame, *, seed: int = 0, copula: bool = True) -> Profile:
    """The profile of a frame; ``copula=False`` skips fitting the dependence (seconds of calibration)
    and records independent columns: marginals and null rates are all drift needs."""
    columns = [_profile_column(frame[name]) for name in frame.columns]
    modelled = [c for c in columns if c.modelled]
    if not copula:
        return Profile(columns, np.eye(len(modelled)))
    scores = pd.DataFrame({c.name: normal_scores(frame[c.name], c) for c in modelled})
    start = _nearest_correlation(scores.corr().to_numpy())
    # The copula is judged by what users compare: Pearson correlations of the values themselves
    # (categories by their normal score), pairwise over rows where both are present.
    target = pd.DataFrame({c.name: comparable(frame[c.name], c) for c in modelled}).corr().to_numpy()
    correlation = _calibrate(modelled, start, np.nan_to_num(target), seed=seed)
    return Profile(columns, correlation)


def _profile_column(series: pd.Series) -> ColumnProfile:
    name = str(series.name)
    present = series.dropna()
    null_rate = 1.0 - len(present) / max(len(series), 1)
    if present.nunique() == len(series) and not pd.api.types.is_float_dtype(series):
        return ColumnProfile(name, "identifier", null_rate)
    if pd.api.types.is_numeric_dtype(series):
        return _numeric_profile(name, present.astype(float), null_rate)
    dates = pd.to_datetime(present, format="%Y-%m-%d", errors="coerce")
    if dates.notna().all():
        origin = dates.min()
        offsets = (dates - origin).dt.days.astype(float)
        values, probs = _frequencies(offsets)
        return ColumnProfile(
            name,
            "date",
            null_rate,
            integer=True,
            values=values,
            probs=probs,
            marginal="discrete",
            date_origin=origin.strftime("%Y-%m-%d"),
        )
    shares = present.astype(str).value_counts(normalize=True, sort=True)
    return ColumnProfile(
        name,
        "categorical",
        null_rate,
        values=[str(v) for v in shares.index],
        probs=[float(p) for p in shares.to_numpy()],
        marginal="discrete",
    )


def _numeric_profile(name: str, present: pd.Series, null_rate: float) -> ColumnProfile:
    integer = bool(np.all(np.mod(present.to_numpy(), 1) == 0))
    column = ColumnProfile(
        name,
        "numeric",
        null_rate,
        integer=integer,
        decimals=0 if integer else _decimals(present),
        minimum=float(present.min()),
        maximum=float(present.max()),
        mean=float(present.mean()),
        std=float(present.std()),
    )
    if present.nunique() <= DISCRETE_MAX_VALUES:
        column.values, column.probs = _frequencies(present)
        column.marginal = "discrete"
    else:
        levels = np.linspace(0.0, 1.0, QUANTILES)
        column.probs = levels.tolist()
        column.values = [float(v) for v in np.quantile(present.to_numpy(), levels)]
        column.marginal = "quantiles"
    return column


def _frequencies(values: pd.Series) -> tuple[list[Any], list[float]]:
    shares = values.value_counts(normalize=True).sort_index()
    support = [int(v) if float(v).is_integer() else float(v) for v in shares.index]
    return support, [float(p) for p in shares.to_numpy()]


def _decimals(values: pd.Series, most: int = 6) -> int | None:
    """Smallest number of decimals that represents every value (None for truly continuous data)."""
    array = values.to_numpy()
    for digits in range(most + 1):
        if np.allclose(np.round(array, digits), array, rtol=0, atol=1e-9):
            return digits
    return None


def normal_scores(series: pd.Series, column: ColumnProfile) -> np.ndarray:
    """Each value's normal score at the middle of its CDF step (NaN stays NaN)."""
    out = np.full(len(series), np.nan)
    mask = series.notna().to_numpy()
    if column.kind == "categorical":
        support, cumulative = discrete_cdf(column)
        position = {v: i for i, v in enumerate(support)}
        index = np.array([position[str(v)] for v in series[mask]])
        u = cumulative[index] - np.asarray(column.probs)[index] / 2 / sum(column.probs)
    elif column.kind == "date":
        origin = pd.Timestamp(str(column.date_origin))
        days = (pd.to_datetime(series[mask]) - origin).dt.days.to_numpy(dtype=float)
        u = _mid_cdf(days, column)
    else:
        u = _mid_cdf(series[mask].to_numpy(dtype=float), column)
    out[mask] = stats.norm.ppf(np.clip(u, 1e-9, 1 - 1e-9))
    return out


def _mid_cdf(values: np.ndarray, column: ColumnProfile) -> np.ndarray:
    if column.marginal == "discrete":
        support, cumulative = discrete_cdf(column)
        index = np.clip(np.searchsorted(support.astype(float), values), 0, len(support) - 1)
        below = np.where(index > 0, cumulative[np.maximum(index - 1, 0)], 0.0)
        return np.asarray((below + cumulative[index]) / 2, dtype=float)
    return np.asarray(np.interp(values, np.asarray(column.values), np.asarray(column.probs)), dtype=float)


def _nearest_correlation(matrix: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """Clip eigenvalues so the matrix is a valid (positive definite) correlation matrix."""
    matrix = np.nan_to_num((matrix + matrix.T) / 2, nan=0.0)
    np.fill_diagonal(matrix, 1.0)
    eigenvalues, vectors = np.linalg.eigh(matrix)
    fixed = vectors @ np.diag(np.maximum(eigenvalues, floor)) @ vectors.T
    scale = np.sqrt(np.diag(fixed))
    fixed = np.asarray(fixed / np.outer(scale, scale), dtype=float)
    np.fill_diagonal(fixed, 1.0)
    return fixed


def comparable(series: pd.Series, column: ColumnProfile) -> np.ndarray:
    """Values as numbers for correlation: numerics as they are, dates as day offsets, categories
    by their normal score."""
    if column.kind == "numeric":
        return series.to_numpy(dtype=float)
    if column.kind == "date":
        origin = pd.Timestamp(str(column.date_origin))
        return (pd.to_datetime(series) - origin).dt.days.to_numpy(dtype=float)
    return normal_scores(series, column)


def _calibrate(
    modelled: list[ColumnProfile],
    start: np.ndarray,
    target: np.ndarray,
    *,
    seed: int,
    rounds: int = 8,
    rows: int = 60_000,
) -> np.ndarray:
    """Adjust the copula until generated data correlates like the real data.

    Discretisation and skewed marginals change correlations between the latent Gaussian and the
    values; a few fixed-point rounds (generate, compare, correct) undo that. Seeded, so the same
    CSV always gives the same profile."""
    correlation = start.copy()
    for _ in range(rounds):
        frame = generate_modelled(modelled, correlation, rows, np.random.default_rng(seed))
        values = pd.DataFrame({c.name: comparable(frame[c.name], c) for c in modelled})
        achieved = np.nan_to_num(values.corr().to_numpy())
        correlation = _nearest_correlation(correlation + (target - achieved))
    return correlation


def training_profile(features: pd.DataFrame, labels: pd.Series | None = None) -> Profile:
    """The reference drift is measured against: the training inputs' marginals and null rates, and the
    training labels' class mix as the column ``label`` (named in ``source.target``)."""
    frame = features.copy()
    if labels is not None:
        frame[LABEL_COLUMN] = np.asarray(labels).astype(str)
    profile = profile_frame(frame, copula=False)
    profile.source = {"rows": len(frame), "target": LABEL_COLUMN if labels is not None else None}
    return profile


def log_training_profile(features: pd.DataFrame, labels: pd.Series | None = None) -> Profile:
    """Log the training data's profile in the active MLflow run, where streamml looks for a model
    version's drift reference. Call it in the run that logs the model::

        with mlflow.start_run():
            model.fit(x_train, y_train)
            mlflow.sklearn.log_model(model, name="model", registered_model_name="MyModel", ...)
            log_training_profile(x_train, y_train)
    """
    import mlflow

    profile = training_profile(features, labels)
    mlflow.log_text(profile.to_json(), TRAINING_PROFILE_ARTIFACT)
    return profile
