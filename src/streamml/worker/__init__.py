"""The stream worker: the consume loop and its reconnect policy, one micro-batch and its retry policy,
the sinks, the worker's metrics."""
