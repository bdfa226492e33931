"""Draw synthetic rows from a :class:`~streamml.synthetic.profile.Profile`: seeded, vectorised, with drift.

Rows come from the profile's Gaussian copula: correlated standard normals, pushed through each
column's marginal. Integer columns stay integers, values stay within the profiled bounds,
categories come from the known set and nulls appear at the profiled rates (``nulls=False`` turns
them off). Drift (``--drift``) shifts or scales numeric features, changes a category's share or
raises a null rate, for demos and monitoring tests.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from streamml.synthetic.profile import Profile
from streamml.synthetic.sampling import ColumnProfile, generate_modelled, rounded

_DRIFT = re.compile(
    r"^\s*(?P<column>[^=\[]+?)\s*"
    r"(?:\[(?P<category>[^\]]+)\]|(?P<null>:null))?\s*=\s*"
    r"(?P<value>[+\-*]?\s*[0-9.]+)\s*(?P<unit>sd)?\s*$"
)


@dataclass(frozen=True)
class Drift:
    """One change to the generated distribution.

    Forms: ``"Col=+1.5sd"`` (shift by standard deviations), ``"Col=+3"`` (shift in units),
    ``"Col=*1.2"`` (scale the spread around the mean), ``"Col[Category]=0.7"`` (that category's
    share), ``"Col:null=0.2"`` (null rate)."""

    column: str
    action: Literal["shift", "scale", "share", "null_rate"]
    amount: float
    category: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Drift:
        match = _DRIFT.match(spec)
        if not match:
            raise ValueError(
                f"cannot read drift {spec!r}; use 'Col=+1.5sd', 'Col=*1.2', 'Col[Cat]=0.7' or 'Col:null=0.2'"
            )
        column, raw = match["column"].strip(), match["value"].replace(" ", "")
        if match["category"]:
            return cls(column, "share", float(raw), match["category"].strip())
        if match["null"]:
            return cls(column, "null_rate", float(raw))
        if raw.startswith("*"):
            return cls(column, "scale", float(raw[1:]))
        return cls(column, "shift", float(raw), "sd" if match["unit"] else None)


def parse_drifts(specs: Iterable[str]) -> list[Drift]:
    return [Drift.parse(s) for s in specs]


def generate(
    profile: Profile,
    rows: int,
    *,
    seed: int = 0,
    nulls: bool = True,
    drift: Sequence[Drift] = (),
) -> pd.DataFrame:
    """``rows`` synthetic rows with every modelled column, in the real data's names and formats."""
    rng = np.random.default_rng(seed)
    columns = _with_marginal_drift(profile, drift)
    frame = generate_modelled(columns, profile.correlation, rows, rng)
    for column in columns:
        values = _apply_value_drift(frame[column.name].to_numpy(), column, drift)
        if nulls and column.null_rate > 0:
            missing = rng.random(rows) < column.null_rate
            values = values.astype(object if column.kind in ("categorical", "date") else float)
            values[missing] = None if values.dtype == object else np.nan
        frame[column.name] = values
    for column in columns:
        # Integer columns without nulls stay int64, as pandas reads them from the real CSV.
        if column.kind == "numeric" and column.integer and not frame[column.name].isna().any():
            frame[column.name] = frame[column.name].astype("int64")
    return frame


def _with_marginal_drift(profile: Profile, drift: Sequence[Drift]) -> list[ColumnProfile]:
    """Copies of the modelled columns with category shares and null rates changed as asked."""
    columns = {c.name: copy.deepcopy(c) for c in profile.modelled}
    for rule in drift:
        if rule.column not in columns:
            raise ValueError(f"drift names unknown column {rule.column!r}; columns: {sorted(columns)}")
        column = columns[rule.column]
        if rule.action == "null_rate":
            if not 0 <= rule.amount <= 1:
                raise ValueError(f"null rate for {rule.column!r} must be within 0..1")
            column.null_rate = rule.amount
        elif rule.action == "share":
            if column.kind != "categorical" or rule.category not in column.values:
                raise ValueError(f"{rule.column!r} has no category {rule.category!r}")
            if not 0 <= rule.amount <= 1:
                raise ValueError(f"share of {rule.category!r} must be within 0..1")
            probs = np.asarray(column.probs, dtype=float)
            chosen = column.values.index(rule.category)
            others = probs.sum() - probs[chosen]
            probs = probs * ((1 - rule.amount) / others if others else 0.0)
            probs[chosen] = rule.amount
            column.probs = probs.tolist()
        elif column.kind != "numeric":
            raise ValueError(f"{rule.column!r} is {column.kind}; shift and scale apply to numeric columns")
    return list(columns.values())


def _apply_value_drift(values: np.ndarray, column: ColumnProfile, drift: Sequence[Drift]) -> np.ndarray:
    rules = [r for r in drift if r.column == column.name and r.action in ("shift", "scale")]
    if not rules:
        return values
    out = values.astype(float)
    mean, std = column.mean or 0.0, column.std or 0.0
    for rule in rules:
        if rule.action == "shift":
            out = out + rule.amount * (std if rule.category == "sd" else 1.0)
        else:
            out = mean + (out - mean) * rule.amount
    return rounded(out, column)  # drifted values still respect the column's bounds and grid
