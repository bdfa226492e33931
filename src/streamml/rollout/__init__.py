"""Changing models safely, shared by every process through Redis: canary shares, shadow aggregates per
version pair, and drift windows of recent records."""
