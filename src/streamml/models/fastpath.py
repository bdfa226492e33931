"""A numpy path through the common scikit-learn preprocessing, checked against scikit-learn at load.

A fitted ``Pipeline([ColumnTransformer, classifier])`` spends 7 ms or more per call on validation and
pandas plumbing whatever the batch size: for one record that is nearly all of the work, and for 4,096
records a sixth to a third (``python -m streamml.bench.profile_predict`` shows where the time goes).
The steps used by most tabular pipelines (and the demo models) are simple
arithmetic once fitted: fill missing values with the imputer's statistics, subtract the scaler's mean,
divide by its scale, one-hot encode against the encoder's categories. This module reads those fitted
parameters and applies them with numpy straight from the records, then calls the classifier on the
matrix (LightGBM through its booster, which skips the sklearn wrapper's checks).

Nothing is assumed: :func:`compile_pipeline` returns None for any step or option it does not know, and
a compiled path is used only after it has produced exactly scikit-learn's labels on probe records
built from the fitted parameters (known and unknown categories, missing values, extreme numbers), given
both as records and as columns (the matrix is built from whichever form a request came in).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamml.rows import Rows, RowsLike

if TYPE_CHECKING:
    import pyarrow as pa

    from streamml.models.compiled_trees import TreeCompilation

log = logging.getLogger(__name__)

PROBE_ROWS = 512


@dataclass(frozen=True)
class _Numeric:
    """Columns that are imputed, optionally standardised, and copied to the output as they are."""

    names: list[str]
    fill: np.ndarray | None
    mean: np.ndarray | None
    scale: np.ndarray | None

    @property
    def width(self) -> int:
        return len(self.names)

    @cached_property
    def _row(self) -> Callable[[dict[str, Any]], Any]:
        """A record's values of these columns, in order, as a tuple (a list for one column)."""
        if len(self.names) == 1:
            [name] = self.names
            return lambda record: [record[name]]
        return itemgetter(*self.names)

    def write(self, rows: Rows, out: np.ndarray, offset: int, table: pa.Table | None = None) -> None:
        block = out[:, offset : offset + len(self.names)]
        if table is not None:  # typed by Arrow already: a column is one copy (null -> NaN)
            for j, name in enumerate(self.names):
                block[:, j] = table.column(name).to_numpy(zero_copy_only=False)
        elif rows.holds_columns:  # one C call per column; None (absent) becomes NaN
            for j, name in enumerate(self.names):
                block[:, j] = np.asarray(rows.column(name), dtype=np.float64)
        else:
            records = rows.records
            try:  # complete records, the common case: one C call per record (half the time of the loop)
                block[:] = list(map(self._row, records))
            except KeyError:
                nan = math.nan
                for j, name in enumerate(self.names):
                    block[:, j] = [record.get(name, nan) for record in records]
        if self.fill is not None:
            missing = np.isnan(block)
            if missing.any():
                block[missing] = np.broadcast_to(self.fill, block.shape)[missing]
        if self.mean is not None:
            block -= self.mean
        if self.scale is not None:
            block /= self.scale


@dataclass(frozen=True)
class _OneHot:
    """Categorical columns: missing (NaN or absent) values filled, then one-hot; unknown -> zeros."""

    names: list[str]
    fill: list[Any] | None
    index: list[dict[Any, int]]
    offsets: list[int]
    width: int

    def write(self, rows: Rows, out: np.ndarray, offset: int, table: pa.Table | None = None) -> None:
        nan = math.nan
        for j, name in enumerate(self.names):
            lookup, base = self.index[j], offset + self.offsets[j]
            fill = self.fill[j] if self.fill is not None else nan
            if table is not None:
                values: Iterable[Any] = table.column(name).to_pylist()
            elif rows.holds_columns:
                values = rows.column(name)
            else:
                values = (record.get(name) for record in rows.records)
            for row, value in enumerate(values):
                if value is None or (isinstance(value, float) and value != value):  # what the imputer fills
                    value = fill
                position = lookup.get(value)
                if position is not None:
                    out[row, base + position] = 1.0


_Block = _Numeric | _OneHot


