"""Downloading a model version's artifacts (or one file of them) from the registry's artifact store.

The storage location comes from *our* client: MLflow's ``models:/`` artifact repository consults the
process-wide registry URI, which may point at another registry.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from streamml.models.refs import ModelRef


class Artifacts:
    """Blocking downloads (call them in a thread from async code), each into a fresh directory."""

    def __init__(self, client: Any, tracking_uri: str, cache_dir: Path | None = None) -> None:
        self.client = client
        self.tracking_uri = tracking_uri
        self.cache_dir = cache_dir

    def model(self, ref: ModelRef, path: str = "") -> str:
        """A model version's artifacts, or the one file ``path`` of them; returns the local path."""
        from mlflow.artifacts import download_artifacts

        location = self.client.get_model_version_download_uri(ref.name, ref.version)
        return str(
            download_artifacts(
                artifact_uri=f"{location.rstrip('/')}/{path}" if path else location,
                dst_path=tempfile.mkdtemp(prefix="streamml-model-", dir=self.cache_dir),
                tracking_uri=self.tracking_uri,
            )
        )

    def of_run(self, run_id: str, path: str) -> str:
        """One artifact of the run that logged a model version (its training profile, say)."""
        from mlflow.artifacts import download_artifacts

        return str(
            download_artifacts(
                run_id=run_id,
                artifact_path=path,
                dst_path=tempfile.mkdtemp(prefix="streamml-run-", dir=self.cache_dir),
                tracking_uri=self.tracking_uri,
            )
        )
