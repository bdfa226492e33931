"""What every process says about itself in its metrics: ``streamml_build_info``."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Info

from streamml import __version__


def build_info(registry: CollectorRegistry, role: str) -> None:
    """streamml's version, the Python running it and the process's role (gateway, worker)."""
    Info("streamml_build", "streamml version and Python of this process", registry=registry).info(
        {"version": __version__, "python": platform.python_version(), "role": role}
    )
