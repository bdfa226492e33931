"""Routes -> model versions: a route such as ``svm`` names ``models:/SVC@champion``; the alias is resolved
to a version at most every ``refresh_s`` seconds, so moving ``champion`` in MLflow switches every process
to the new version without a restart. The route's challenger (the ``challenger`` alias) is resolved the
same way.

While the registry is unreachable, a route that resolved before keeps its last version: a registry
outage must not stop inference of models we already have.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from streamml.errors import ModelUnavailable, UnknownRoute
from streamml.models.refs import ModelRef, RouteStatus, RouteTarget
from streamml.models.single_flight import SingleFlight

log = logging.getLogger(__name__)

_NO_ALIAS = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})
"""MLflow error codes meaning the alias (or the version it named) does not exist."""


class AliasResolver:
    """Every method that may ask MLflow is async and runs the call in a thread; a fresh answer is
    returned without one."""

    def __init__(
        self,
        client: Any,
        tracking_uri: str,
        routes: Mapping[str, str],
        *,
        refresh_s: float = 30.0,
        challenger_alias: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.tracking_uri = tracking_uri
        self.targets = {route: RouteTarget.parse(uri) for route, uri in routes.items()}
        self.uris = dict(routes)
        self.refresh_s = refresh_s
        self.challenger_alias = challenger_alias
        self._clock = clock
        self._resolved: dict[str, tuple[ModelRef, float]] = {}
        self._refresh_errors: dict[str, str] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._first: SingleFlight[str, ModelRef] = SingleFlight()
        self._challengers: dict[str, tuple[ModelRef | None, float]] = {}

    @property
    def routes(self) -> list[str]:
        return list(self.targets)

    def target(self, route: str) -> RouteTarget:
        """What the route points at; :class:`UnknownRoute` (naming the known ones) for another name."""
        try:
            return self.targets[route]
        except KeyError:
            raise UnknownRoute(route, self.routes) from None

    # -- the champion ----------------------------------------------------------------------------

    async def resolve(self, route: str) -> ModelRef:
        """Route -> (name, version). When the alias is due for a check, one caller asks the registry
        and waits; callers arriving meanwhile get the version in hand instead of each starting a thread
        behind the same slow call (a profile of a busy gateway showed them pile up)."""
        self.target(route)  # unknown routes fail fast, without a thread hop
        resolved = self._resolved.get(route)
        if resolved is not None and self._fresh(resolved[1]):
            return resolved[0]
        if resolved is None:  # nothing in hand yet: everyone waits for the one first answer
            return await self._first.run(route, partial(asyncio.to_thread, self._resolve_now, route))
        if route not in self._refreshing:
            refresh = self._refreshing[route] = asyncio.create_task(self._refresh(route))
            await asyncio.shield(refresh)  # a cancelled caller does not cancel the refresh
        return self._resolved[route][0]

    async def status(self, route: str) -> RouteStatus:
        """The route's current version, or why it cannot be resolved (never raises for a known route)."""
        try:
            ref = await self.resolve(route)
        except ModelUnavailable as exc:
            return RouteStatus(route, self.uris[route], None, str(exc))
        return RouteStatus(route, self.uris[route], ref, refresh_error=self._refresh_errors.get(route))

    async def _refresh(self, route: str) -> None:
        try:
            await asyncio.to_thread(self._resolve_now, route)
        except ModelUnavailable as exc:  # _resolve_now keeps the last version when it can
            log.warning("could not refresh route %s: %s", route, exc)
        finally:
            self._refreshing.pop(route, None)

    def _resolve_now(self, route: str) -> ModelRef:
        """Ask the registry (blocking)."""
        target = self.target(route)
        try:
            version = target.version or str(
                self._client.get_model_version_by_alias(target.name, target.alias).version
            )
        except Exception as exc:
            stale = self._resolved.get(route)
            if stale is None:
                raise ModelUnavailable(
                    f"cannot resolve {self.uris[route]} in the registry at {self.tracking_uri}: {exc}"
                ) from exc
            self._refresh_errors[route] = f"registry unreachable ({type(exc).__name__})"
            log.warning("registry unreachable (%s); %s stays on version %s", exc, route, stale[0].version)
            return stale[0]
        ref = ModelRef(route, target.name, version)
        self._refresh_errors.pop(route, None)
        previous = self._resolved.get(route)
        if previous and previous[0] != ref:
            log.info("route %s moved from %s v%s to v%s", route, ref.name, previous[0].version, version)
        self._resolved[route] = (ref, self._clock())
        return ref

    # -- the challenger --------------------------------------------------------------------------

    async def challenger(self, route: str) -> ModelRef | None:
        """The version the route's model has under the challenger alias, or None (no such alias, a
        route pinned to a version, or no challenger alias configured). Re-read like the champion's
        alias; while the registry is unreachable the last answer stands."""
        target = self.target(route)
        if self.challenger_alias is None or target.alias in (None, self.challenger_alias):
            return None
        cached = self._challengers.get(route)
        if cached is not None and self._fresh(cached[1]):
            return cached[0]
        return await asyncio.to_thread(self._challenger_now, route, target, cached)

    def _challenger_now(
        self, route: str, target: RouteTarget, cached: tuple[ModelRef | None, float] | None
    ) -> ModelRef | None:
        from mlflow.exceptions import MlflowException

        try:
            version = self._client.get_model_version_by_alias(target.name, self.challenger_alias).version
            ref: ModelRef | None = ModelRef(route, target.name, str(version))
        except MlflowException as exc:
            if exc.error_code not in _NO_ALIAS:
                return cached[0] if cached else None
            ref = None  # no challenger alias (or it went with a deleted version)
        except Exception:  # the registry is unreachable: keep the last answer
            return cached[0] if cached else None
        if (cached[0] if cached else None) != ref:
            log.info("route %s challenger: %s", route, f"{target.name} v{ref.version}" if ref else "none")
        self._challengers[route] = (ref, self._clock())
        return ref

    def _fresh(self, resolved_at: float) -> bool:
        return self._clock() - resolved_at < self.refresh_s
