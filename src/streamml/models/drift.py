"""Drift of a route's recent inputs and predictions against the data its model version was trained on.

The reference is the training data's profile (the format ``streamml profile`` writes: per-column marginals
and null rates), logged beside the model in its MLflow run at :data:`TRAINING_PROFILE_ARTIFACT`. A worker
keeps a window of the records it predicted lately as running histograms over the reference's own bins
(:class:`DriftWindow`: counts per batch, added and evicted, never re-read from the stream); windows of
several workers merge by adding counts (:class:`WindowCounts`). Scores, per feature (the methods and
default threshold Evidently uses for samples this size):

- numeric: Wasserstein-1 distance divided by the reference's standard deviation ("how many standard
  deviations the distribution moved"); from the binned CDFs plus the exact distance of values beyond the
  reference's range;
- categorical: Jensen-Shannon distance (base 2, in [0, 1]); values never seen in training are their own
  category (counted, and they raise the distance);
- every feature: the change of its null rate.

A feature is drifted when its score or its null-rate change exceeds the threshold (default 0.1); the route
when at least ``share`` of its features are (default half). Prediction drift compares the window's class
mix with the training labels' mix (Jensen-Shannon). Fewer than ``min_records`` records: "insufficient
data", not a number; no reference logged with the version: "unknown".
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

TRAINING_PROFILE_ARTIFACT = "streamml/training_profile.json"
"""Where, in the run that logged a model, its training data's profile is (``log_training_profile``)."""
LABEL_COLUMN = "label"
"""The profile column holding the training labels (named in the profile's ``source.target``)."""
UNSEEN = "<unseen>"
"""The category of values a categorical feature never took in training."""


@dataclass(frozen=True)
class Thresholds:
    feature: float = 0.1
    null_rate: float = 0.1
    share: float = 0.5
    min_records: int = 1000


@dataclass(frozen=True)
class NumericReference:
    name: str
    edges: np.ndarray
    """Sorted distinct bin edges: the reference's support (discrete) or its percentiles."""
    cdf: np.ndarray
    """The reference's P(X <= edge)."""
    discrete: bool
    spread: float
    """The reference's standard deviation (what a distance is divided by)."""
    null_rate: float


@dataclass(frozen=True)
class CategoricalReference:
    name: str
    probs: dict[str, float]
    null_rate: float


@dataclass(frozen=True)
class Reference:
    numeric: list[NumericReference]
    categorical: list[CategoricalReference]
    labels: CategoricalReference | None

    @classmethod
    def from_profile(cls, document: Mapping[str, Any], features: Sequence[str]) -> Reference:
        """The reference of ``features`` (a model's inputs) in a profile document; features the profile
        lacks are left out."""
        columns = {c["name"]: c for c in document.get("columns", [])}
        target = document.get("source", {}).get("target", LABEL_COLUMN)
        numeric, categorical = [], []
        for name in features:
            column = columns.get(name)
            if column is None:
                continue
            if column["kind"] == "numeric":
                numeric.append(_numeric_reference(column))
            elif column["kind"] == "categorical":
                categorical.append(_categorical_reference(column))
        labels = columns.get(target)
        return cls(numeric, categorical, _categorical_reference(labels) if labels else None)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.numeric] + [r.name for r in self.categorical]


