"""The MLflow Model Registry as streamml uses it, split by job: the :class:`AliasResolver` (routes ->
versions, the challenger), the :class:`ModelLoader` (download, safe load, the loaded models) and the
:class:`ModelCatalog` (schemas, drift references, compatibility). :class:`ModelRegistry` builds the three
on one MLflow client and hands them out; each caller uses the one it needs.

Models are loaded in formats that run no code when loaded, with an allow-list of extra types that comes
from our settings, not from the artifact; artifacts that run code (pickle, custom ``python_function``
models) only where the operator allowed it (:mod:`streamml.models.kinds`, :mod:`streamml.models.loader`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

from streamml.models.artifacts import Artifacts
from streamml.models.catalog import ModelCatalog
from streamml.models.kinds import default_kinds
from streamml.models.loader import AllowCode, ModelLoader
from streamml.models.refs import ModelRef
from streamml.models.resolver import AliasResolver


class ModelRegistry:
    """The resolver, loader and catalog of one registry (``tracking_uri``), for ``routes``."""

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
        compile_trees: bool = False,
        on_load: Callable[[ModelRef, float], None] | None = None,
        challenger_alias: str | None = None,
        allow_code: AllowCode = False,
        requirements: Literal["warn", "refuse", "ignore"] = "warn",
    ) -> None:
        from mlflow import MlflowClient  # mlflow is slow to import; only processes that need it pay

        self.tracking_uri = tracking_uri
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.artifacts = Artifacts(client, tracking_uri, cache_dir)
        self.resolver = AliasResolver(
            client,
            tracking_uri,
            routes,
            refresh_s=alias_refresh_s,
            challenger_alias=challenger_alias,
            clock=clock,
        )
        self.loader = ModelLoader(
            self.artifacts,
            default_kinds(
                trusted_types,
                fast_path=fast_path,
                compile_trees=compile_trees,
                trees_cache=cache_dir / "compiled-trees" if cache_dir is not None else None,
            ),
            allow_code=allow_code,
            requirements=requirements,
            failure_memory_s=alias_refresh_s,
            clock=clock,
            on_load=on_load,
        )
        self.catalog = ModelCatalog(client, self.artifacts, self.loader)

    @property
    def routes(self) -> list[str]:
        return self.resolver.routes
