"""Routes -> registered models in the MLflow Model Registry: alias resolution, safe loading, caching.

A route such as ``svm`` names a model URI such as ``models:/SVC@champion``. The alias is resolved to a
version at most every ``alias_refresh_s`` seconds, so moving ``champion`` in MLflow switches every
worker to the new version without a restart. A model is loaded once per (name, version) and kept.

Models are loaded only from the skops format, with the allow-list of extra types coming from our
settings (not from the artifact itself). A pickled model is refused, never silently loaded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamml.errors import ModelLoadError, ModelUnavailable, UnknownRoute
from streamml.models.drift import TRAINING_PROFILE_ARTIFACT, Reference
from streamml.models.inference import LoadedModel, records_to_frame
from streamml.models.schema import InputSchema

log = logging.getLogger(__name__)

_ABSENT = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"})
"""MLflow error codes meaning "no such thing" (as opposed to the registry failing)."""
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class ModelRef:
    """One concrete model version serving a route."""

    route: str
    name: str
    version: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class RouteTarget:
    """What a route points at: a fixed version or an alias to resolve."""

    name: str
    alias: str | None
    version: str | None

    @classmethod
    def parse(cls, uri: str) -> RouteTarget:
        match = _MODEL_URI.match(uri)
        if not match:
            raise ValueError(f"model URI {uri!r} must look like models:/Name@alias or models:/Name/3")
        return cls(match["name"], match["alias"], match["version"])


@dataclass(frozen=True)
class RouteStatus:
    """Whether a route resolves to a model version now, and to which (or why not)."""

    route: str
    uri: str
    ref: ModelRef | None
    error: str | None = None
    """Why the route does not resolve (``ref`` is None)."""
    refresh_error: str | None = None
    """Why the last re-resolution failed while ``ref``, the last known version, keeps serving."""

    @property
    def resolvable(self) -> bool:
        return self.ref is not None

    def describe(self) -> str:
        return f"{self.ref.name} v{self.ref.version}" if self.ref else f"unavailable: {self.error}"


class ModelRegistry:
    """Thread-safe resolver and loader. Every method that may talk to MLflow blocks: call it in a
    thread from async code (the ``a*`` helpers do, and skip the thread when the cache is fresh)."""

    def __init__(
        self,
        tracking_uri: str,
        routes: Mapping[str, str],
        *,
        alias_refresh_s: float = 30.0,
        trusted_types: Sequence[str] = (),
        cache_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        fast_path: bool = True,
        on_load: Callable[[ModelRef, float], None] | None = None,
        challenger_alias: str | None = None,
    ) -> None:
        from mlflow import MlflowClient  # mlflow is slow to import; only processes that need it pay

        self.tracking_uri = tracking_uri
        self.targets = {route: RouteTarget.parse(uri) for route, uri in routes.items()}
        self.route_uris = dict(routes)
        self.alias_refresh_s = alias_refresh_s
        self.trusted_types = list(trusted_types)
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._cache_dir = cache_dir
        self._clock = clock
        self.fast_path = fast_path
        self._lock = threading.Lock()
        self._resolved: dict[str, tuple[ModelRef, float]] = {}
        self._refresh_errors: dict[str, str] = {}
        self.on_load = on_load
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._schemas: dict[tuple[str, str], InputSchema] = {}
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._load_locks: dict[tuple[str, str], threading.Lock] = {}
        self.challenger_alias = challenger_alias
        self._challengers: dict[str, tuple[ModelRef | None, float]] = {}
        self._load_failures: dict[tuple[str, str], tuple[str, float]] = {}
        self._incompatible: dict[tuple[str, str, str], str | None] = {}
        self._references: dict[tuple[str, str], Reference | None] = {}

    @property
    def routes(self) -> list[str]:
        return list(self.targets)

    def target(self, route: str) -> RouteTarget:
        try:
            return self.targets[route]
        except KeyError:
            raise UnknownRoute(route, self.routes) from None

    # -- resolution ---------------------------------------------------------------------------

    def cached_ref(self, route: str) -> ModelRef | None:
        """The resolved version if it is still fresh, without touching MLflow."""
        entry = self._resolved.get(route)
        if entry and self._clock() - entry[1] < self.alias_refresh_s:
            return entry[0]
        return None

    def resolve(self, route: str) -> ModelRef:
        """Route -> (name, version), re-resolving the alias when the cached answer is stale.

        If MLflow cannot be reached but the route was resolved before, the last known version keeps
        serving (a registry outage must not stop inference of models we already have)."""
        target = self.target(route)
        fresh = self.cached_ref(route)
        if fresh:
            return fresh
        try:
            if target.version is not None:
                version = target.version
            else:
                assert target.alias is not None
                version = str(self._client.get_model_version_by_alias(target.name, target.alias).version)
        except Exception as exc:
            stale = self._resolved.get(route)
            if stale:
                self._refresh_errors[route] = f"registry unreachable ({type(exc).__name__})"
                log.warning(
                    "registry unreachable (%s); %s stays on version %s",
                    exc,
                    route,
                    stale[0].version,
                )
                return stale[0]
            raise ModelUnavailable(
                f"cannot resolve {self.route_uris[route]} in the registry at {self.tracking_uri}: {exc}"
            ) from exc
        ref = ModelRef(route, target.name, version)
        self._refresh_errors.pop(route, None)
        previous = self._resolved.get(route)
        if previous and previous[0] != ref:
            log.info("route %s moved from %s v%s to v%s", route, ref.name, previous[0].version, version)
        with self._lock:
            self._resolved[route] = (ref, self._clock())
        return ref

    async def aresolve(self, route: str) -> ModelRef:
        """Like :meth:`resolve`, for async code. When the alias is due for a check, one caller asks
        the registry and waits; callers arriving meanwhile get the version in hand instead of each
        starting a thread behind the same slow call (a profile of a busy gateway showed them pile up)."""
        self.target(route)  # unknown routes fail fast, without a thread hop
        cached = self.cached_ref(route)
        if cached is not None:
            return cached
        stale = self._resolved.get(route)
        if stale is None:
            return await asyncio.to_thread(self.resolve, route)
        if route in self._refreshing:
            return stale[0]
        refresh = self._refreshing[route] = asyncio.create_task(self._refresh(route))
        await asyncio.shield(refresh)  # a cancelled caller does not cancel the refresh
        return self._resolved[route][0]

    async def status(self, route: str) -> RouteStatus:
        """The route's current version, or why it cannot be resolved (never raises for a known route)."""
        try:
            ref = await self.aresolve(route)
        except ModelUnavailable as exc:
            return RouteStatus(route, self.route_uris[route], None, str(exc))
        return RouteStatus(route, self.route_uris[route], ref, refresh_error=self._refresh_errors.get(route))

    async def _refresh(self, route: str) -> None:
        try:
            await asyncio.to_thread(self.resolve, route)
        except ModelUnavailable as exc:  # resolve() keeps the last version when it can
            log.warning("could not refresh route %s: %s", route, exc)
        finally:
            self._refreshing.pop(route, None)

    # -- the challenger ------------------------------------------------------------------------

    def challenger(self, route: str) -> ModelRef | None:
        """The version the route's model has under the challenger alias, or None (no such alias, a
        route pinned to a version, or no challenger alias configured). Re-read like the champion's
        alias; while the registry is unreachable the last answer stands."""
        target = self.target(route)
        if self.challenger_alias is None or target.alias is None or target.alias == self.challenger_alias:
            return None
        cached = self._challengers.get(route)
        if cached and self._clock() - cached[1] < self.alias_refresh_s:
            return cached[0]
        from mlflow.exceptions import MlflowException

        try:
            version = self._client.get_model_version_by_alias(target.name, self.challenger_alias).version
            ref: ModelRef | None = ModelRef(route, target.name, str(version))
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return cached[0] if cached else None
            ref = None  # no challenger alias (or it went with a deleted version)
        except Exception:  # the registry is unreachable: keep the last answer
            return cached[0] if cached else None
        if (cached[0] if cached else None) != ref:
            log.info("route %s challenger: %s", route, f"{target.name} v{ref.version}" if ref else "none")
        with self._lock:
            self._challengers[route] = (ref, self._clock())
        return ref

    async def achallenger(self, route: str) -> ModelRef | None:
        cached = self._challengers.get(route)
        if self.challenger_alias is None or (cached and self._clock() - cached[1] < self.alias_refresh_s):
            return cached[0] if cached else None
        return await asyncio.to_thread(self.challenger, route)

    def incompatibility(self, champion: ModelRef, challenger: ModelRef) -> str | None:
        """Why ``challenger`` cannot stand in for ``champion`` (None when it can): different input
        columns (names, types, which are required) or different output classes. Cached per pair."""
        key = (champion.name, champion.version, challenger.version)
        if key in self._incompatible:
            return self._incompatible[key]
        reason = self._incompatibility(champion, challenger)
        self._incompatible[key] = reason
        return reason

    async def aincompatibility(self, champion: ModelRef, challenger: ModelRef) -> str | None:
        key = (champion.name, champion.version, challenger.version)
        if key in self._incompatible:
            return self._incompatible[key]
        return await asyncio.to_thread(self.incompatibility, champion, challenger)

    def _incompatibility(self, champion: ModelRef, challenger: ModelRef) -> str | None:
        old, new = self.schema(champion), self.schema(challenger)
        if old.as_dict() != new.as_dict():
            added = sorted(set(new.names) - set(old.names))
            removed = sorted(set(old.names) - set(new.names))
            detail = (
                f"added {added}, removed {removed}" if added or removed else "types or required flags differ"
            )
            return f"its input signature differs from the champion's ({detail})"
        old_classes, new_classes = self.load(champion).classes, self.load(challenger).classes
        if old_classes != new_classes:
            return f"its output classes {new_classes} differ from the champion's {old_classes}"
        return None

    def recent_load_failure(self, ref: ModelRef) -> str | None:
        """Why loading this version failed, if it did within the alias refresh interval: a challenger
        that cannot load is not downloaded again for every batch."""
        failure = self._load_failures.get((ref.name, ref.version))
        if failure and self._clock() - failure[1] < max(self.alias_refresh_s, 1.0):
            return failure[0]
        return None

    # -- drift reference ------------------------------------------------------------------------

    def reference(self, ref: ModelRef) -> Reference | None:
        """The training data's profile logged with a model version (its drift reference), or None when
        none was logged. Cached per version; a registry outage is not cached (asked again next time)."""
        key = (ref.name, ref.version)
        if key in self._references:
            return self._references[key]
        from mlflow.artifacts import download_artifacts
        from mlflow.exceptions import MlflowException

        try:
            run_id = self._client.get_model_version(ref.name, ref.version).run_id
            if not run_id:
                found = None
            else:
                path = download_artifacts(
                    run_id=run_id,
                    artifact_path=TRAINING_PROFILE_ARTIFACT,
                    dst_path=tempfile.mkdtemp(prefix="streamml-profile-", dir=self._cache_dir),
                    tracking_uri=self.tracking_uri,
                )
                document = json.loads(Path(path).read_text("utf-8"))
                found = Reference.from_profile(document, self.schema(ref).names)
        except MlflowException as exc:
            if exc.error_code not in _ABSENT:
                log.warning("cannot read the training profile of %s: %s", ref.uri, exc)
                return None  # asked again next time
            found = None  # not logged with this version
        except Exception as exc:  # the registry or its artifact store is unreachable
            log.warning("cannot read the training profile of %s: %s", ref.uri, exc)
            return None
        self._references[key] = found
        return found

    async def areference(self, ref: ModelRef) -> Reference | None:
        key = (ref.name, ref.version)
        if key in self._references:
            return self._references[key]
        return await asyncio.to_thread(self.reference, ref)

    # -- signatures ----------------------------------------------------------------------------

    def schema(self, ref: ModelRef) -> InputSchema:
        """The input schema of a model version (its MLflow signature), cached per version."""
        key = (ref.name, ref.version)
        cached = self._schemas.get(key)
        if cached:
            return cached
        from mlflow.models import Model

        try:
            # Only the MLmodel file: the gateway needs the signature, not the model.
            signature = Model.load(self.download(ref, "MLmodel")).signature
        except Exception as exc:
            raise ModelUnavailable(f"cannot read the signature of {ref.uri}: {exc}") from exc
        schema = InputSchema.from_mlflow_signature(signature)
        self._schemas[key] = schema
        return schema

    async def aschema(self, ref: ModelRef) -> InputSchema:
        cached = self._schemas.get((ref.name, ref.version))
        return cached if cached is not None else await asyncio.to_thread(self.schema, ref)

    # -- loading -------------------------------------------------------------------------------

    def load(self, ref: ModelRef) -> LoadedModel:
        """The model object for a version, loaded once (concurrent callers wait for one load)."""
        key = (ref.name, ref.version)
        model = self._models.get(key)
        if model:
            return model
        with self._lock:
            key_lock = self._load_locks.setdefault(key, threading.Lock())
        with key_lock:
            model = self._models.get(key)
            if model:
                return model
            started = time.perf_counter()
            try:
                model = self._load_uncached(ref)
            except ModelUnavailable as exc:
                self._load_failures[key] = (str(exc), self._clock())
                raise
            self._load_failures.pop(key, None)
            self._models[key] = model
            seconds = time.perf_counter() - started
            log.info("loaded %s v%s in %.0f ms", ref.name, ref.version, seconds * 1e3)
            if self.on_load is not None:
                self.on_load(ref, seconds)
            return model

    def loaded(self, ref: ModelRef) -> LoadedModel | None:
        """The model of a version if it is loaded already (no MLflow call, no thread needed)."""
        return self._models.get((ref.name, ref.version))

    def download(self, ref: ModelRef, path: str = "") -> str:
        """Download a model version's artifacts (or one file of them) to a fresh local directory.

        The storage location comes from *our* client: MLflow's ``models:/`` artifact repository
        consults the process-wide registry URI, which may point at another registry."""
        from mlflow.artifacts import download_artifacts

        location = self._client.get_model_version_download_uri(ref.name, ref.version)
        return str(
            download_artifacts(
                artifact_uri=f"{location.rstrip('/')}/{path}" if path else location,
                dst_path=tempfile.mkdtemp(prefix="streamml-model-", dir=self._cache_dir),
                tracking_uri=self.tracking_uri,
            )
        )

    def _load_uncached(self, ref: ModelRef) -> LoadedModel:
        from mlflow.models import Model

        try:
            local = self.download(ref)
        except Exception as exc:
            raise ModelUnavailable(f"cannot download {ref.uri}: {exc}") from exc
        mlmodel = Model.load(local)
        flavor = mlmodel.flavors.get("sklearn")
        if flavor is None:
            raise ModelLoadError(f"{ref.uri} has no sklearn flavor; streamml serves scikit-learn models")
        if flavor.get("serialization_format") != "skops":
            raise ModelLoadError(
                f"{ref.uri} is serialized as {flavor.get('serialization_format')!r}; streamml loads "
                "only the skops format (log it with serialization_format='skops')"
            )
        import skops.io

        path = Path(local) / flavor["pickled_model"]
        try:
            estimator = skops.io.load(path, trusted=self.trusted_types)
        except Exception as exc:
            untrusted = _untrusted_types(path)
            hint = (
                f"; untrusted types: {untrusted} (add to STREAMML_MLFLOW_TRUSTED_TYPES)" if untrusted else ""
            )
            raise ModelLoadError(f"cannot load {ref.uri} with skops: {exc}{hint}") from exc
        schema = InputSchema.from_mlflow_signature(mlmodel.signature)
        self._schemas.setdefault((ref.name, ref.version), schema)
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