def _numeric_reference(column: Mapping[str, Any]) -> NumericReference:
    marginal = column["marginal"]
    values = np.asarray(marginal["values"], dtype=float)
    probs = np.asarray(marginal["probs"], dtype=float)
    discrete = marginal["type"] == "discrete"
    if discrete:
        cdf = np.cumsum(probs / probs.sum())
    else:  # quantiles: values at levels `probs`; a percentile grid is plenty for a distance
        step = max(len(values) // 100, 1)
        values, cdf = values[::step], probs[::step]
    edges = np.unique(values)
    if len(edges) < len(values):  # repeated quantile values: P(X <= v) is the highest level v appears at
        cdf = np.array([cdf[values <= edge].max() for edge in edges])
    std = column.get("std") or 0.0
    spread = std if std > 0 else max(float(edges[-1] - edges[0]), 1.0)
    return NumericReference(
        column["name"], edges, np.clip(cdf, 0.0, 1.0), discrete, spread, column.get("null_rate", 0.0)
    )


def _categorical_reference(column: Mapping[str, Any]) -> CategoricalReference:
    marginal = column["marginal"]
    total = sum(marginal["probs"]) or 1.0
    probs = {str(v): p / total for v, p in zip(marginal["values"], marginal["probs"], strict=True)}
    return CategoricalReference(column["name"], probs, column.get("null_rate", 0.0))


@dataclass
class NumericCounts:
    counts: np.ndarray
    """Values per bin: <= edges[0], (edges[0], edges[1]], ..., > edges[-1]."""
    below: float = 0.0
    """Sum of (edges[0] - x) over values below the reference's range."""
    above: float = 0.0
    """Sum of (x - edges[-1]) over values above it."""
    nulls: int = 0


@dataclass
class WindowCounts:
    """Histograms of a set of records over a reference's bins; windows merge by adding."""

    records: int = 0
    numeric: dict[str, NumericCounts] = field(default_factory=dict)
    categorical: dict[str, dict[str, int]] = field(default_factory=dict)
    """Feature -> category (or UNSEEN) -> count of present values."""
    categorical_nulls: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(
        cls, reference: Reference, records: Sequence[Mapping[str, Any]], labels: Sequence[str]
    ) -> WindowCounts:
        counts = cls(records=len(records))
        for ref in reference.numeric:
            values = _floats([record.get(ref.name) for record in records])
            present = values[~np.isnan(values)]
            bins = np.bincount(np.searchsorted(ref.edges, present, side="left"), minlength=len(ref.edges) + 1)
            counts.numeric[ref.name] = NumericCounts(
                bins,
                float((ref.edges[0] - present[present < ref.edges[0]]).sum()),
                float((present[present > ref.edges[-1]] - ref.edges[-1]).sum()),
                len(values) - len(present),
            )
        for cat in reference.categorical:
            found = Counter(record.get(cat.name) for record in records)
            nulls = found.pop(None, 0)
            seen: dict[str, int] = {}
            for value, n in found.items():
                key = str(value)
                if value != value:  # NaN, the one value unequal to itself
                    nulls += n
                    continue
                key = key if key in cat.probs else UNSEEN
                seen[key] = seen.get(key, 0) + n
            counts.categorical[cat.name], counts.categorical_nulls[cat.name] = seen, nulls
        counts.labels = dict(Counter(labels))
        return counts

    def add(self, other: WindowCounts, sign: int = 1) -> None:
        self.records += sign * other.records
        for name, theirs in other.numeric.items():
            mine = self.numeric.get(name)
            if mine is None:
                mine = self.numeric[name] = NumericCounts(np.zeros_like(theirs.counts))
            mine.counts = mine.counts + sign * theirs.counts
            mine.below += sign * theirs.below
            mine.above += sign * theirs.above
            mine.nulls += sign * theirs.nulls
        for name, found in other.categorical.items():
            mine_cat = self.categorical.setdefault(name, {})
            for key, n in found.items():
                mine_cat[key] = mine_cat.get(key, 0) + sign * n
            self.categorical_nulls[name] = self.categorical_nulls.get(
                name, 0
            ) + sign * other.categorical_nulls.get(name, 0)
        for label, n in other.labels.items():
            self.labels[label] = self.labels.get(label, 0) + sign * n

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "numeric": {
                name: {"counts": c.counts.tolist(), "below": c.below, "above": c.above, "nulls": c.nulls}
                for name, c in self.numeric.items()
            },
            "categorical": self.categorical,
            "categorical_nulls": self.categorical_nulls,
            "labels": self.labels,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowCounts:
        return cls(
            records=int(data["records"]),
            numeric={
                name: NumericCounts(
                    np.asarray(c["counts"], dtype=np.int64), c["below"], c["above"], c["nulls"]
                )
                for name, c in data["numeric"].items()
            },
            categorical={k: dict(v) for k, v in data["categorical"].items()},
            categorical_nulls=dict(data["categorical_nulls"]),
            labels=dict(data["labels"]),
        )


class DriftWindow:
    """A worker's recent records of one route and model version: the last ``max_records`` records or
    ``max_age_s`` seconds, whichever is fewer, kept as histograms of chunks of records plus their running
    sum. Records are binned ``chunk_records`` at a time: binning has a fixed cost per call (a dozen
    numpy operations per feature) that per-batch calls would pay for every small batch."""

    def __init__(
        self,
        reference: Reference,
        *,
        max_records: int = 5000,
        max_age_s: float = 300.0,
        chunk_records: int = 500,
    ) -> None:
        self.reference = reference
        self.max_records = max_records
        self.max_age_s = max_age_s
        self.chunk_records = chunk_records
        self.total = WindowCounts()
        self._chunks: deque[tuple[float, WindowCounts]] = deque()
        self._records: list[Mapping[str, Any]] = []
        self._labels: list[str] = []
        self._since: float | None = None

    def add(
        self, records: Sequence[Mapping[str, Any]], labels: Sequence[str], now: float | None = None
    ) -> None:
        now = time.time() if now is None else now
        self._since = now if self._since is None else self._since
        self._records += records
        self._labels += labels
        if len(self._records) >= self.chunk_records:
            self.flush(now)

    def flush(self, now: float | None = None) -> WindowCounts:
        """Bin what is waiting, drop what fell out of the window, and return the window's counts."""
        now = time.time() if now is None else now
        if self._records:
            chunk = WindowCounts.of(self.reference, self._records, self._labels)
            self._chunks.append((self._since or now, chunk))
            self.total.add(chunk)
            self._records, self._labels, self._since = [], [], None
        while self._chunks and (
            self._chunks[0][0] < now - self.max_age_s
            or (len(self._chunks) > 1 and self.total.records - self._chunks[0][1].records >= self.max_records)
        ):
            _, old = self._chunks.popleft()
            self.total.add(old, -1)
        return self.total


def _floats(values: list[Any]) -> np.ndarray:
    """Numbers as floats, absent values (None) as NaN; anything else (the gateway lets none through)
    as NaN too."""
    try:
        return np.array(values, dtype=float)
    except (TypeError, ValueError):
        return np.array([v if isinstance(v, int | float) else np.nan for v in values], dtype=float)


def wasserstein_normed(ref: NumericReference, counts: NumericCounts) -> float | None:
    """W1 between the reference's and the window's distributions, over the reference's spread."""
    n = int(counts.counts.sum())
    if n == 0:
        return None
    window_cdf = np.cumsum(counts.counts)[: len(ref.edges)] / n
    gaps = np.abs(ref.cdf - window_cdf)
    widths = np.diff(ref.edges)
    inside = (widths * gaps[:-1]).sum() if ref.discrete else (widths * (gaps[:-1] + gaps[1:]) / 2).sum()
    return float((inside + (counts.below + counts.above) / n) / ref.spread)


def jensen_shannon(reference: Mapping[str, float], found: Mapping[str, int]) -> float | None:
    """Jensen-Shannon distance (base 2) between reference shares and observed counts."""
    total = sum(found.values())
    if total == 0:
        return None
    keys = sorted(set(reference) | set(found))
    p = np.array([reference.get(k, 0.0) for k in keys])
    q = np.array([found.get(k, 0) / total for k in keys])
    m = (p + q) / 2
    divergence = (_kl(p, m) + _kl(q, m)) / 2
    return float(np.sqrt(max(divergence, 0.0)))


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    mask = p > 0
    return float((p[mask] * np.log2(p[mask] / q[mask])).sum())


def drift_report(reference: Reference | None, counts: WindowCounts, thresholds: Thresholds) -> dict[str, Any]:
    """Status ('ok', 'drifted', 'insufficient data', 'unknown'), per-feature scores and flags, the share
    of drifted features, and the prediction drift."""
    out: dict[str, Any] = {"records": counts.records}
    if reference is None:
        return out | {"status": "unknown", "reason": "no training profile was logged with this model version"}
    if counts.records < thresholds.min_records:
        return out | {
            "status": "insufficient data",
            "reason": f"{counts.records} records in the window, fewer than {thresholds.min_records}",
        }
    features: dict[str, Any] = {}
    for ref in reference.numeric:
        num = counts.numeric.get(ref.name)
        if num is None:
            continue
        score = wasserstein_normed(ref, num)
        features[ref.name] = _feature(
            "numeric", "wasserstein_normed", score, ref.null_rate, num.nulls, counts, thresholds
        )
    for cat in reference.categorical:
        found = counts.categorical.get(cat.name)
        if found is None:
            continue
        score = jensen_shannon(cat.probs, found)
        entry = _feature(
            "categorical",
            "jensen_shannon",
            score,
            cat.null_rate,
            counts.categorical_nulls.get(cat.name, 0),
            counts,
            thresholds,
        )
        features[cat.name] = entry | {"unseen": found.get(UNSEEN, 0)}
    drifted = [name for name, f in features.items() if f["drifted"]]
    share = len(drifted) / len(features) if features else 0.0
    prediction: dict[str, Any] | None = None
    if reference.labels is not None and counts.labels:
        score = jensen_shannon(reference.labels.probs, counts.labels)
        prediction = {
            "method": "jensen_shannon",
            "score": _round(score),
            "drifted": score is not None and score > thresholds.feature,
            "reference": {k: round(v, 4) for k, v in sorted(reference.labels.probs.items())},
            "window": dict(sorted(counts.labels.items())),
        }
    return out | {
        "status": "drifted" if features and share >= thresholds.share else "ok",
        "drifted_features": drifted,
        "drifted_share": round(share, 4),
        "features": features,
        "prediction": prediction,
        "thresholds": {
            "feature": thresholds.feature,
            "null_rate": thresholds.null_rate,
            "share": thresholds.share,
        },
    }


def _feature(
    kind: str,
    method: str,
    score: float | None,
    reference_nulls: float,
    nulls: int,
    counts: WindowCounts,
    thresholds: Thresholds,
) -> dict[str, Any]:
    null_rate = nulls / counts.records if counts.records else 0.0
    change = null_rate - reference_nulls
    return {
        "kind": kind,
        "method": method,
        "score": _round(score),
        "null_rate": round(null_rate, 4),
        "null_rate_reference": round(reference_nulls, 4),
        "null_rate_change": round(change, 4),
        "drifted": (score is not None and score > thresholds.feature) or abs(change) > thresholds.null_rate,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
