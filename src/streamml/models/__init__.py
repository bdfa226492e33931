"""Models from the MLflow Model Registry: resolution, safe loading, input schemas, inference and batch
dispatch. No Redis and no HTTP here."""
