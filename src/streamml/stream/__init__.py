"""The transport: the pipeline's layout in Redis (topology), the gateway's publisher, the worker's
consumer, the operators' status, the entry format, dead letters. No HTTP, no models."""
