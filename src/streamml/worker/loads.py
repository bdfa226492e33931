"""What a worker reports about its models: for each route, the version it resolves to and whether it
loaded (with the error when it did not), for ``monitoring.model_states``."""

from __future__ import annotations

from streamml.errors import ModelUnavailable
from streamml.models.registry import ModelRegistry
from streamml.monitoring.model_states import FAILED, LOADED, NOT_LOADED, RouteLoad


async def route_loads(registry: ModelRegistry) -> list[RouteLoad]:
    """Every route's state in this worker (resolving an alias only when it is due, as batches do)."""
    loads = []
    for route in registry.routes:
        target = registry.resolver.target(route)
        try:
            ref = await registry.resolver.resolve(route)
        except ModelUnavailable as exc:
            loads.append(RouteLoad(route, target.name, target.version or "", FAILED, str(exc)))
            continue
        model = registry.loader.loaded(ref)
        if model is not None:
            loads.append(
                RouteLoad(
                    route,
                    ref.name,
                    ref.version,
                    LOADED,
                    kind=model.kind,
                    proba=model.has_proba,
                    classes=[str(c) for c in model.classes] if model.classes is not None else None,
                )
            )
            continue
        error = registry.loader.failure(ref)
        loads.append(RouteLoad(route, ref.name, ref.version, FAILED if error else NOT_LOADED, error))
    return loads
