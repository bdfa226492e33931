"""LightGBM trees compiled to machine code at load, used only where they answer as the booster does.

A LightGBM booster walks its trees node by node through generic code; lleaves compiles the same trees
with LLVM into one function with the thresholds inlined, several times faster (``streamml bench --only
drain`` reports the bare classifier with and without compilation). Compiling takes about half a second
for the demo's 150 trees and grows with the number of trees, so it is done once per model version a
worker loads, and timed in the log.

Nothing is assumed: the compiled function is used only after it gave the booster's labels on a sample
matrix (the caller's: the fast path builds it from the training statistics the pipeline's fitted steps
hold); lleaves missing, a model it cannot compile, or one label of difference keeps the booster, and the
reason is logged. It always runs on the calling thread: a worker is one process per core, and lleaves'
threads are a new pool per call.

lleaves 1.3 needs llvmlite < 0.45 (its own tracker, issue 95: llvmlite 0.45 dropped the legacy pass
manager it uses); the project pins llvmlite accordingly.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from packaging.version import Version

log = logging.getLogger(__name__)

LLVMLITE_BREAKS = Version("0.45")
"""The first llvmlite lleaves 1.3 cannot compile with (its issue 95)."""

Scores = Callable[[np.ndarray], np.ndarray]
"""A float64 matrix -> the booster's transformed scores (probabilities for a classifier)."""


def compile_booster(
    booster: Any, sample: np.ndarray, labels_of: Callable[[np.ndarray], np.ndarray]
) -> Scores | None:
    """The booster's trees compiled, or None (with the reason logged) when lleaves is not installed, cannot
    compile them, or its labels on ``sample`` (``labels_of`` turns scores into labels) differ from the
    booster's own."""
    try:
        import lleaves
        import llvmlite
    except ImportError as exc:
        log.info("trees are not compiled: lleaves is not installed (%s)", exc)
        return None
    if Version(llvmlite.__version__) >= LLVMLITE_BREAKS:
        log.warning(
            "trees are not compiled: lleaves needs llvmlite < %s, and %s is installed",
            LLVMLITE_BREAKS,
            llvmlite.__version__,
        )
        return None
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="streamml-trees-") as scratch:
            model_file = Path(scratch) / "model.txt"
            model_file.write_text(booster.model_to_string())
            model = lleaves.Model(model_file=str(model_file))
            model.compile()
    except Exception as exc:  # any model lleaves does not support: the booster serves it
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("trees are not compiled: lleaves could not compile the model (%s)", reason)
        return None
    seconds = time.perf_counter() - started

    def compiled(matrix: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(matrix, n_jobs=1))

    expected, got = labels_of(np.asarray(booster.predict(sample))), labels_of(compiled(sample))
    if not np.array_equal(expected, got):
        differ = int(np.sum(expected != got))
        log.warning(
            "trees are not compiled: their labels differ from the booster's on %d of %d sample rows",
            differ,
            len(sample),
        )
        return None
    log.info(
        "compiled %d trees in %.2f s; the booster's labels on %d sample rows",
        booster.num_trees(),
        seconds,
        len(sample),
    )
    return compiled
