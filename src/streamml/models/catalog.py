"""What the registry says about a model version, short of loading it: its input schema (from the
signature in its ``MLmodel`` file), its drift reference (the training data's profile logged in its run),
and whether a challenger can stand in for a champion. Each answer is cached per version.
"""

from __future__ import annotations

import asyncio
import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

from streamml.errors import ModelLoadError, ModelUnavailable
from streamml.models.artifacts import Artifacts
from streamml.models.drift import TRAINING_PROFILE_ARTIFACT, Reference
from streamml.models.loader import ModelLoader
from streamml.models.refs import ModelRef
from streamml.models.schema import InputSchema
from streamml.models.single_flight import SingleFlight

log = logging.getLogger(__name__)

_ABSENT = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"})
"""MLflow error codes meaning "no such thing" (as opposed to the registry failing)."""

Key = tuple[str, str]


class ModelCatalog:
    def __init__(self, client: Any, artifacts: Artifacts, loader: ModelLoader) -> None:
        self._client = client
        self.artifacts = artifacts
        self.loader = loader
        self._schemas: dict[Key, InputSchema | None] = {}
        self._schema_reads: SingleFlight[Key, InputSchema | None] = SingleFlight()
        self._references: dict[Key, Reference | None] = {}
        self._incompatible: dict[tuple[str, str, str], str | None] = {}

    async def schema(self, ref: ModelRef) -> InputSchema | None:
        """The input schema of a model version (its MLflow signature; None when it was logged without
        one); :class:`ModelUnavailable` when it cannot be read."""
        key = (ref.name, ref.version)
        if key not in self._schemas:
            loaded = self.loader.loaded(ref)
            if loaded is not None:
                self._schemas[key] = loaded.schema
            else:
                read = partial(asyncio.to_thread, self._read_schema, ref)
                self._schemas[key] = await self._schema_reads.run(key, read)
        return self._schemas[key]

    def _read_schema(self, ref: ModelRef) -> InputSchema | None:
        from mlflow.models import Model

        try:
            # Only the MLmodel file: the gateway needs the signature, not the model.
            signature = Model.load(self.artifacts.model(ref, "MLmodel")).signature
        except Exception as exc:
            raise ModelUnavailable(f"cannot read the signature of {ref.uri}: {exc}") from exc
        if signature is None or signature.inputs is None:
            return None  # logged without one: records are taken as they come
        try:
            return InputSchema.from_mlflow_signature(signature)
        except ValueError as exc:
            raise ModelLoadError(f"cannot serve {ref.uri}: {exc}") from exc

    async def reference(self, ref: ModelRef) -> Reference | None:
        """The training data's profile logged with a model version (its drift reference), or None when
        none was logged. A registry outage is not cached (asked again next time)."""
        key = (ref.name, ref.version)
        if key not in self._references:
            found, final = await asyncio.to_thread(self._read_reference, ref)
            if not final:
                return None
            self._references[key] = found
        return self._references[key]

    def _read_reference(self, ref: ModelRef) -> tuple[Reference | None, bool]:
        """(the reference or None, whether that answer is final)."""
        from mlflow.exceptions import MlflowException

        try:
            run_id = self._client.get_model_version(ref.name, ref.version).run_id
            if not run_id:
                return None, True
            path = self.artifacts.of_run(run_id, TRAINING_PROFILE_ARTIFACT)
            document = json.loads(Path(path).read_text("utf-8"))
            key = (ref.name, ref.version)
            schema = self._schemas[key] if key in self._schemas else self._read_schema(ref)
            if schema is None:
                return None, True  # no signature: no columns to compare
            return Reference.from_profile(document, schema.names), True
        except MlflowException as exc:
            if exc.error_code in _ABSENT:
                return None, True  # not logged with this version
            log.warning("cannot read the training profile of %s: %s", ref.uri, exc)
        except Exception as exc:  # the registry or its artifact store is unreachable
            log.warning("cannot read the training profile of %s: %s", ref.uri, exc)
        return None, False

    async def incompatibility(self, champion: ModelRef, challenger: ModelRef) -> str | None:
        """Why ``challenger`` cannot stand in for ``champion`` (None when it can): different input
        columns (names, types, which are required) or different output classes. Loads both."""
        key = (champion.name, champion.version, challenger.version)
        if key not in self._incompatible:
            self._incompatible[key] = await self._compare(champion, challenger)
        return self._incompatible[key]

    async def _compare(self, champion: ModelRef, challenger: ModelRef) -> str | None:
        old, new = await self.schema(champion), await self.schema(challenger)
        if (old.as_dict() if old else None) != (new.as_dict() if new else None):
            old_names, new_names = set(old.names if old else []), set(new.names if new else [])
            added, removed = sorted(new_names - old_names), sorted(old_names - new_names)
            detail = (
                f"added {added}, removed {removed}" if added or removed else "types or required flags differ"
            )
            return f"its input signature differs from the champion's ({detail})"
        old_classes = (await self.loader.load(champion)).labels
        new_classes = (await self.loader.load(challenger)).labels
        if old_classes != new_classes:
            return f"its output classes {new_classes} differ from the champion's {old_classes}"
        return None
