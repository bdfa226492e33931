"""The demo registry: training data for the demo models, and registries that hold them.

``streamml train`` and ``streamml up`` train on the real CSV when one is given, else on rows
generated from the shipped profile; tests and benchmarks get a private sqlite registry of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from streamml.models.training import TrainedModel, train_and_register


def training_frame(data: Path | None, rows: int, seed: int) -> tuple[pd.DataFrame, str]:
    """The real CSV when given, else ``rows`` rows generated from the shipped profile."""
    if data is not None:
        return pd.read_csv(data), f"csv:{data.name}"
    from streamml.synthetic.profile import Profile
    from streamml.synthetic.synth import generate

    return generate(Profile.load(), rows, seed=seed), f"synthetic:{rows}:seed={seed}"


def local_demo_registry(root: Path, *, rows: int, experiment: str, trusted_types: Sequence[str]) -> str:
    """A sqlite registry under ``root`` with the three demo models trained on ``rows`` synthetic rows;
    returns its tracking URI (for tests and benchmarks that need a real registry of their own)."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    frame, source = training_frame(None, rows, 0)
    train_demo_models(
        frame,
        tracking_uri=uri,
        experiment=experiment,
        trusted_types=trusted_types,
        source=source,
        artifact_location=(root / "artifacts").as_uri(),
    )
    return uri


def train_demo_models(frame: pd.DataFrame, **options: Any) -> list[TrainedModel]:
    """:func:`~streamml.models.training.train_and_register`, with the training data's profile logged
    beside each model (the reference ``streamml drift`` compares recent records with)."""
    from streamml.synthetic.profile import training_profile

    return train_and_register(frame, describe=lambda x, y: training_profile(x, y).to_json(), **options)
