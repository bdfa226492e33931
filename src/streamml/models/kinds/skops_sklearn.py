"""scikit-learn models saved by ``mlflow.sklearn`` in the skops format, loaded with an allow-list of
types that comes from our settings, never from the artifact: loading runs no code from the artifact.
Pipelines whose preprocessing steps the numpy fast path knows get it (:mod:`streamml.models.fastpath`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamml.errors import ModelLoadError
from streamml.models.inference import LoadedModel, records_to_frame
from streamml.models.refs import ModelRef
from streamml.models.schema import InputSchema

log = logging.getLogger(__name__)


class SkopsSklearn:
    name = "scikit-learn (skops)"

    def __init__(self, trusted_types: Sequence[str], *, fast_path: bool = True) -> None:
        self.trusted_types = list(trusted_types)
        self.fast_path = fast_path

    def claims(self, mlmodel: Any) -> bool:
        return "sklearn" in mlmodel.flavors

    def load(self, directory: Path, mlmodel: Any, ref: ModelRef) -> LoadedModel:
        flavor = mlmodel.flavors["sklearn"]
        if flavor.get("serialization_format") != "skops":
            raise ModelLoadError(
                f"{ref.uri} is serialized as {flavor.get('serialization_format')!r}; streamml loads "
                "only the skops format (log it with serialization_format='skops')"
            )
        import skops.io

        path = directory / flavor["pickled_model"]
        try:
            estimator = skops.io.load(path, trusted=self.trusted_types)
        except Exception as exc:
            untrusted = _untrusted_types(path)
            hint = (
                f"; untrusted types: {untrusted} (add to STREAMML_MLFLOW_TRUSTED_TYPES)" if untrusted else ""
            )
            raise ModelLoadError(f"cannot load {ref.uri} with skops: {exc}{hint}") from exc
        schema = InputSchema.from_mlflow_signature(mlmodel.signature)
        fast = None
        if self.fast_path:
            from streamml.models.fastpath import compile_pipeline

            fast = compile_pipeline(estimator, lambda records: records_to_frame(records, schema))
        log.info(
            "loaded %s v%s (%s)", ref.name, ref.version, "numpy fast path" if fast else "scikit-learn path"
        )
        return LoadedModel(ref.route, ref.name, ref.version, estimator, schema, fast)


def _untrusted_types(path: Path) -> list[str]:
    import skops.io

    try:
        return list(skops.io.get_untrusted_types(file=path))
    except Exception:
        return []
