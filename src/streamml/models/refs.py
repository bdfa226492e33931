"""What a route points at and what it resolves to: value types shared by the resolver, the loader, the
catalog and everything that stamps a prediction with its model version."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
