"""The numpy fast path gives scikit-learn's labels exactly, and steps it does not know keep the pipeline.

All against the demo models in the session's real sqlite registry."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from streamml.models.fastpath import compile_pipeline
from streamml.models.inference import EstimatorModel, records_to_frame
from streamml.models.registry import ModelRegistry
from streamml.rows import Rows
from streamml.settings import DEFAULT_ROUTES, DEFAULT_TRUSTED_TYPES
from streamml.synthetic.producer import record_stream
from streamml.synthetic.profile import Profile
from tests.helpers import load_route

ROUTES = ["svm", "knn", "lightgbm"]


def generated(count: int) -> list[dict[str, Any]]:
    """Generated records as clients send them (absent features), plus hostile corners: NaN, an
    unknown category, a number far outside training, an empty record."""
    records = [r for r, _ in zip(record_stream(Profile.load(), seed=11), range(count), strict=False)]
    records[0] = {}
    records[1] = {"Gender": "Nonbinary", "Mental Fatigue Score": 1e6}
    records[2] = {"Sleep Hours": math.nan, "Company Type": math.nan}
    return records


@pytest.mark.parametrize("route", ROUTES)
async def test_fast_path_matches_scikit_learn_on_every_record_given_as_records_or_as_columns(
    shared_registry: ModelRegistry, route: str
) -> None:
    model = await load_route(shared_registry, route)
    assert isinstance(model, EstimatorModel)
    assert model.fast is not None, "the demo pipelines use only steps the fast path knows"
    records = generated(3000)
    expected = [str(x) for x in model.estimator.predict(records_to_frame(records, model.schema))]
    assert model.predict(records).values == expected
    assert model.predict(records[:1]).values == expected[:1]  # and one record at a time, the latency case
    as_columns = Rows(columns=Rows(records=records).columns)  # as a V2 request's tensors bring them
    assert model.predict(as_columns).values == expected
    # Records are read through an Arrow table of the signature's types; those with a value Arrow's
    # types refuse (NaN for a category) one by one. Both give the matrix scikit-learn's steps give.
    typed = Rows(records=records[3:])
    assert model.fast.predict(typed).tolist() == model.fast.predict(typed, arrow=False).tolist()
    assert model.predict(typed).values == expected[3:]


async def test_fast_path_can_be_turned_off(tracking_uri: str) -> None:
    registry = ModelRegistry(
        tracking_uri, DEFAULT_ROUTES, trusted_types=DEFAULT_TRUSTED_TYPES, fast_path=False
    )
    model = await load_route(registry, "lightgbm")
    assert isinstance(model, EstimatorModel)
    assert model.fast is None
    assert model.predict(generated(50)).values == [
        str(x) for x in model.estimator.predict(records_to_frame(generated(50), model.schema))
    ]


def _fitted(numeric_step: Any) -> Pipeline:
    frame = pd.DataFrame({"x": np.linspace(0, 10, 60), "c": pd.array(["a", "b", "c"] * 20, dtype=object)})
    labels = (frame["x"] > 5).map({True: "high", False: "low"})
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", numeric_step)])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    pipeline = Pipeline(
        [
            ("preprocess", ColumnTransformer([("n", numeric, ["x"]), ("c", categorical, ["c"])])),
            ("model", LogisticRegression()),
        ]
    )
    return pipeline.fit(frame, labels)


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": np.asarray([r.get("x", math.nan) for r in records], dtype=np.float64),
            "c": pd.array([r.get("c", math.nan) for r in records], dtype=object),
        }
    )


def test_a_pipeline_of_known_steps_compiles_and_matches() -> None:
    pipeline = _fitted(StandardScaler())
    fast = compile_pipeline(pipeline, _frame)
    assert fast is not None
    records: list[dict[str, Any]] = [{"x": 1.0, "c": "a"}, {"c": "zzz"}, {"x": 9.0}, {}]
    assert list(fast.predict(records)) == list(pipeline.predict(_frame(records)))


def test_an_unknown_step_keeps_the_scikit_learn_pipeline() -> None:
    assert compile_pipeline(_fitted(MinMaxScaler()), _frame) is None


def test_a_disagreement_on_the_probe_records_keeps_the_scikit_learn_pipeline() -> None:
    """The check at load is what makes the fast path safe: feed the real pipeline different inputs
    than the fast path sees and the two disagree, so the fast path is refused."""
    pipeline = _fitted(StandardScaler())

    def shifted(records: list[dict[str, Any]]) -> pd.DataFrame:
        frame = _frame(records)
        frame["x"] = 10.0 - frame["x"]
        return frame

    assert compile_pipeline(pipeline, shifted) is None


def test_serving_svc_and_knn_never_imports_lightgbm(tracking_uri: str) -> None:
    """Compiling the fast path for a pipeline that does not use LightGBM does not import it (a fresh
    interpreter, so nothing else in the test session has imported it first)."""
    script = (
        "import sys\n"
        "from streamml.models.registry import ModelRegistry\n"
        "from streamml.settings import DEFAULT_ROUTES, DEFAULT_TRUSTED_TYPES\n"
        f"registry = ModelRegistry({tracking_uri!r}, DEFAULT_ROUTES, trusted_types=DEFAULT_TRUSTED_TYPES)\n"
        "from tests.helpers import load_route\n"
        "import asyncio\n"
        "async def load():\n"
        "    return [await load_route(registry, route) for route in ('svm', 'knn')]\n"
        "models = asyncio.run(load())\n"
        "assert all(m.fast is not None for m in models)\n"
        "print('lightgbm' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