class FastPipeline:
    """Records -> feature matrix with numpy -> the pipeline's classifier. Same labels, less overhead."""

    def __init__(self, blocks: list[_Block], classify: Callable[[np.ndarray], np.ndarray]) -> None:
        self.blocks = blocks
        self.classify = classify
        self.width = sum(block.width for block in blocks)
        self.arrow_schema: pa.Schema | None = None
        """The model's signature as Arrow types: records are read through an Arrow table of it."""

    def transform(self, records: RowsLike, arrow: bool = True) -> np.ndarray:
        """The classifier's matrix, built from the columns when the records came as columns, else from
        the records through an Arrow table of the signature's types (converted in C++; the rows keep it,
        so the prediction log reads the same table), else (``arrow`` off, no signature, or a value
        Arrow refuses) from the records one by one."""
        rows = Rows.of(records)
        out = np.zeros((len(rows), self.width), dtype=np.float64)
        table = None
        if arrow and self.arrow_schema is not None and not rows.holds_columns:
            with contextlib.suppress(TypeError, ValueError, OverflowError, NotImplementedError):
                table = rows.arrow(self.arrow_schema)
        try:
            self._write(rows, out, table)
        except (KeyError, TypeError, ValueError):
            if table is None:
                raise
            out[:] = 0.0  # a column the table types otherwise than the blocks read: one by one instead
            self._write(rows, out, None)
        return out

    def _write(self, rows: Rows, out: np.ndarray, table: pa.Table | None) -> None:
        offset = 0
        for block in self.blocks:
            block.write(rows, out, offset, table)
            offset += block.width

    def predict(self, records: RowsLike, arrow: bool = True) -> np.ndarray:
        return self.classify(self.transform(records, arrow))

    @property
    def trees_compiled(self) -> bool:
        """Whether its classifier runs as compiled trees (now: they may still be compiling)."""
        return isinstance(self.classify, LightgbmLabels) and self.classify.compiled

    @property
    def compiling_trees(self) -> bool:
        """Whether its trees were handed to a compilation (which may have finished, or failed)."""
        return isinstance(self.classify, LightgbmLabels) and self.classify.compilation is not None

    def wait_for_trees(self, timeout_s: float | None = None) -> None:
        """Until a compilation of its trees has finished or failed (benchmarks and tests measure the
        compiled model; a worker serves with the booster meanwhile)."""
        if isinstance(self.classify, LightgbmLabels) and self.classify.compilation is not None:
            self.classify.compilation.wait(timeout_s)


def compile_pipeline(
    estimator: Any,
    frame_of: Callable[[list[dict[str, Any]]], Any],
    *,
    arrow_schema: pa.Schema | None = None,
    compile_trees: bool = False,
    trees_cache: Path | None = None,
) -> FastPipeline | None:
    """A checked numpy path for ``estimator``, or None (with the reason logged at debug level) when it
    has a step this module does not know or does not reproduce scikit-learn's labels exactly.
    ``frame_of`` builds the frame the scikit-learn pipeline is normally called with; ``arrow_schema``
    (the signature's types) is what records are read through. With
    ``compile_trees``, a LightGBM classifier's trees are compiled in the background (kept in
    ``trees_cache``) and used once they give the booster's labels on the probe records (built from the
    fitted steps' statistics of the training data)."""
    try:
        fast = _compile(estimator)
    except _Unsupported as exc:
        log.debug("no fast path for %s: %s", type(estimator).__name__, exc)
        return None
    fast.arrow_schema = arrow_schema
    probes = _probe_records(fast)
    as_columns = Rows(columns=Rows(records=probes).columns)  # the same records, as a V2 request brings them
    try:
        expected = np.asarray(estimator.predict(frame_of(probes)))
        # Every way a matrix is built: records through Arrow, records one by one, columns.
        agrees = all(
            np.array_equal(expected, labels)
            for labels in (
                fast.predict(Rows(records=probes)),
                fast.predict(probes, arrow=False),
                fast.predict(as_columns),
            )
        )
    except Exception as exc:  # a probe the real pipeline rejects: stay on the real pipeline
        log.debug("no fast path: probe failed: %s", exc)
        return None
    if not agrees:
        log.warning("fast path disagrees with scikit-learn on probe records; using the pipeline as it is")
        return None
    if compile_trees and isinstance(fast.classify, LightgbmLabels):
        # After the check above: the compiled trees are held to the booster it has just vouched for.
        fast.classify.compile(fast.transform(probes), trees_cache)
    return fast


class _Unsupported(Exception):
    pass


def _compile(estimator: Any) -> FastPipeline:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if not isinstance(estimator, Pipeline) or len(estimator.steps) != 2:
        raise _Unsupported("not a two-step Pipeline (preprocessing, classifier)")
    preprocess, model = estimator.steps[0][1], estimator.steps[1][1]
    if not isinstance(preprocess, ColumnTransformer):
        raise _Unsupported("first step is not a ColumnTransformer")
    if getattr(preprocess, "sparse_output_", True):
        raise _Unsupported("sparse ColumnTransformer output")
    blocks: list[_Block] = []
    for name, transformer, columns in preprocess.transformers_:
        if transformer == "drop" or (name == "remainder" and not len(columns)):
            continue
        if not all(isinstance(c, str) for c in columns):
            raise _Unsupported(f"transformer {name!r} selects columns by position")
        blocks.append(_block(list(columns), transformer))
    return FastPipeline(blocks, _classifier(model))


