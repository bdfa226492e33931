"""scikit-learn models saved by ``mlflow.sklearn``: with skops (loaded with an allow-list of types that
comes from our settings, never from the artifact: no code runs), or with pickle or cloudpickle (which
runs code from the artifact: only where the operator opted in). Pipelines whose preprocessing steps the
numpy fast path knows get it (:mod:`streamml.models.fastpath`, checked against scikit-learn at load).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamml.errors import ModelLoadError
from streamml.models.inference import EstimatorModel, records_to_frame
from streamml.models.kinds.base import flavor, schema_of
from streamml.models.refs import ModelRef

log = logging.getLogger(__name__)

SKOPS = "skops"


class SklearnEstimator:
    name = "scikit-learn"

    def __init__(
        self,
        trusted_types: Sequence[str],
        *,
        fast_path: bool = True,
        compile_trees: bool = False,
        trees_cache: Path | None = None,
    ) -> None:
        self.trusted_types = list(trusted_types)
        self.fast_path = fast_path
        self.compile_trees = compile_trees
        self.trees_cache = trees_cache

    def claims(self, mlmodel: Any) -> bool:
        return "sklearn" in mlmodel.flavors

    def executes_code(self, mlmodel: Any) -> bool:
        return flavor(mlmodel, "sklearn").get("serialization_format") != SKOPS

    def load(self, directory: Path, mlmodel: Any, ref: ModelRef) -> EstimatorModel:
        conf = flavor(mlmodel, "sklearn")
        if conf.get("serialization_format") == SKOPS:
            estimator = load_skops(directory / conf["pickled_model"], self.trusted_types, ref)
        else:
            import mlflow.sklearn

            estimator = mlflow.sklearn.load_model(str(directory))
        schema = schema_of(mlmodel)
        fast = None
        if self.fast_path and schema is not None:
            from streamml.models.fastpath import compile_pipeline

            fast = compile_pipeline(
                estimator,
                lambda records: records_to_frame(records, schema),
                arrow_schema=schema.arrow_schema(),
                compile_trees=self.compile_trees,
                trees_cache=self.trees_cache,
            )
        path = "scikit-learn path"
        if fast is not None:
            path = "numpy fast path; compiling its trees" if fast.compiling_trees else "numpy fast path"
        log.info("loaded %s v%s (%s, %s)", ref.name, ref.version, conf.get("serialization_format"), path)
        return EstimatorModel.of(
            ref, schema, estimator, kind=self.name, executes_code=self.executes_code(mlmodel), fast=fast
        )


def load_skops(path: Path, trusted_types: Sequence[str], ref: ModelRef) -> Any:
    """An estimator from a skops file, allowing only scikit-learn's types and ``trusted_types``."""
    import skops.io

    try:
        return skops.io.load(path, trusted=list(trusted_types))
    except Exception as exc:
        untrusted = _untrusted_types(path)
        hint = f"; untrusted types: {untrusted} (add to STREAMML_MLFLOW_TRUSTED_TYPES)" if untrusted else ""
        raise ModelLoadError(f"cannot load {ref.uri} with skops: {exc}{hint}") from exc


def _untrusted_types(path: Path) -> list[str]:
    import skops.io

    try:
        return list(skops.io.get_untrusted_types(file=path))
    except Exception:
        return []
