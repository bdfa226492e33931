"""What every kind of model artifact provides (:class:`ModelKind`), and the ``MLmodel`` reading they share."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from streamml.models.inference import LoadedModel
from streamml.models.refs import ModelRef


class ModelKind(Protocol):
    """One kind of artifact: which versions it claims, and how it loads one (blocking)."""

    name: str
    """How the loader names it in messages, e.g. ``scikit-learn``."""

    def claims(self, mlmodel: Any) -> bool:
        """Whether this kind loads the version described by ``mlmodel`` (an ``mlflow.models.Model``)."""

    def executes_code(self, mlmodel: Any) -> bool:
        """Whether loading this version runs code the artifact brings (pickle, custom classes)."""

    def load(self, directory: Path, mlmodel: Any, ref: ModelRef) -> LoadedModel:
        """The model in ``directory`` (the version's downloaded artifacts), ready to predict; a
        :class:`~streamml.errors.ModelLoadError` saying why not."""


def flavor(mlmodel: Any, name: str) -> dict[str, Any]:
    """The flavor's configuration in the ``MLmodel`` file (empty when the version has no such flavor)."""
    return dict(mlmodel.flavors.get(name) or {})


def schema_of(mlmodel: Any) -> Any:
    """The version's input schema, or None when it was logged without a signature."""
    from streamml.models.schema import InputSchema

    signature = mlmodel.signature
    if signature is None or signature.inputs is None:
        return None
    return InputSchema.from_mlflow_signature(signature)
