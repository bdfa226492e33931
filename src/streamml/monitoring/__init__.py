"""Watching the pipeline: snapshots of its state from Redis (the dashboard, the live terminal view and the
gateway's stream-state metrics read them) and what every process reports about itself."""
