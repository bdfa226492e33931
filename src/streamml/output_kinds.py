"""What a request may ask of its model: its predictions, or its class probabilities. One definition for
every layer: the gateway reads it from each protocol, the entry carries it (field ``out``), dispatch
calls the model for it."""

from __future__ import annotations

PREDICT = "predict"
"""The model's predictions (what its MLflow ``predict`` answers)."""
PROBA = "proba"
"""A classifier's class probabilities (its ``predict_proba``), with the classes they stand for."""
OUTPUTS = frozenset({PREDICT, PROBA})
