"""Running streamml on one machine: embedded Redis and MLflow, `streamml up`, process entry points."""
