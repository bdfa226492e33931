"""``python -m streamml`` runs the CLI (how `streamml up` starts its children)."""

from streamml.cli.main import app

app()
