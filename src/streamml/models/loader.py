"""Loading model versions: download the artifacts, hand them to the kind that claims them
(:mod:`streamml.models.kinds`), keep the loaded model for as long as the process lives, and remember a
failed load for a while so a version that cannot load is not downloaded again for every batch.

Safe by default: a version whose artifact would run code when loaded (pickle, cloudpickle, a custom
``python_function``) is refused unless the operator allowed it for its route
(``STREAMML_MLFLOW_ALLOW_PICKLE``); the refusal names the setting and the risk. A version whose logged
requirements differ from the worker's packages is logged (or refused: ``STREAMML_MLFLOW_REQUIREMENTS``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Literal

from streamml.errors import ModelLoadError, ModelUnavailable
from streamml.models.artifacts import Artifacts
from streamml.models.inference import LoadedModel
from streamml.models.kinds import ModelKind
from streamml.models.refs import ModelRef
from streamml.models.requirements import mismatches

log = logging.getLogger(__name__)

Key = tuple[str, str]


AllowCode = bool | Collection[str]
"""Where loading may run code from an artifact: everywhere (True), nowhere (False), or these routes."""


class ModelLoader:
    """Loads once per (name, version); concurrent callers wait for the one load."""

    def __init__(
        self,
        artifacts: Artifacts,
        kinds: Sequence[ModelKind],
        *,
        allow_code: AllowCode = False,
        requirements: Literal["warn", "refuse", "ignore"] = "warn",
        failure_memory_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_load: Callable[[ModelRef, float], None] | None = None,
    ) -> None:
        self.artifacts = artifacts
        self.kinds = list(kinds)
        self.allow_code = allow_code
        self.requirements = requirements
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
        """The model of a version if it is loaded already and may serve ``ref``'s route (no MLflow
        call, no thread)."""
        model = self._models.get((ref.name, ref.version))
        return model if model is None or self._permits(model, ref) else None

    def recent_failure(self, ref: ModelRef) -> str | None:
        """Why loading this version failed, if it did within ``failure_memory_s``."""
        failure = self._failures.get((ref.name, ref.version))
        if failure and self._clock() - failure[1] < self.failure_memory_s:
            return failure[0]
        return None

    def failure(self, ref: ModelRef) -> str | None:
        """Why the last attempt to load this version for ``ref``'s route failed (None: it loaded, or
        was not tried)."""
        model = self._models.get((ref.name, ref.version))
        if model is not None and not self._permits(model, ref):
            return _refusal(ref, model.kind)
        failure = self._failures.get((ref.name, ref.version))
        return failure[0] if failure else None

    async def load(self, ref: ModelRef) -> LoadedModel:
        """The model of a version, loaded once; :class:`ModelUnavailable` (or its
        :class:`ModelLoadError`) saying why not."""
        model = self._models.get((ref.name, ref.version))
        if model is None:
            model = await asyncio.to_thread(self._load_cached, ref)
        if not self._permits(model, ref):  # loaded for another route, which was allowed to
            raise ModelLoadError(_refusal(ref, model.kind))
        return model

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
        if kind.executes_code(mlmodel) and not self._allows_code(ref.route):
            raise ModelLoadError(_refusal(ref, kind.name))
        self._check_requirements(directory, ref)
        try:
            return kind.load(directory, mlmodel, ref)
        except (ValueError, ImportError, AttributeError, TypeError) as exc:
            # a signature streamml cannot validate against, a class or library the worker lacks
            raise ModelLoadError(f"cannot serve {ref.uri} as a {kind.name} model: {exc}") from exc

    def _permits(self, model: LoadedModel, ref: ModelRef) -> bool:
        return not model.executes_code or self._allows_code(ref.route)

    def _allows_code(self, route: str) -> bool:
        return self.allow_code is True or (not isinstance(self.allow_code, bool) and route in self.allow_code)

    def _check_requirements(self, directory: Path, ref: ModelRef) -> None:
        if self.requirements == "ignore":
            return
        differing = mismatches(directory)
        if not differing:
            return
        message = f"{ref.uri} was logged with requirements the worker does not meet: {'; '.join(differing)}"
        if self.requirements == "refuse":
            raise ModelLoadError(f"{message} (STREAMML_MLFLOW_REQUIREMENTS=refuse)")
        log.warning("%s; serving it with the installed packages", message)


def _refusal(ref: ModelRef, kind: str) -> str:
    return (
        f"{ref.uri} is a {kind} model whose artifact runs code when it is loaded (pickle or a custom "
        f"python_function): set STREAMML_MLFLOW_ALLOW_PICKLE=true, or a JSON list of routes with "
        f"{ref.route!r} in it, only if you trust everyone who can write to this registry"
    )
