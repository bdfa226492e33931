"""LightGBM's trees compiled at load: the same labels as the booster on every record, used only after
their check, and the booster kept (with the reason logged) where compiling is not possible or differs.

Against the demo LightGBM pipeline in the session's real sqlite registry, compiled by the real lleaves."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamml.models.compiled_trees import compile_booster
from streamml.models.fastpath import LightgbmLabels
from streamml.models.inference import EstimatorModel, records_to_frame
from streamml.models.registry import ModelRegistry
from streamml.settings import DEFAULT_ROUTES, DEFAULT_TRUSTED_TYPES, Settings
from tests.helpers import load_route
from tests.models.test_fastpath import generated


async def loaded(tracking_uri: str, *, compile_trees: bool, cache_dir: Path | None = None) -> EstimatorModel:
    """The demo LightGBM pipeline, once its trees have been compiled (or have failed to)."""
    registry = ModelRegistry(
        tracking_uri,
        DEFAULT_ROUTES,
        trusted_types=DEFAULT_TRUSTED_TYPES,
        compile_trees=compile_trees,
        cache_dir=cache_dir,
    )
    model = await load_route(registry, "lightgbm")
    assert isinstance(model, EstimatorModel)
    assert model.fast is not None
    model.fast.wait_for_trees(timeout_s=120)
    return model


async def test_compiled_trees_give_the_pipelines_labels_on_every_record(tracking_uri: str) -> None:
    model = await loaded(tracking_uri, compile_trees=True)
    assert model.fast is not None
    assert model.fast.trees_compiled
    records = generated(3000)
    expected = [str(x) for x in model.estimator.predict(records_to_frame(records, model.schema))]
    assert model.predict(records).values == expected
    assert model.predict(records[:1]).values == expected[:1]


async def test_compiled_trees_are_kept_on_disk_and_read_back_by_the_next_load(
    tracking_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="streamml.models.compiled_trees"):
        first = await loaded(tracking_uri, compile_trees=True, cache_dir=tmp_path)
        [kept] = (tmp_path / "compiled-trees").glob("*.o")
        second = await loaded(tracking_uri, compile_trees=True, cache_dir=tmp_path)
    assert first.fast is not None
    assert second.fast is not None
    assert second.fast.trees_compiled
    assert f"read from {kept}" in caplog.text
    records = generated(500)
    assert second.predict(records).values == first.predict(records).values
    assert [p.name for p in (tmp_path / "compiled-trees").iterdir()] == [kept.name]  # no temporary left


async def test_trees_stay_interpreted_unless_compiling_is_asked_for(tracking_uri: str) -> None:
    model = await loaded(tracking_uri, compile_trees=False)
    assert model.fast is not None
    assert not model.fast.trees_compiled


def test_workers_compile_trees_unless_the_setting_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().mlflow.compile_trees
    monkeypatch.setenv("STREAMML_MLFLOW_COMPILE_TREES", "false")
    assert not Settings().mlflow.compile_trees


class _ShiftedBooster:
    """The real booster, answering one class more on half the rows: lleaves compiles trees exactly, so a
    disagreement cannot be produced with a real model, and this stands in for one that would differ."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster

    def model_to_string(self) -> str:
        return str(self.booster.model_to_string())

    def num_trees(self) -> int:
        return int(self.booster.num_trees())

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        scores = np.asarray(self.booster.predict(matrix))
        shifted = np.roll(scores, 1, axis=1)
        return np.where((np.arange(len(scores)) % 2 == 0)[:, None], shifted, scores)


async def test_trees_whose_labels_differ_from_the_boosters_are_not_used(
    tracking_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = await loaded(tracking_uri, compile_trees=False)
    assert model.fast is not None
    classify = model.fast.classify
    assert isinstance(classify, LightgbmLabels)
    sample = model.fast.transform(generated(200))
    with caplog.at_level(logging.WARNING, logger="streamml.models.compiled_trees"):
        assert compile_booster(_ShiftedBooster(classify.booster), sample, classify.labels) is None
    assert "labels differ from the booster's on 100 of 200 sample rows" in caplog.text


async def test_without_lleaves_the_booster_serves_and_says_why(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An installation without lleaves cannot be made inside this environment: its import is hidden.
    monkeypatch.setitem(sys.modules, "lleaves", None)
    with caplog.at_level(logging.INFO, logger="streamml.models.compiled_trees"):
        model = await loaded(tracking_uri, compile_trees=True)
    assert model.fast is not None
    assert not model.fast.trees_compiled
    assert "lleaves is not installed" in caplog.text


EXITS_DURING_COMPILATION = """
import sys, time
from pathlib import Path
import numpy as np
import lightgbm
from streamml.models.compiled_trees import TreeCompilation

rng = np.random.default_rng(0)
matrix = rng.normal(size=(500, 8))
booster = lightgbm.train(
    {"objective": "binary", "verbose": -1}, lightgbm.Dataset(matrix, matrix[:, 0] > 0), num_boost_round=400
)
TreeCompilation(booster, matrix[:50], lambda scores: scores > 0.5, lambda compiled: None, Path(sys.argv[1]))
deadline = time.monotonic() + 30
tasks = Path("/proc/self/task")  # the compiler is a child of the compiling thread
while not (children := [c for t in tasks.iterdir() for c in (t / "children").read_text().split()]):
    assert time.monotonic() < deadline, "no compiler process started"
    time.sleep(0.01)
print(children[0], flush=True)
"""


def test_a_process_exiting_while_its_trees_compile_exits_cleanly_and_stops_its_compiler(
    tmp_path: Path,
) -> None:
    # The main thread returns while the compilation is under way, as a worker's does on SIGTERM.
    done = subprocess.run(
        [sys.executable, "-c", EXITS_DURING_COMPILATION, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    compiler = int(done.stdout.split()[0])
    assert not Path(f"/proc/{compiler}").exists()  # killed and reaped, not left compiling
