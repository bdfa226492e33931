"""A model's logged requirements (its ``requirements.txt``) against what the worker has installed: models
run in the worker's environment, as ``mlflow models serve --env-manager local`` runs them, and like it
streamml says which differ."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement


def mismatches(directory: Path) -> list[str]:
    """Each requirement the installed packages do not satisfy, with what is installed instead."""
    path = directory / "requirements.txt"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:  # a path or a URL: nothing to compare
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            found.append(f"{line} (not installed)")
            continue
        if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
            found.append(f"{line} (installed {installed})")
    return found
