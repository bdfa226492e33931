"""Loading model versions: download the artifacts, hand them to the kind that claims them
(:mod:`streamml.models.kinds`), keep the loaded model for as long as the process lives, and remember a
failed load for a while so a version that cannot load is not downloaded again for every batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from streamml.errors import ModelLoadError, ModelUnavailable
from streamml.models.artifacts import Artifacts
from streamml.models.inference import LoadedModel
from streamml.models.kinds import ModelKind
from streamml.models.refs import ModelRef

log = logging.getLogger(__name__)

Key = tuple[str, str]


class ModelLoader:
    """Loads once per (name, version); concurrent callers wait for the one load."""

    def __init__(
        self,
        artifacts: Artifacts,
        kinds: Sequence[ModelKind],
        *,
        failure_memory_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_load: Callable[[ModelRef, float], None] | None = None,
    ) -> None:
        self.artifacts = artifacts
        self.kinds = list(kinds)
        self.failure_memory_s = max(failure_memory_s, 1.0)
        self.on_load = on_load
        self._clock = clock
        self._models: dict[Key, LoadedModel] = {}
        self._failures: dict[Key, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[Key, threading.Lock] = {}
        # Threading locks, not asyncio ones: loads run in threads, and a loader may serve several
        # event loops over its life (a test session shares one).

    def loaded(self, ref: ModelRef) -> LoadedModel | None:
        """The model of a version if it is loaded already (no MLflow call, no thread)."""
        return self._models.get((ref.name, ref.version))

    def recent_failure(self, ref: ModelRef) -> str | None:
        """Why loading this version failed, if it did within ``failure_memory_s``."""
        failure = self._failures.get((ref.name, ref.version))
        if failure and self._clock() - failure[1] < self.failure_memory_s:
            return failure[0]
        return None

    async def load(self, ref: ModelRef) -> LoadedModel:
        """The model of a version, loaded once; :class:`ModelUnavailable` (or its
        :class:`ModelLoadError`) saying why not."""
        model = self.loaded(ref)
        return model if model is not None else await asyncio.to_thread(self._load_cached, ref)

    async def load_fresh(self, ref: ModelRef) -> LoadedModel:
        """Download and load the version again, bypassing the cache (what a naive worker does per
        request; the benchmark's baseline measures it)."""
        return await asyncio.to_thread(self._load_now, ref)

    def _load_cached(self, ref: ModelRef) -> LoadedModel:
        key = (ref.name, ref.version)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            model = self._models.get(key)
            if model is not None:
                return model
            started = time.perf_counter()
            try:
                model = self._load_now(ref)
            except ModelUnavailable as exc:
                self._failures[key] = (str(exc), self._clock())
                raise
            self._failures.pop(key, None)
            self._models[key] = model
            seconds = time.perf_counter() - started
            log.info("loaded %s v%s in %.0f ms", ref.name, ref.version, seconds * 1e3)
            if self.on_load is not None:
                self.on_load(ref, seconds)
            return model

    def _load_now(self, ref: ModelRef) -> LoadedModel:
        from mlflow.models import Model

        try:
            directory = Path(self.artifacts.model(ref))
            mlmodel = Model.load(directory)
        except Exception as exc:
            raise ModelUnavailable(f"cannot download {ref.uri}: {exc}") from exc
        kind = next((kind for kind in self.kinds if kind.claims(mlmodel)), None)
        if kind is None:
            flavors = ", ".join(sorted(mlmodel.flavors)) or "none"
            known = ", ".join(k.name for k in self.kinds)
            raise ModelLoadError(f"{ref.uri} has flavors {flavors}; streamml loads {known}")
        try:
            return kind.load(directory, mlmodel, ref)
        except ValueError as exc:  # e.g. a signature streamml cannot validate against
            raise ModelLoadError(f"cannot serve {ref.uri}: {exc}") from exc
