"""Moving a route's model safely through the MLflow Model Registry: promote the challenger, roll back.

A route follows an alias (``models:/LightGBM_Classifier@champion``). ``promote`` moves that alias to the
version the ``challenger`` alias names and remembers the version it replaces under ``previous``;
``rollback`` moves it back to ``previous`` (and keeps the one it replaces there, so a second rollback
undoes the first). Workers and gateways pick the move up within ``STREAMML_MLFLOW_ALIAS_REFRESH_S``,
without a restart.

What makes no sense is refused with a message that says why: a route pinned to a version, no challenger,
a challenger that is the champion already, or one whose inputs or output classes differ from the
champion's (it could not answer the same requests with the same kind of answer).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from streamml.errors import LifecycleRefused
from streamml.models.refs import ModelRef
from streamml.models.registry import ModelRegistry


@dataclass(frozen=True)
class AliasMove:
    model: str
    alias: str
    before: str | None
    """The version the alias named before (None: it did not exist)."""
    after: str | None
    """The version it names now (None: removed)."""

    def describe(self) -> str:
        before = f"v{self.before}" if self.before else "(none)"
        after = f"v{self.after}" if self.after else "(removed)"
        return f"{self.model}@{self.alias}: {before} -> {after}"


class Lifecycle:
    def __init__(
        self, registry: ModelRegistry, *, challenger: str = "challenger", previous: str = "previous"
    ) -> None:
        self.registry = registry
        self.challenger = challenger
        self.previous = previous
        from mlflow import MlflowClient

        self._client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)

    async def promote(self, route: str) -> list[AliasMove]:
        """The challenger becomes the route's model; the replaced version is kept as ``previous``."""
        name, alias = self._followed_alias(route)
        champion = await self._version(name, alias)
        challenger = await self._version(name, self.challenger)
        if challenger is None:
            raise LifecycleRefused(
                f"{name} has no {self.challenger!r} alias: register the new version and set it "
                f"(MlflowClient().set_registered_model_alias({name!r}, {self.challenger!r}, VERSION)) first"
            )
        if challenger == champion:
            raise LifecycleRefused(f"{name}@{self.challenger} is v{challenger}, already {alias}")
        if champion is not None:
            reason = await self.incompatibility(route, name, champion, challenger)
            if reason:
                raise LifecycleRefused(f"cannot promote {name} v{challenger} over v{champion}: {reason}")
        moves = [await self._move(name, self.previous, champion), await self._move(name, alias, challenger)]
        moves.append(await self._move(name, self.challenger, None))  # the champion now, not a challenger
        return moves

    async def rollback(self, route: str) -> list[AliasMove]:
        """The route goes back to the ``previous`` version; the one it leaves becomes ``previous``."""
        name, alias = self._followed_alias(route)
        previous = await self._version(name, self.previous)
        if previous is None:
            raise LifecycleRefused(
                f"{name} has no {self.previous!r} alias: nothing was promoted to roll back"
            )
        champion = await self._version(name, alias)
        return [await self._move(name, alias, previous), await self._move(name, self.previous, champion)]

    async def incompatibility(self, route: str, name: str, champion: str, challenger: str) -> str | None:
        """Why ``challenger`` cannot stand in for ``champion`` (None when it can)."""
        return await self.registry.catalog.incompatibility(
            ModelRef(route, name, champion), ModelRef(route, name, challenger)
        )

    def _followed_alias(self, route: str) -> tuple[str, str]:
        target = self.registry.resolver.target(route)
        if target.alias is None:
            raise LifecycleRefused(
                f"route {route!r} is pinned to {target.name} v{target.version}, not to an alias: "
                "change STREAMML_MLFLOW_ROUTES to move it"
            )
        if target.alias in (self.challenger, self.previous):
            raise LifecycleRefused(f"route {route!r} follows the {target.alias!r} alias itself")
        return target.name, target.alias

    async def _version(self, name: str, alias: str) -> str | None:
        return await asyncio.to_thread(self._version_now, name, alias)

    def _version_now(self, name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self._client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    async def _move(self, name: str, alias: str, version: str | None) -> AliasMove:
        before = await self._version(name, alias)
        if version is None:
            if before is not None:
                await asyncio.to_thread(self._client.delete_registered_model_alias, name, alias)
        else:
            await asyncio.to_thread(self._client.set_registered_model_alias, name, alias, version)
        return AliasMove(name, alias, before, version)
