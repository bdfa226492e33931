"""The kinds of model artifact the loader reads: one class per kind behind :class:`ModelKind`.

A kind looks at a version's ``MLmodel`` file and says whether it can load it (:meth:`ModelKind.claims`)
and whether loading it runs code from the artifact (:meth:`ModelKind.executes_code`: pickle, a custom
``python_function``; the loader allows that only where the operator opted in). The loader asks each kind
in turn, the generic ``python_function`` one last. Adding a kind of model is one new module here (a
class behind :class:`~streamml.models.kinds.base.ModelKind`) and one line in :func:`default_kinds`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from streamml.models.kinds.base import ModelKind
from streamml.models.kinds.lightgbm_native import LightgbmNative
from streamml.models.kinds.onnx_runtime import OnnxRuntime
from streamml.models.kinds.python_function import PythonFunction
from streamml.models.kinds.sklearn_estimator import SklearnEstimator
from streamml.models.kinds.xgboost_native import XgboostNative


def default_kinds(
    trusted_types: Sequence[str],
    *,
    fast_path: bool = True,
    compile_trees: bool = False,
    trees_cache: Path | None = None,
) -> list[ModelKind]:
    """Every kind streamml loads, the specific ones first."""

    return [
        SklearnEstimator(
            trusted_types, fast_path=fast_path, compile_trees=compile_trees, trees_cache=trees_cache
        ),
        LightgbmNative(trusted_types),
        XgboostNative(),
        OnnxRuntime(),
        PythonFunction(),
    ]


__all__ = ["ModelKind", "default_kinds"]
