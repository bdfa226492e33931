"""LightGBM trees compiled to machine code at load, used only where they answer as the booster does.

A LightGBM booster walks its trees node by node through generic code; lleaves compiles the same trees
with LLVM into one function with the thresholds inlined, several times faster (``streamml bench --only
drain`` reports the bare classifier with and without compilation). Compiling costs about half a second
for the demo's 150 trees (the worker logs it) but grows quickly with the number and size of the trees,
to tens of seconds for large models, so it never holds up a worker: the booster serves while a
background thread compiles, and the compiled function takes over once it has passed its check. The
machine code is kept on disk, keyed by the model's text, the lleaves and llvmlite versions and the host
CPU, so the next worker or restart loads it in milliseconds; it is written to a temporary name and
renamed, so a worker never reads another's half-written file.

Nothing is assumed: the compiled function is used only after it gave the booster's labels on a sample
matrix (the caller's: the fast path builds it from the training statistics the pipeline's fitted steps
hold), whether it was compiled now or read from disk; lleaves missing, a model it cannot compile, or one
label of difference keeps the booster, and the reason is logged. Predictions run on the calling thread:
a worker is one process per core, and lleaves' threads are a new pool per call.

lleaves 1.3 needs llvmlite < 0.45 (its own tracker, issue 95: llvmlite 0.45 dropped the legacy pass
manager it uses); the project pins llvmlite accordingly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
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


class TreeCompilation:
    """One booster's trees being compiled in the background; ``on_ready`` receives the compiled scores
    function once it has given the booster's labels on ``sample`` (never, if it has not)."""

    def __init__(
        self,
        booster: Any,
        sample: np.ndarray,
        labels_of: Callable[[np.ndarray], np.ndarray],
        on_ready: Callable[[Scores], None],
        cache_dir: Path | None = None,
    ) -> None:
        self._thread = threading.Thread(
            target=self._run,
            args=(booster, sample, labels_of, on_ready, cache_dir),
            name="streamml-compile-trees",
            daemon=True,  # a stopping worker does not wait for a compilation nobody will use
        )
        self._thread.start()

    def wait(self, timeout_s: float | None = None) -> None:
        """Until the compilation has finished (or failed): for benchmarks and tests."""
        self._thread.join(timeout_s)

    @staticmethod
    def _run(
        booster: Any,
        sample: np.ndarray,
        labels_of: Callable[[np.ndarray], np.ndarray],
        on_ready: Callable[[Scores], None],
        cache_dir: Path | None,
    ) -> None:
        compiled = compile_booster(booster, sample, labels_of, cache_dir)
        if compiled is not None:
            on_ready(compiled)


def compile_booster(
    booster: Any,
    sample: np.ndarray,
    labels_of: Callable[[np.ndarray], np.ndarray],
    cache_dir: Path | None = None,
) -> Scores | None:
    """The booster's trees compiled (or read from ``cache_dir``), or None (with the reason logged) when
    lleaves is not installed, cannot compile them, or its labels on ``sample`` (``labels_of`` turns scores
    into labels) differ from the booster's own."""
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
    text = booster.model_to_string()
    cached = cache_dir / f"{_cache_key(text)}.o" if cache_dir is not None else None
    try:
        with tempfile.TemporaryDirectory(prefix="streamml-trees-") as scratch:
            model_file = Path(scratch) / "model.txt"
            model_file.write_text(text)
            model = lleaves.Model(model_file=str(model_file))
            if cached is not None and cached.exists():
                model.compile(cache=str(cached))
                source = f"read from {cached}"
            else:
                model.compile(cache=str(Path(scratch) / "trees.o") if cached is not None else None)
                source = "compiled"
                if cached is not None:
                    _keep(Path(scratch) / "trees.o", cached)
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
        "%d trees %s in %.2f s; the booster's labels on %d sample rows",
        booster.num_trees(),
        source,
        seconds,
        len(sample),
    )
    return compiled


def _cache_key(model_text: str) -> str:
    """What the machine code depends on: the trees, the compiler's versions, and the CPU it targets."""
    from importlib.metadata import version

    import llvmlite.binding as llvm

    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # as lleaves does when LLVM cannot detect them
        features = ""
    parts = [model_text, version("lleaves"), version("llvmlite"), llvm.get_host_cpu_name(), features]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _keep(written: Path, cached: Path) -> None:
    """Move the freshly written object file into the cache under its final name, atomically: another
    worker sees the whole file or none."""
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        staged = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        staged.write_bytes(written.read_bytes())
        os.replace(staged, cached)
    except OSError as exc:  # a read-only or full disk: compiled all the same, just not kept
        log.warning("compiled trees not kept in %s: %s", cached.parent, exc)
