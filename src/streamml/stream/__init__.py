"""The Redis Stream: every stream and consumer-group command (broker), the entry format, the worker
loop, sinks and dead letters."""
