"""The kinds of model artifact the loader reads: one class per kind behind :class:`ModelKind`.

A kind looks at a version's ``MLmodel`` file and says whether it can load it (:meth:`ModelKind.claims`);
the loader asks each kind in turn. Adding a kind of model is one new class here and one line in
:func:`default_kinds`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from streamml.models.inference import LoadedModel
from streamml.models.refs import ModelRef


class ModelKind(Protocol):
    """One kind of artifact: which versions it claims, and how it loads one (blocking)."""

    name: str
    """How the loader names it in messages, e.g. ``scikit-learn (skops)``."""

    def claims(self, mlmodel: Any) -> bool:
        """Whether this kind loads the version described by ``mlmodel`` (an ``mlflow.models.Model``)."""

    def load(self, directory: Path, mlmodel: Any, ref: ModelRef) -> LoadedModel:
        """The model in ``directory`` (the version's downloaded artifacts), ready to predict; a
        :class:`~streamml.errors.ModelLoadError` saying why not."""


def default_kinds(trusted_types: Sequence[str], *, fast_path: bool = True) -> list[ModelKind]:
    from streamml.models.kinds.skops_sklearn import SkopsSklearn

    return [SkopsSklearn(trusted_types, fast_path=fast_path)]