def _block(columns: list[str], transformer: Any) -> _Block:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    steps = [s for _, s in transformer.steps] if isinstance(transformer, Pipeline) else [transformer]
    fill: Any = None
    if steps and isinstance(steps[0], SimpleImputer):
        imputer = steps.pop(0)
        missing = imputer.missing_values
        if imputer.add_indicator or not (isinstance(missing, float) and math.isnan(missing)):
            raise _Unsupported("imputer with an indicator or a missing value other than NaN")
        fill = list(imputer.statistics_)
    if len(steps) == 1 and isinstance(steps[0], OneHotEncoder):
        encoder = steps[0]
        if encoder.drop_idx_ is not None or getattr(encoder, "_infrequent_enabled", False):
            raise _Unsupported("one-hot encoder with drop or infrequent categories")
        if encoder.handle_unknown != "ignore":
            raise _Unsupported("one-hot encoder that raises on unknown categories")
        index = [{value: i for i, value in enumerate(cats)} for cats in encoder.categories_]
        offsets = list(np.cumsum([0] + [len(c) for c in encoder.categories_[:-1]]))
        width = sum(len(c) for c in encoder.categories_)
        return _OneHot(columns, fill, index, [int(o) for o in offsets], width)
    mean = scale = None
    if len(steps) == 1 and isinstance(steps[0], StandardScaler):
        scaler = steps.pop(0)
        mean = scaler.mean_ if scaler.with_mean else None
        scale = scaler.scale_ if scaler.with_std else None
    if steps and not (len(steps) == 1 and steps[0] == "passthrough"):
        raise _Unsupported(f"step {type(steps[0]).__name__}")
    fill_array = np.asarray(fill, dtype=np.float64) if fill is not None else None
    return _Numeric(columns, fill_array, mean, scale)


def _classifier(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    classes = getattr(model, "classes_", None)
    if classes is None:
        raise _Unsupported(f"{type(model).__name__} is not a fitted classifier")
    # lightgbm is imported only for a model that comes from it: an SVC or k-NN pipeline never pays
    # for (or needs) the import.
    if type(model).__module__.startswith("lightgbm.") and _is_lgbm_classifier(model):
        threads: dict[str, Any] = {}
        if isinstance(model.n_jobs, int) and model.n_jobs > 0:
            threads["num_threads"] = model.n_jobs
        return LightgbmLabels(model.booster_, np.asarray(classes), threads)
    return model.predict  # type: ignore[no-any-return]


class LightgbmLabels:
    """A LightGBM classifier's labels through its booster (skipping the scikit-learn wrapper's checks),
    or through its trees compiled (:mod:`streamml.models.compiled_trees`) once :meth:`compile` found,
    in the background, that they give the same labels."""

    def __init__(self, booster: Any, classes: np.ndarray, threads: dict[str, Any]) -> None:
        self.booster = booster
        self.classes = classes
        self.scores: Callable[[np.ndarray], np.ndarray] = lambda matrix: booster.predict(matrix, **threads)
        self.compiled = False
        self.compilation: TreeCompilation | None = None

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        return self.labels(np.asarray(self.scores(matrix)))

    def labels(self, scores: np.ndarray) -> np.ndarray:
        if scores.ndim == 1:  # binary: probability of classes_[1]
            return np.asarray(self.classes[(scores > 0.5).astype(int)])
        return np.asarray(self.classes[np.argmax(scores, axis=1)])

    def compile(self, sample: np.ndarray, cache_dir: Path | None = None) -> None:
        """Start compiling the trees; the booster answers until they have passed their check."""
        from streamml.models.compiled_trees import TreeCompilation

        self.compilation = TreeCompilation(self.booster, sample, self.labels, self._use, cache_dir)

    def _use(self, compiled: Callable[[np.ndarray], np.ndarray]) -> None:
        # One attribute assignment: a predict running on another thread uses one function or the other.
        self.scores, self.compiled = compiled, True


def _is_lgbm_classifier(model: Any) -> bool:
    from lightgbm import LGBMClassifier

    return isinstance(model, LGBMClassifier)


def _probe_records(fast: FastPipeline) -> list[dict[str, Any]]:
    """Records that exercise every branch: known and unknown categories, missing values (absent and
    NaN), values around and far from each column's centre."""
    rng = np.random.default_rng(0)
    records: list[dict[str, Any]] = [{} for _ in range(PROBE_ROWS)]
    for block in fast.blocks:
        if isinstance(block, _Numeric):
            for j, name in enumerate(block.names):
                centre = float(block.mean[j]) if block.mean is not None else 0.0
                spread = float(block.scale[j]) if block.scale is not None else 1.0
                values = centre + spread * rng.normal(0, 2, PROBE_ROWS)
                for row, record in enumerate(records):
                    kind = row % 10
                    if kind == 0:
                        continue  # absent
                    record[name] = math.nan if kind == 1 else float(values[row])
        else:
            for j, name in enumerate(block.names):
                known = list(block.index[j])
                for row, record in enumerate(records):
                    kind = (row + j) % 7
                    if kind == 0:
                        continue
                    record[name] = "unseen-category" if kind == 1 else known[int(rng.integers(len(known)))]
    return records
