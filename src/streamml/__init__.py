"""streamml: real-time ML inference on Redis Streams with models from the MLflow Model Registry."""

__version__ = "0.1.0"
