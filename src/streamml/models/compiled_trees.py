"""LightGBM trees compiled to machine code at load, used only where they answer as the booster does.

A LightGBM booster walks its trees node by node through generic code; lleaves compiles the same trees
with LLVM into one function with the thresholds inlined, several times faster (``streamml bench --only
drain`` reports the bare classifier with and without compilation). Compiling costs about half a second
for the demo's 150 trees (the worker logs it) but grows quickly with the number and size of the trees,
to tens of seconds for large models, so it never holds up a worker: the booster serves while a
background thread has a child process compile, and the compiled function takes over once it has
passed its check. The machine code is kept on disk, keyed by the model's text, the lleaves and
llvmlite versions and the host CPU, so the next worker or restart loads it in milliseconds; it is
written to a temporary name and renamed, so a worker never reads another's half-written file.

Nothing is assumed: the compiled function is used only after it gave the booster's labels on a sample
matrix (the caller's: the fast path builds it from the training statistics the pipeline's fitted steps
hold), whether it was compiled now or read from disk; lleaves missing, a model it cannot compile, or one
label of difference keeps the booster, and the reason is logged. Predictions run on the calling thread:
a worker is one process per core, and lleaves' threads are a new pool per call.

LLVM compiles in a child process (``python -m streamml.models.compiled_trees``, at a lower priority than
serving), never on a thread of the worker: an interpreter that exits while a thread is inside LLVM can
crash (a worker stopped by SIGTERM during the compilation ended with SIGSEGV). A worker that exits kills
its compiler; the few milliseconds in which the worker itself loads the object file and checks it are
guarded, so exit waits for them instead.

lleaves 1.3 needs llvmlite < 0.45 (llvmlite 0.45 dropped the legacy pass manager it uses); the project
pins llvmlite accordingly.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from packaging.version import Version

log = logging.getLogger(__name__)

LLVMLITE_BREAKS = Version("0.45")
"""The first llvmlite lleaves 1.3 cannot compile with (it dropped the legacy pass manager lleaves uses)."""

Scores = Callable[[np.ndarray], np.ndarray]
"""A float64 matrix -> the booster's transformed scores (probabilities for a classifier)."""

COMPILER_NICENESS = 10
"""The compiler yields the core to the predictions being served meanwhile."""

EXIT_WAIT_S = 10.0
"""How long an exiting process waits for a load of compiled trees already under way (milliseconds)."""


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
    try:
        with _IN_PROCESS_LLVM:
            cached = cache_dir / f"{_cache_key(text)}.o" if cache_dir is not None else None
        with tempfile.TemporaryDirectory(prefix="streamml-trees-") as scratch:
            model_file = Path(scratch) / "model.txt"
            model_file.write_text(text)
            if cached is not None and cached.exists():
                object_file, source = cached, f"read from {cached}"
            else:
                object_file, source = Path(scratch) / "trees.o", "compiled"
                _compile_in_child(model_file, object_file, Path(scratch))
                if cached is not None:
                    _keep(object_file, cached)
            with _IN_PROCESS_LLVM:
                model = lleaves.Model(model_file=str(model_file))
                model.compile(cache=str(object_file))
    except _CompilerStopped:
        log.info("trees are not compiled: the process is exiting")
        return None
    except Exception as exc:  # any model lleaves does not support: the booster serves it
        reason = f"{type(exc).__name__}: {exc}"
        log.warning("trees are not compiled: lleaves could not compile the model (%s)", reason)
        return None
    seconds = time.perf_counter() - started

    def compiled(matrix: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(matrix, n_jobs=1))

    with _IN_PROCESS_LLVM:
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


class _CompilerStopped(Exception):
    """The child process was killed: this process is exiting."""


class _CompilerFailed(Exception):
    """The child process did not write the object file; its message is the child's last words."""


class _Compilers:
    """The compiler processes running for this process, killed when it exits; and the lock an exiting
    process takes (and keeps) so that no thread of it is inside LLVM while the interpreter finalizes."""

    def __init__(self) -> None:
        self.running: dict[subprocess.Popen[bytes], Path] = {}
        self.llvm = threading.Lock()
        self.guard = threading.Lock()
        self.stopped = False
        atexit.register(self.stop_all)

    def stop_all(self) -> None:
        with self.guard:
            self.stopped = True
            for child, scratch in list(self.running.items()):
                child.kill()
                child.wait()
                shutil.rmtree(scratch, ignore_errors=True)
            self.running.clear()
        # Kept: a background thread that reaches LLVM after this waits forever, harmlessly.
        self.llvm.acquire(timeout=EXIT_WAIT_S)


_COMPILERS = _Compilers()
_IN_PROCESS_LLVM = _COMPILERS.llvm


def _compile_in_child(model_file: Path, object_file: Path, scratch: Path) -> None:
    """``model_file``'s trees compiled to ``object_file`` by a child process (see the module's docstring)."""
    argv = [sys.executable, "-m", __name__, str(model_file), str(object_file)]
    with _COMPILERS.guard:
        if _COMPILERS.stopped:
            raise _CompilerStopped
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _COMPILERS.running[child] = scratch
    try:
        _, stderr = child.communicate()
    finally:
        with _COMPILERS.guard:
            _COMPILERS.running.pop(child, None)
    if child.returncode < 0:
        raise _CompilerStopped
    if child.returncode != 0 or not object_file.exists():
        words = stderr.decode(errors="replace").strip().splitlines()
        raise _CompilerFailed(words[-1] if words else f"the compiler exited with {child.returncode}")


def main(argv: Sequence[str] | None = None) -> None:
    """The compiler process: ``python -m streamml.models.compiled_trees MODEL_TXT OBJECT_FILE``."""
    model_file, object_file = argv if argv is not None else sys.argv[1:]
    os.nice(COMPILER_NICENESS)
    import lleaves

    lleaves.Model(model_file=model_file).compile(cache=object_file)


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


if __name__ == "__main__":
    main()
